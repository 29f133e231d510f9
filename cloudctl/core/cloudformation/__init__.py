"""CloudFormation: the template language (`template`, `intrinsics`) — pure and synchronous — under the
stack engine (`engine`, `stacks`, `resources/`) that creates resources through cloudctl's own services."""
