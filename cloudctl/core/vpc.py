"""What the default VPC has, and what it has not: its attributes, its one route table, no internet
gateway and no DHCP options set.

Clients read these before they manage anything (Terraform's `aws_vpc` data source, Ansible's
`ec2_vpc_net_info`), and what they read must be true of this cloud: the subnets route only among
themselves (the VPC's local route); public addresses are Elastic IPs NAT'd by the hosts, not an
internet gateway; each subnet's DNS servers come from its network's config, not from a DHCP
options set (so DescribeVpcs says "default", EC2's word for none). Nothing here is stored: every
id is derived from the region, like the VPC's own.
"""
from __future__ import annotations

from ..slim import dataclass
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .network import Networks
from .pagination import page_size
from .query import Query

OWNER_ID = "000000000000"   # the VPC and what it has belong to the cloud, not to a user
ATTRIBUTES = ("enableDnsSupport", "enableDnsHostnames", "enableNetworkAddressUsageMetrics")


@dataclass(frozen=True, slots=True)
class Route:
    destination: str
    gateway_id: str          # "local": within the VPC
    origin: str = "CreateRouteTable"
    state: str = "active"


@dataclass(frozen=True, slots=True)
class RouteTable:
    id: str
    vpc_id: str
    main_association_id: str
    routes: tuple[Route, ...]


class DefaultVpc:
    def __init__(self, network: Networks) -> None:
        self.network = network
        vpc = network.vpc_id
        suffix = vpc.removeprefix("vpc-")   # already a stable hash of the region
        self.route_table = RouteTable(
            id="rtb-" + suffix, vpc_id=vpc, main_association_id="rtbassoc-" + suffix,
            routes=(Route(str(network.vpc_cidr), "local"),))
        rt = self.route_table
        self.route_filters = FilterSet({
            "route-table-id": lambda t: t.id, "vpc-id": lambda t: t.vpc_id,
            "association.main": lambda t: True,
            "association.route-table-association-id": lambda t: t.main_association_id,
            "association.route-table-id": lambda t: t.id,
            "association.subnet-id": lambda t: None,          # subnets use the main table implicitly
            "association.association-state": lambda t: "associated",
            "route.destination-cidr-block": lambda t: [r.destination for r in rt.routes],
            "route.gateway-id": lambda t: [r.gateway_id for r in rt.routes],
            "route.origin": lambda t: [r.origin for r in rt.routes],
            "route.state": lambda t: [r.state for r in rt.routes],
            "owner-id": lambda t: OWNER_ID,
        }, tags_of=lambda t: {})
        # Nothing to match, but a misspelt filter is still an error rather than an empty answer.
        self.gateway_filters = FilterSet({n: lambda g: None for n in (
            "attachment.state", "attachment.vpc-id", "internet-gateway-id", "owner-id")}, tags_of=lambda g: {})
        self.dhcp_filters = FilterSet({n: lambda d: None for n in (
            "dhcp-options-id", "key", "value", "owner-id")}, tags_of=lambda d: {})

    def _vpc(self, vpc_id: str) -> None:
        if vpc_id != self.network.vpc_id:
            raise CloudError.not_found("InvalidVpcID.NotFound", f"The vpc ID '{vpc_id}' does not exist")

    def attribute(self, caller: Caller, vpc_id: str, name: str) -> bool:
        """DNS resolution: on where every subnet's network names DNS servers. DNS host names: off,
        as no DNS server answers for the names instances are given. Usage metrics: not kept."""
        self._vpc(vpc_id)
        if name not in ATTRIBUTES:
            raise CloudError("InvalidParameterValue",
                             f"Value ({name}) for parameter attribute is invalid. Unknown attribute.")
        caller.check_dry_run()
        if name == "enableDnsSupport":
            subnets = self.network.subnets.values()
            return bool(subnets) and all(s.dns for s in subnets)
        return False

    def route_tables(self, caller: Caller, query: Query) -> list[RouteTable]:
        rt = self.route_table
        for rid in query.ids:
            if rid != rt.id:
                raise CloudError.not_found("InvalidRouteTableID.NotFound",
                                           f"The routeTable ID '{rid}' does not exist")
        match = self.route_filters.compile(query.filters)
        _no_pages(query, 100)
        caller.check_dry_run()
        return [rt] if match(rt) else []

    def internet_gateways(self, caller: Caller, query: Query) -> list[object]:
        """None: the VPC reaches outside only through the hosts' NAT of Elastic IPs."""
        return _none_exist(caller, query, self.gateway_filters, "InvalidInternetGatewayID.NotFound", "internetGateway")

    def dhcp_options(self, caller: Caller, query: Query) -> list[object]:
        """None: the VPC has no DHCP options set ("default"); DNS servers are per network."""
        return _none_exist(caller, query, self.dhcp_filters, "InvalidDhcpOptionID.NotFound", "dhcpOption")


def _none_exist(caller: Caller, query: Query, filters: FilterSet, code: str, kind: str) -> list[object]:
    """A Describe of a resource kind the VPC has none of: ids are not found, filters still checked."""
    if query.ids:
        raise CloudError.not_found(code, f"The {kind} ID '{query.ids[0]}' does not exist")
    filters.compile(query.filters)
    _no_pages(query, 1000)
    caller.check_dry_run()
    return []


def _no_pages(query: Query, most: int) -> None:
    """One table or none fits on any page; MaxResults is still checked as EC2 checks it (5 up to
    `most`), and no page token can be one this made."""
    page_size(query.max_results, 5, most)
    if query.next_token is not None:
        raise CloudError("InvalidPaginationToken",
                         f"The pagination token '{query.next_token[:64]}' is invalid for this request")
