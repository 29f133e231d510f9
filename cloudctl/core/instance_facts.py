"""What one instance's description shows, read from the state at one moment.

A Describe answer over many instances is written in slices, and the event loop runs other
requests between them. If the answer read tags, addresses or volumes while it was being written,
a change made in between (one CreateTags over two instances) could show up for some instances
and not for others. So the page is read first into these records; only then is it written.
Rows are immutable (a change replaces the row), so holding them is a snapshot. A large page is
read in chunks too (thousands of instances take ~10-20 ms), each in the caller's turn: if any
table the records come from changed in between, the page is read again.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, NamedTuple

from ..store.records import Address, Image, Instance, Reservation, SecurityGroup, Tag, Volume
from .context import Caller
from .network import Subnet
from .query import Query

if TYPE_CHECKING:
    from .cloud import Cloud


class InstanceFacts(NamedTuple):   # a tuple: made ~2x faster than a frozen dataclass
    inst: Instance
    tags: tuple[tuple[str, str], ...]      # (key, value), in the tag store's order
    address: Address | None                # its Elastic IP, if one is associated
    volumes: tuple[Volume, ...]            # attached, the root first, then by device
    groups: tuple[tuple[str, str], ...]    # (id, name) of its security groups that still exist
    kernel_id: str | None                  # its own, else its image's
    subnet: Subnet | None
    tags_version: object                   # Tags.version_of, read with `tags` (a cache's key for them)


def facts_of(cloud: Cloud, insts: Iterable[Instance]) -> list[InstanceFacts]:
    """The facts of each instance, all read now (call without awaiting in between)."""
    tags_of = cloud.tags.pairs_of
    tags_version = cloud.tags.version_of
    address_of = cloud.addresses.of_instance
    volumes_of = cloud.volumes.attached_to
    groups_of = cloud.security_groups.groups_of
    images = cloud.images.table
    subnet_of = cloud.network.of
    out = []
    for i in insts:
        kernel = i.kernel_id
        if not kernel:
            image = images.get(i.image_id)
            kernel = image.kernel_id if image is not None else None
        out.append(InstanceFacts(i, tags_of(i.id), address_of(i.id), tuple(volumes_of(i.id)),
                                 tuple(groups_of(i)), kernel, subnet_of(i), tags_version(i.id)))
    return out


def page_facts(cloud: Cloud, groups: list[tuple[Reservation, list[Instance]]]
               ) -> list[tuple[Reservation, list[InstanceFacts]]]:
    """A Describe page (reservations with their instances) with every instance's facts."""
    return [(res, facts_of(cloud, insts)) for res, insts in groups]


CHUNK = 256          # instances read per turn (~1 ms)
_SOURCES = (Instance, Reservation, Tag, Address, Volume, SecurityGroup, Image)   # what facts_of reads
Page = list[tuple[Reservation, list[InstanceFacts]]]


def _stamp(cloud: Cloud) -> tuple[int, ...]:
    return tuple(cloud.store.table(t).changes for t in _SOURCES)


async def describe_page(cloud: Cloud, caller: Caller, query: Query, chunk: int = CHUNK
                        ) -> tuple[Page, str | None]:
    """DescribeInstances' page (Compute.describe) with every instance's facts, as of one moment.

    Read in chunks of `chunk` instances, each in the caller's turn; a chunk that finds any of the
    source tables changed since the page was selected starts over (the second time, all at once).
    """
    for attempt in range(2):
        groups, token = cloud.compute.describe(caller, query)
        if sum(len(insts) for _, insts in groups) <= chunk:   # (one chunk, read now: a by-id describe)
            return page_facts(cloud, groups), token
        stamp = _stamp(cloud)
        flat = [(n, i) for n, (_, insts) in enumerate(groups) for i in insts]
        facts = facts_of(cloud, (i for _, i in flat[:chunk]))
        for k in range(chunk, len(flat), chunk):
            async with caller.turn():
                if _stamp(cloud) != stamp:
                    if attempt == 0:
                        break
                    groups, token = cloud.compute.describe(caller, query)   # changing under us: at once
                    return page_facts(cloud, groups), token
                facts += facts_of(cloud, (i for _, i in flat[k:k + chunk]))
        else:
            page: Page = [(res, []) for res, _ in groups]
            for (n, _), f in zip(flat, facts):
                page[n][1].append(f)
            return page, token
    raise AssertionError("unreachable")
