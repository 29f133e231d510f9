"""AutoScaling's vocabulary in the core: its error codes, processes, policies, and the seams to
the services it uses but does not own (launch templates, load balancers).

AutoScaling answers every refusal with a handful of codes (`ValidationError` for nearly all of
them); the helpers here make those `CloudError`s so the rest of the package reads like the API
it implements."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ...slim import dataclass
from ..errors import CloudError, ErrorKind
from ..launch import LaunchSpec
from ..pagination import decode_token, paginate, query_fingerprint

GROUP_TAG = "aws:autoscaling:groupName"

PROCESSES = ("Launch", "Terminate", "AddToLoadBalancer", "AlarmNotification", "AZRebalance", "HealthCheck",
             "InstanceRefresh", "ReplaceUnhealthy", "ScheduledActions")
TERMINATION_POLICIES = ("OldestInstance", "OldestLaunchConfiguration", "NewestInstance",
                        "ClosestToNextInstanceHour", "Default", "OldestLaunchTemplate", "AllocationStrategy")
ADJUSTMENT_TYPES = ("ChangeInCapacity", "ExactCapacity", "PercentChangeInCapacity")
HEALTH_CHECK_TYPES = ("EC2", "ELB")
NAME_MAX = 255


def validation(message: str) -> CloudError:
    return CloudError("ValidationError", message)


def already_exists(message: str) -> CloudError:
    return CloudError("AlreadyExists", message, ErrorKind.CONFLICT)


def in_use(message: str) -> CloudError:
    return CloudError("ResourceInUse", message, ErrorKind.CONFLICT)


def activity_in_progress(message: str) -> CloudError:
    return CloudError("ScalingActivityInProgress", message, ErrorKind.WRONG_STATE)


def limit_exceeded(message: str) -> CloudError:
    return CloudError("LimitExceeded", message, ErrorKind.LIMIT)


def check_name(what: str, name: str) -> str:
    """AutoScaling's names: 1-255 characters, no control characters (and, as AWS, no ':' which
    would make a name look like an ARN)."""
    if not 1 <= len(name) <= NAME_MAX or not name.isprintable():
        raise validation(f"1 validation error detected: Value '{name[:64]}' at '{what}' failed to satisfy "
                         f"constraint: Member must have length between 1 and {NAME_MAX} and be printable")
    if ":" in name:
        raise validation(f"{what} must not contain ':' (got '{name[:64]}')")
    return name


def key(owner: str, *names: str) -> str:
    """A row key unique per account: AutoScaling names are the account's own."""
    return "/".join((owner, *names))


def arn(region: str, owner: str, kind: str, ident: str, name: str) -> str:
    """AWS's ARN shapes: autoScalingGroup:<uuid>:autoScalingGroupName/<name>, and alike."""
    return f"arn:aws:autoscaling:{region}:{owner}:{kind}:{ident}:{name}"


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A launch template named by a group: by id or by name, and a version (None: $Default)."""
    template_id: str | None
    name: str | None
    version: str | None


class TemplateSource(Protocol):
    """What the launch-template service offers AutoScaling (cloud.launch_templates)."""

    def launch_spec(self, account: str, template_id: str | None, name: str | None,
                    version: str | None) -> LaunchSpec: ...


class BalancerMembership(Protocol):
    """What the classic load-balancer service offers AutoScaling (cloud.elb)."""

    def exists(self, account: str, name: str) -> bool: ...

    async def register(self, account: str, name: str, instance_ids: Sequence[str]) -> None: ...

    async def deregister(self, account: str, name: str, instance_ids: Sequence[str]) -> None: ...

    def health(self, account: str, name: str) -> Mapping[str, str]: ...


def page(keys_sorted: list[str], max_records: int | None, token: str | None, kind: str,
         default: int = 50, most: int = 100, *selection: object) -> tuple[list[str], str | None]:
    """One page of a Describe (MaxRecords 1..`most`, `default` when absent), the NextToken bound
    to the selection so a token from another request is refused (InvalidNextToken)."""
    if max_records is not None and not 1 <= max_records <= most:
        raise validation(f"MaxRecords must be between 1 and {most} (got {max_records})")
    fp = query_fingerprint(kind, *selection)
    try:
        after = decode_token(token, fp) if token else None
    except CloudError:
        raise CloudError("InvalidNextToken", "The NextToken value is invalid.") from None
    return paginate(keys_sorted, after, max_records or default, fp)
