"""Journal replay that skips the records a later record overwrites.

A long journal re-puts the same rows again and again (an instance's state, a lease, a tag): of a
million one-row records on a 50,000-instance state, 63 % are overwritten later in the same file.
Decoding such a record and building its row is wasted work, and finding them needs no decoding: a
first pass over the records' bytes notes which row each record's first operation writes; the
second pass applies the records, less those it may skip.

A record is skipped only when all of these hold, so the tables end exactly as a full replay leaves
them (the values, and the order of each table's keys, which checkpoints keep):
- its first operation is a put whose table and key are certain from the bytes
  (`[["p","<table>","<key>",`; the key is compared as the JSON string's bytes: equal bytes are the
  same key, and a key written two ways would only be skipped less);
- a later record's first operation, in the same file, puts or deletes the same key;
- it has certainly one operation: nothing in it after the first operation's head could start a
  second (`[` and `"p"` or `"d"`, whitespace allowed);
- the key is in the table when the record comes: the put would replace the row in place, so
  skipping it moves no key in the table's order, and the later record replaces or deletes the
  row either way (operations of records of several operations in between do not depend on it).
A skipped record's row is not checked: a row that could not be built stops a start only when it is
the one that counts. The framing (CRCs, a torn tail) is checked by the first pass, as before.
"""
from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Container
from json.decoder import scanstring as _scanstring  # (the C one)
from pathlib import Path

from .journal import read_payloads

# The first operation's kind, table and key (a JSON string: the same bytes are the same key). The key
# ends at the first quote; when the bytes before that quote end in a backslash, the quote may be an
# escaped one inside the key, and the record is not looked into.
_FIRST = re.compile(rb'\[\["([pd])","([a-z_]+)","([^"]*)"[,\]]')
# Anything that could be the start of a second operation, however the writer spaced it: its list
# and its kind (the `],` before it need not be looked for: without this, there is none).
_OP = re.compile(rb'\[\s*"[pd]"')


_NOTHING: frozenset[str] = frozenset()   # (the keys of a table that is not there)
_PUT = 2   # (a put not yet known to be overwritten; only SKIP is acted on)
SKIP = 1


def overwritten(path: Path, written: set[bytes] | None = None) -> bytearray:
    """One flag a record, in file order: `SKIP` for a record whose first operation is a put of a
    key that a later record's first operation writes again (whether the record has only that
    operation is for `replay` to check). Reads the whole file (checking the framing and cutting a
    torn tail, as `read_payloads` does) before the caller applies anything. Adds to `written` each
    key a record's first operation writes (`'<table>","<key>'`): the last such record of a key is
    never skipped."""
    flags = bytearray()
    last: dict[bytes, int] = {}   # '<table>","<key>' -> the last record whose first operation wrote it
    match = _FIRST.match
    append = flags.append
    # (The match inline: a call less per record, on a million records ~0.3 s of a start.)
    for i, payload in enumerate(read_payloads(path)):
        m = match(payload)
        if m is None:
            append(0)
            continue
        end = m.end(3)
        if payload[end - 1] == 92:   # (a backslash before the quote: see `_FIRST`)
            append(0)
            continue
        ident = payload[7:end]
        prev = last.get(ident)
        if prev is not None and flags[prev] == _PUT:
            flags[prev] = SKIP
        last[ident] = i
        append(_PUT if payload[3] == 112 else 0)   # ("p")
    if written is not None:
        written.update(last)
    return flags.replace(bytes([_PUT]), b"\0")


def replay(path: Path, apply: Callable[[str], None], rows_of: Callable[[str], Container[str] | None],
           flags: bytearray | None = None) -> tuple[int, int]:
    """Apply the journal's records in order (`apply(payload)`), less the overwritten one-operation
    puts whose key is in `rows_of(table)` when they come: the table's keys as they are then (a
    live container, asked for once a table; None: no such table, nothing in it). Returns
    (records, skipped). `flags`: `overwritten(path)`, when the caller has it already."""
    if flags is None:
        flags = overwritten(path)
    n = len(flags)
    skipped = 0
    match, op = _FIRST.match, _OP.search
    tables: dict[bytes, Container[str]] = {}
    # (The tests inline, each table's keys looked up once: 630,000 skip tests of a million
    # records cost three calls each, ~0.2 s of a start, and a call to ask for the key ~0.1 s. A
    # second operation starts with "[": a record with none after the first operation's head is
    # decided by one memchr; otherwise the pattern is searched from that "[" on (an instance's
    # first is near its end). Searching for "p" and "d" from the head, as before, scanned all of
    # an 800-byte instance twice: ~0.3 s of a start. Records past the flags, if any, are applied.)
    for flag, payload in zip(itertools.chain(flags, itertools.repeat(0)), read_payloads(path, checked=False)):
        if flag == SKIP:
            m = match(payload)
            if m is not None:
                end = m.end()
                if (at := payload.find(b"[", end)) < 0 or op(payload, at) is None:
                    tb, raw = m.group(2, 3)
                    if not raw.endswith(b"\\"):
                        if (keys := tables.get(tb)) is None:
                            keys = tables[tb] = _NOTHING if (got := rows_of(tb.decode())) is None else got
                        if (_scanstring(raw.decode() + '"', 0)[0] if 92 in raw else raw.decode()) in keys:
                            skipped += 1
                            continue
        apply(payload.decode())
    return n, skipped


# A checkpoint's row line starts with its table and key, as a journal operation does.
_ROW = re.compile(rb'\["([a-z_]+)","([^"]*)",')


def written_row(line: bytes, written: Container[bytes]) -> tuple[str, str] | None:
    """(table, key) of a checkpoint row line whose '<table>","<key>' (as `overwritten` notes them)
    is certain and in `written`; else None. (One call a row: the load's checkpoint pass made three.)"""
    m = _ROW.match(line)
    if m is None:
        return None
    end = m.end(2)
    if line[end - 1] == 92 or line[2:end] not in written:   # (a backslash before the quote: see `_FIRST`)
        return None
    tb, raw = m.group(1, 2)
    return tb.decode(), (_scanstring(raw.decode() + '"', 0)[0] if 92 in raw else raw.decode())
