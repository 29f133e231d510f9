"""Tags on any resource, indexed both ways so `tag:K=V` filters are lookups, not scans."""
from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence

from ..store.records import Tag
from ..store.store import Store, Txn
from ..store.tagtable import TagTable
from .context import Caller
from .errors import CloudError
from .filters import FilterSet
from .query import Query

MAX_TAGS = 50
_EMPTY: Mapping[str, str] = {}

# Resource id prefix -> EC2 resource type name.
RESOURCE_TYPES = {
    "i": "instance", "ami": "image", "key": "key-pair", "vol": "volume", "snap": "snapshot",
    "sg": "security-group", "sgr": "security-group-rule", "eipalloc": "elastic-ip", "vpc": "vpc", "subnet": "subnet",
    "r": "reservation", "import": "import-image-task", "lt": "launch-template",
}


def _refused_char(text: str) -> str | None:
    """The first control character (Unicode Cc), lone surrogate (Cs) or U+FFFE/U+FFFF in
    ``text``, if any.

    AWS allows only letters, digits, spaces and ``_ . : / = + - @`` in tags, but tags written
    here before may hold any printable Unicode (other punctuation, emoji), so narrowing to
    AWS's set would lock their owners out of rewriting them. What is refused is exactly what
    cannot come back as sent: XML 1.0 cannot carry most control characters nor U+FFFE/U+FFFF
    (the answer would show U+FFFD instead), and a lone surrogate is not encodable text. The
    rest of Cc (tab, newline) is refused with them: invisible in a listing, never a useful tag.
    """
    if text.isprintable():   # the common case: one C-level scan, and it covers Cc and Cs
        return None
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in "\ufffe\uffff":
            return ch
    return None


def _check_text(what: str, text: str) -> None:
    ch = _refused_char(text)
    if ch is not None:
        raise CloudError("InvalidParameterValue",
                         f"Value for parameter {what} is invalid: character U+{ord(ch):04X} is not "
                         "allowed; tags may contain letters, digits, spaces and printable symbols, "
                         "no control characters")


def resource_type_of(resource_id: str) -> str | None:
    return RESOURCE_TYPES.get(resource_id.partition("-")[0])


# Checks that a resource exists and belongs to the caller; registered by each resource's module.
Owner = Callable[[Caller, str], None]


