"""Network interfaces: each instance in a subnet has exactly one, its primary, and nothing else does.

The interface is not stored: its id follows from the instance's (`network.interface_id`) and
its addresses, groups and MAC are the instance's, so it exists exactly while the instance shows
it in DescribeInstances (not terminated, on a subnet). DescribeNetworkInterfaces selects over
the caller's instances with the filters Terraform and Ansible send (`group-id` before deleting a
security group, `attachment.instance-id` to find an instance's interface).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from ..store.records import Address, Instance
from .addresses import Addresses, public_dns
from .compute import private_dns
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .ids import well_formed
from .network import Networks, interface_id
from .query import Query
from .security_groups import SecurityGroups

ENI_PREFIX = "eni"


def instance_of(eni_id: str) -> str:
    """The instance whose primary interface `eni_id` is (the inverse of `interface_id`)."""
    return "i-" + eni_id.removeprefix(ENI_PREFIX + "-")


def attachment_id(instance_id: str) -> str:
    return "eni-attach-" + instance_id.removeprefix("i-")


class NetworkInterfaces:
    def __init__(self, instances_of: Callable[[str], Mapping[str, Instance]], region: str, network: Networks,
                 addresses: Addresses, groups: SecurityGroups) -> None:
        self.region = region
        self.network = network
        self.addresses = addresses
        self.groups = groups
        self._instances_of = instances_of   # an account's instances by id (Compute's index, terminated too)
        self.filters = self._filter_set()

    def has_interface(self, i: Instance) -> bool:
        return i.state != "terminated" and self.network.of(i) is not None

    def _filter_set(self) -> FilterSet:
        def eip(get: Callable[[Address], str | None]) -> Callable[[Instance], str | None]:
            def read(i: Instance) -> str | None:
                a = self.addresses.of_instance(i.id)
                return get(a) if a is not None else None
            return read

        def subnet(i: Instance) -> str | None:
            s = self.network.of(i)
            return s.id if s is not None else None

        def zone(i: Instance) -> str | None:
            s = self.network.of(i)
            return s.zone if s is not None else i.zone

        public_ip = eip(lambda a: a.public_ip)
        fields: dict[str, Callable[[Instance], object]] = {
            "network-interface-id": lambda i: interface_id(i.id),
            "attachment.instance-id": lambda i: i.id,
            "attachment.instance-owner-id": lambda i: i.owner,
            "attachment.attachment-id": lambda i: attachment_id(i.id),
            "attachment.device-index": lambda i: 0,
            "attachment.status": lambda i: "attached",
            "attachment.delete-on-termination": lambda i: True,
            "attachment.network-card-index": lambda i: 0,
            "group-id": lambda i: i.group_ids,
            "group-name": lambda i: [n for _, n in self.groups.groups_of(i)],
            "subnet-id": subnet,
            "vpc-id": lambda i: self.network.vpc_id,
            "availability-zone": zone,
            "private-ip-address": lambda i: i.private_ip,
            "addresses.private-ip-address": lambda i: i.private_ip,
            "addresses.primary": lambda i: True,
            "private-dns-name": lambda i: private_dns(i, self.region) if i.private_ip else None,
            "mac-address": lambda i: i.mac,
            "owner-id": lambda i: i.owner,
            "status": lambda i: "in-use",
            "interface-type": lambda i: "interface",
            "source-dest-check": lambda i: True,
            "requester-managed": lambda i: False,
            "description": lambda i: "",
            "association.public-ip": public_ip,
            "addresses.association.public-ip": public_ip,
            "association.ip-owner-id": eip(lambda a: a.owner),
            "addresses.association.owner-id": eip(lambda a: a.owner),
            "association.allocation-id": eip(lambda a: a.allocation_id),
            "association.association-id": eip(lambda a: a.association_id),
            "association.public-dns-name": eip(lambda a: public_dns(a.public_ip, self.region)),
            "requester-id": lambda i: None,                 # no service makes interfaces here
            "ipv6-addresses.ipv6-address": lambda i: None,  # nor IPv6 addresses
        }
        return FilterSet(fields, tags_of=lambda i: {})   # interfaces carry no tags of their own

    def describe(self, caller: Caller, query: Query) -> tuple[list[Instance], str | None]:
        """The instances whose primary interfaces the query selects, one page, by interface id."""
        bad = [e for e in query.ids if not well_formed(e, ENI_PREFIX)]
        if bad:
            raise CloudError("InvalidNetworkInterfaceID.Malformed", f"Invalid id: \"{bad[0]}\" (expecting \"eni-...\")")
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "network-interfaces", not_with_ids="The parameter NetworkInterfaceIds "
                          "cannot be used with the parameter MaxResults")
        mine = self._instances_of(caller.account)
        if query.ids:
            rows = [mine.get(instance_of(e)) for e in query.ids]
            missing = [e for e, i in zip(query.ids, rows) if i is None or not self.has_interface(i)]
            if missing:
                raise CloudError.not_found("InvalidNetworkInterfaceID.NotFound",
                                           f"The networkInterface ID '{missing[0]}' does not exist")
            pool = {interface_id(i.id): i for i in rows if i is not None}
        else:
            pool = {interface_id(i.id): i for i in mine.values() if self.has_interface(i)}
        caller.check_dry_run()
        if match:
            pool = {k: i for k, i in pool.items() if match(i)}
        keys, token = page.of(sorted(pool))
        return [pool[k] for k in keys], token
