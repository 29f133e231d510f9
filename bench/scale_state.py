"""The scale bench's view of a stopped controller's state files, and the long journal it adds.

Read with plain JSON, as the files are documented (cloudctl/store/checkpoint.py, journal.py):
`checkpoint.<gen>` lines `[table, key, row]` between a header and a trailer; `journal.<gen>` lines
`<crc32 hex> <json list of ops>` after a header, an op being `["p", table, key, row]` or
`["d", table, key]`. Only the record framing is taken from cloudctl's own code.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cloudctl.store.journal import encode_record  # noqa: E402

Rows = dict[tuple[str, str], dict[str, Any]]
_GEN = re.compile(r"^(checkpoint|journal)\.(\d{8})$")


def _gens(state: Path, kind: str) -> list[int]:
    return sorted(int(m.group(2)) for p in state.iterdir() if (m := _GEN.match(p.name)) and m.group(1) == kind)


def latest_rows(state: Path) -> Rows:
    """Every row: the newest checkpoint, then the journals from its generation on."""
    base = _gens(state, "checkpoint")[-1]
    rows: Rows = {}
    lines = (state / f"checkpoint.{base:08d}").read_bytes().split(b"\n")
    for ln in lines[1:]:
        if not ln:
            continue
        item = json.loads(ln)
        if isinstance(item, list):
            rows[(item[0], item[1])] = item[2]
    for gen in _gens(state, "journal"):
        if gen < base:
            continue
        for ln in (state / f"journal.{gen:08d}").read_bytes().split(b"\n")[1:]:
            if len(ln) < 10:
                continue
            for op in json.loads(ln[9:]):
                if op[0] == "p":
                    rows[(op[1], op[2])] = op[3]
                else:
                    rows.pop((op[1], op[2]), None)
    return rows


def domains_by_host(rows: Rows) -> dict[str, list[tuple[str, str]]]:
    """(instance id, uuid) of every instance that has a domain, per host."""
    out: dict[str, list[tuple[str, str]]] = {}
    for (table, _), r in rows.items():
        if table == "instances" and r.get("state") in ("pending", "running") and r.get("host"):
            out.setdefault(r["host"], []).append((r["id"], r.get("uuid") or ""))
    return out


def write_journal(state: Path, rows: Rows, records: int) -> dict[str, Any]:
    """A journal generation after every existing file, holding `records` one-row puts.

    Each record re-puts an existing row as it is (so the state after replay is unchanged), cycling
    over all rows: the mix of tables and row sizes is the state's own. A long-running controller's
    records are mostly such one-row changes (an instance's state, a tag, a lease).
    """
    gen = max([*_gens(state, "checkpoint"), *_gens(state, "journal")]) + 1
    path = state / f"journal.{gen:08d}"
    ops = ['[["p",' + json.dumps(t) + "," + json.dumps(k) + "," + json.dumps(r, separators=(",", ":")) + "]]"
           for (t, k), r in rows.items()]
    size = 0
    with open(path, "wb") as f:
        head = (json.dumps({"format": "cloudctl-journal", "version": 1, "generation": gen}) + "\n").encode()
        f.write(head)
        size += len(head)
        for i in range(0, records, 10_000):
            chunk = b"".join(encode_record(ops[j % len(ops)]) for j in range(i, min(records, i + 10_000)))
            f.write(chunk)
            size += len(chunk)
    tables: dict[str, int] = {}
    for t, _ in rows:
        tables[t] = tables.get(t, 0) + 1
    return {"records": records, "bytes": size, "rows": len(rows), "rows_by_table": tables, "generation": gen}