class Tags:
    def __init__(self, store: Store) -> None:
        self.store = store
        # One packed tuple per tagged resource, with its key/value index (store/tagtable.py).
        self.table: TagTable = store.tables[Tag.table]   # type: ignore[assignment]
        self._owners: dict[str, Owner] = {}
        self.filters = FilterSet({
            "key": lambda t: t.tag_key,
            "value": lambda t: t.value,
            "resource-id": lambda t: t.resource_id,
            "resource-type": lambda t: t.resource_type,
        })

    def register(self, resource_type: str, check: Owner) -> None:
        self._owners[resource_type] = check

    # -- reads used by every Describe --------------------------------------------------------
    def of(self, resource_id: str) -> Mapping[str, str]:
        got = self.table.mapping_of(resource_id)
        return _EMPTY if got is None else got

    def rows_of(self, resource_id: str) -> tuple[Tag, ...]:
        """The resource's tag rows as they are now (made as read: a snapshot)."""
        return self.table.rows_of(resource_id)

    def pairs_of(self, resource_id: str) -> tuple[tuple[str, str], ...]:
        """(key, value) of the resource's tags, in the order they were added, without making rows
        (every DescribeInstances reads each instance's)."""
        return self.table.pairs_of(resource_id)

    def version_of(self, resource_id: str) -> object:
        """An object that is the same (`is`) exactly while the resource's tags stay unchanged (its
        packed entry: any change replaces it), for caches keyed by identity; None: no tags."""
        return self.table.by_rid.get(resource_id)

    def resources_with(self, key: str, values: set[str]) -> set[str]:
        return self.table.kv.holding(key, values)

    # -- changes ------------------------------------------------------------------------------
    @staticmethod
    def validate_pairs(tags: Iterable[tuple[str | None, str]]) -> list[tuple[str, str]]:
        out = []
        for key, value in tags:
            if key is None or not 1 <= len(key) <= 128:
                raise CloudError("InvalidParameterValue", "Tag keys must be between 1 and 128 characters")
            if len(value) > 256:
                raise CloudError("InvalidParameterValue", f"Tag value for key '{key}' exceeds 256 characters")
            if key.lower().startswith("aws:"):
                raise CloudError("InvalidParameterValue",
                                 "Tag keys starting with 'aws:' are reserved for internal use")
            if not (key.isprintable() and value.isprintable()):   # (the usual pair: no call for either)
                _check_text("Tag.Key", key)
                _check_text("Tag.Value", value)
            out.append((key, value))
        return out

    def check_resource(self, caller: Caller, resource_id: str) -> str:
        rtype = resource_type_of(resource_id)
        check = self._owners.get(rtype) if rtype else None
        if rtype is None or check is None:
            raise CloudError("InvalidID", f"The ID '{resource_id}' is not valid")
        check(caller, resource_id)
        return rtype

    def put(self, tx: Txn, owner: str, resource_id: str, resource_type: str,
            pairs: list[tuple[str, str]]) -> None:
        current = self.of(resource_id)
        new_keys = {k for k, _ in pairs if k not in current}
        # The cloud's own `aws:` tags do not count, as in EC2 (counted only when the total is over).
        if len(current) + len(new_keys) > MAX_TAGS and sum(
                not k.startswith("aws:") for k in (*current, *new_keys)) > MAX_TAGS:
            raise CloudError.limit("TagLimitExceeded",
                                   f"The maximum number of tags ({MAX_TAGS}) for resource '{resource_id}' was exceeded")
        shared_value = self.table.shared_value
        owner = sys.intern(owner)
        if not current and len(new_keys) == len(pairs) > 0:   # (a launch's: a new resource, distinct keys)
            rows = []
            for k, v in pairs:
                k = sys.intern(k)
                rows.append(Tag(resource_id, resource_type, owner, k, shared_value(k, v)))
            tx.put_new_tags(rows)
            return
        for k, v in pairs:
            # One object per key, and per value other resources hold: a fleet's tags share their text.
            k = sys.intern(k)
            tx.put(Tag(resource_id=resource_id, resource_type=resource_type, owner=owner, tag_key=k,
                       value=shared_value(k, v)))

    def remove_all(self, tx: Txn, resource_id: str) -> None:
        for t in self.table.rows_of(resource_id):   # a snapshot: safe to delete while iterating
            tx.delete(t)

    async def create(self, caller: Caller, resource_ids: Sequence[str], tags: Iterable[tuple[str, str]]) -> None:
        pairs = self.validate_pairs(tags)
        types = {rid: self.check_resource(caller, rid) for rid in resource_ids}
        caller.check_dry_run()
        with self.store.txn() as tx:
            for rid in resource_ids:
                self.put(tx, caller.account, rid, types[rid], pairs)
        await self.store.sync()

    async def delete(self, caller: Caller, resource_ids: Sequence[str],
                     tags: Sequence[tuple[str, str | None]] = ()) -> None:
        """Without `tags`, every tag of the resources goes; a (key, None) pair removes the key
        whatever its value, a (key, value) pair only a tag holding exactly that value. The cloud's own
        `aws:` tags stay: naming one is refused, and "every tag" means every user tag."""
        for rid in resource_ids:
            self.check_resource(caller, rid)
        for key, _ in tags:
            if key.lower().startswith("aws:"):
                raise CloudError("InvalidParameterValue",
                                 "Tag keys starting with 'aws:' are reserved for internal use")
        caller.check_dry_run()
        with self.store.txn() as tx:
            for rid in resource_ids:
                group = {t.tag_key: t for t in self.table.rows_of(rid)}
                if not tags:
                    for t in group.values():
                        if not t.tag_key.lower().startswith("aws:"):
                            tx.delete(t)
                    continue
                for key, value in tags:
                    row = group.get(key)
                    # With a value, only a tag holding that value goes (EC2 semantics); an
                    # empty-string value means "only if the value is empty".
                    if row is not None and (value is None or value == row.value):
                        tx.delete(row)
        await self.store.sync()

    def describe(self, caller: Caller, query: Query) -> tuple[list[Tag], str | None]:
        """The caller's tags that `query`'s filters select (its ids are not used), one page."""
        match = self.filters.compile(query.filters)
        page = query.page(5, 1000, "tags")
        caller.check_dry_run()
        rids = match.exact_values("resource-id")
        if rids is not None:
            pool = [t for rid in rids for t in self.table.rows_of(rid)]
        else:
            pool = list(self.table.values())
        rows = {t.key: t for t in pool if t.owner == caller.account and match(t)}
        keys, token = page.of(sorted(rows))
        return [rows[k] for k in keys], token
