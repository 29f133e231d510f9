"""DescribeAddressesAttribute: the reverse DNS (PTR) name of the caller's Elastic IPs.

No DNS server answers for this cloud's addresses (`addresses.public_dns` is a name in EC2's shape
only), so no address has a PTR record: each is listed with its ids and nothing else, as EC2
lists an address whose PTR record was never set.
"""
from __future__ import annotations

from ..store.records import Address
from .addresses import Addresses
from .context import Caller
from .errors import CloudError
from .ids import well_formed
from .query import Query

ATTRIBUTES = ("domain-name",)


def describe(addresses: Addresses, caller: Caller, attribute: str | None, query: Query
             ) -> tuple[list[Address], str | None]:
    """The caller's addresses `query.ids` (allocation ids) names, or all of them, one page. The
    attribute is optional in EC2's model: without it, the only one there is."""
    if attribute is not None and attribute not in ATTRIBUTES:
        raise CloudError("InvalidParameterValue",
                         f"Value ({attribute}) for parameter attribute is invalid. Expected: 'domain-name'.")
    bad = [a for a in query.ids if not well_formed(a, "eipalloc")]
    if bad:
        raise CloudError("InvalidAllocationID.Malformed", f"Invalid id: \"{bad[0]}\" (expecting \"eipalloc-...\")")
    page = query.page(1, 1000, "address-attributes")
    mine = {a.allocation_id: a for a in addresses.owned_by(caller.account)}
    missing = [a for a in query.ids if a not in mine]
    if missing:
        raise CloudError.not_found("InvalidAllocationID.NotFound",
                                   f"The allocation ID '{missing[0]}' does not exist")
    caller.check_dry_run()
    pool = {a: mine[a] for a in query.ids} if query.ids else mine
    keys, token = page.of(sorted(pool))
    return [pool[k] for k in keys], token
