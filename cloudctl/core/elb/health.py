"""What ELB says of a registered instance, from what the proxy says of its backend.

ELB's states are InService and OutOfService, with a reason code (`ELB`: the load balancer's own
doing; `Instance`: the instance's) and a sentence. A proxy reading older than three health-check
rounds of the unhealthy threshold (3 x interval x threshold) is not trusted: the instance is then
OutOfService, as Eucalyptus reported it, whatever the last reading said.
"""
from __future__ import annotations

from ...drivers.loadbalancer.base import BalancerStats
from ...slim import dataclass
from ...store.records import Instance

IN_PROGRESS = "Instance registration is still in progress."
FAILED = "Instance has failed at least the UnhealthyThreshold number of health checks consecutively."
STALE = "The load balancer has not refreshed this instance's health recently."


@dataclass(frozen=True, slots=True)
class InstanceHealth:
    instance_id: str
    state: str          # InService | OutOfService
    reason: str         # N/A | ELB | Instance
    description: str

    @property
    def simple(self) -> str:
        """For AutoScaling's ELB health checks: Unknown while the proxy has not judged yet."""
        if self.state == "OutOfService" and self.reason == "ELB" and self.description == IN_PROGRESS:
            return "Unknown"
        return self.state


def health_of(instance_id: str, inst: Instance | None, stats: BalancerStats | None, now: float,
              interval: int, unhealthy: int) -> InstanceHealth:
    if inst is None or inst.state in ("terminated", "shutting-down"):
        return InstanceHealth(instance_id, "OutOfService", "Instance", "Instance is in terminated state.")
    if inst.state != "running":
        return InstanceHealth(instance_id, "OutOfService", "Instance", f"Instance is in {inst.state} state.")
    if stats is None:
        return InstanceHealth(instance_id, "OutOfService", "ELB", IN_PROGRESS)
    if now - stats.seen_at > 3 * interval * unhealthy:
        return InstanceHealth(instance_id, "OutOfService", "ELB", STALE)
    b = stats.backends.get(instance_id)
    if b is None or not b.checked:
        return InstanceHealth(instance_id, "OutOfService", "ELB", IN_PROGRESS)
    if b.up:
        return InstanceHealth(instance_id, "InService", "N/A", "N/A")
    return InstanceHealth(instance_id, "OutOfService", "Instance", FAILED)
