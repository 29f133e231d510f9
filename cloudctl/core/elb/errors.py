"""ELB's refusals, with its codes (botocore's `elb` model names them) and messages as AWS words them."""
from __future__ import annotations

from ..errors import CloudError


def invalid(message: str) -> CloudError:
    return CloudError("ValidationError", message)


def invalid_config(message: str) -> CloudError:
    return CloudError.conflict("InvalidConfigurationRequest", message)


def lb_not_found(name: str) -> CloudError:
    return CloudError.not_found("LoadBalancerNotFound", f"There is no ACTIVE Load Balancer named '{name}'")


def duplicate_name(name: str) -> CloudError:
    return CloudError.conflict("DuplicateLoadBalancerName", f"Load Balancer named '{name}' already exists and it "
                               "is configured with different parameters.")


def too_many(limit: int) -> CloudError:
    return CloudError.limit("TooManyLoadBalancers", f"Exceeded quota of account: {limit} load balancers.")


def duplicate_listener(port: int) -> CloudError:
    return CloudError.conflict("DuplicateListener", f"A listener already exists for LoadBalancerPort {port} "
                               "with different settings.")


def listener_not_found(port: int, name: str) -> CloudError:
    return CloudError.not_found("ListenerNotFound", f"There is no listener on port {port} of load balancer '{name}'.")


def invalid_instance(ids: list[str]) -> CloudError:
    return CloudError("InvalidInstance", f"The requested instance(s) {', '.join(ids)} are not valid for this load "
                      "balancer: not instances of this account, or terminated.")


def not_registered(ids: list[str], name: str) -> CloudError:
    return CloudError("InvalidInstance", f"Instance(s) {', '.join(ids)} are not registered with load balancer "
                      f"'{name}'.")


def policy_not_found(names: list[str]) -> CloudError:
    return CloudError.not_found("PolicyNotFound", f"There is no policy named {', '.join(names)}.")


def policy_type_not_found(names: list[str]) -> CloudError:
    return CloudError.not_found("PolicyTypeNotFound", f"There is no policy type named {', '.join(names)}.")


def duplicate_policy(name: str) -> CloudError:
    return CloudError.conflict("DuplicatePolicyName", f"Policy '{name}' already exists.")


def too_many_policies(limit: int) -> CloudError:
    return CloudError.limit("TooManyPolicies", f"A load balancer holds at most {limit} policies.")


def subnet_not_found(ids: list[str]) -> CloudError:
    return CloudError.not_found("SubnetNotFound", f"The subnet(s) {', '.join(ids)} do not exist.")


def invalid_security_group(ids: list[str]) -> CloudError:
    return CloudError("InvalidSecurityGroup", f"Security group(s) {', '.join(ids)} are not valid: not groups of "
                      "this account in the load balancer's VPC.")


def too_many_tags(limit: int, name: str) -> CloudError:
    return CloudError.limit("TooManyTags", f"Load balancer '{name}' would have more than {limit} tags.")


def duplicate_tag_keys(key: str) -> CloudError:
    return CloudError("DuplicateTagKeys", f"Tag key '{key}' is given more than once.")


def attribute_not_found(key: str) -> CloudError:
    return CloudError.not_found("LoadBalancerAttributeNotFound", f"There is no load balancer attribute named "
                                f"'{key}'.")


def no_address(where: str) -> CloudError:
    return CloudError.capacity("InvalidSubnet", f"There is no free address for the load balancer in {where}.")
