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

from .journal import open_records, read_payloads

# The first operation's kind, table and key (a JSON string: the same bytes are the same key). The key
# ends at the first quote; when the bytes before that quote end in a backslash, the quote may be an
# escaped one inside the key, and the record is not looked into.
_FIRST = re.compile(rb'\[\["([pd])","([a-z_]+)","([^"]*)"[,\]]')
# Anything that could be the start of a second operation, however the writer spaced it: its list
# and its kind (the `],` before it need not be looked for: without this, there is none).
_OP = re.compile(rb'\[\s*"[pd]"')


_NOTHING: frozenset[str] = frozenset()   # (the keys of a table that is not there)
_DEL = re.compile(rb'\[\s*"d"')   # (a delete among the operations after the first, or what may be one)

# A record's flag, in the first pass's result: 0 apply; SKIP an overwritten one-row put that the second
# pass may skip after its own tests (its one operation, its key in the table then); SURE one the first
# pass proved both for: skipped unread.
SKIP = 1
SURE = 3
# While the first pass runs, a put not yet known to be overwritten: of several operations or not proven
# present (_PUT), a one-operation put proven present (_PUT_SURE), a one-operation put present if its key
# is there when the file's replay starts (_PUT_AT_START). Overwritten: SKIP, SURE, _AT_START (a SKIP the
# checkpoint may make SURE, see `overwritten`'s `first`). _FIRST_WRITE: the first record of its key.
_PUT, _PUT_SURE, _AT_START, _PUT_AT_START = 2, 4, 5, 6
_FIRST_WRITE = 16
_OVERWRITTEN = bytes((f & _FIRST_WRITE) | (0, 0, SKIP, 0, SURE, 0, _AT_START, 0)[f & 7] if f < 32 else 0
                     for f in range(256))   # (a put's flag -> its flag once overwritten)
_LEFT = bytes(f & 7 if f & 7 in (SKIP, SURE) else SKIP if f & 7 == _AT_START else 0
              for f in range(256))          # (flag -> flag at the end: puts left are applied)
_IS_FIRST = bytes(1 if f & _FIRST_WRITE else 0 for f in range(256))
_READ = bytes(0 if f == SURE else 1 for f in range(256))   # (flag at the end -> read the record)


def overwritten(path: Path, written: dict[bytes, int] | None = None, first: bool = False) -> bytearray:
    """One flag a record, in file order: `SKIP` for a record whose first operation is a put of a
    key that a later record's first operation writes again (whether the record has only that
    operation and its key is there is for `replay` to check), `SURE` for such a record that has
    one operation and whose key is certainly in its table when it comes. Reads the whole file
    (checking the framing and cutting a torn tail, as `read_payloads` does) before the caller
    applies anything. Adds to `written` each key a record's first operation writes
    (`'<table>","<key>'`): the last such record of a key is never skipped.

    `first`: the first journal after a checkpoint (`written` empty: it is then the pass's own dict,
    not a copy of it: 369,010 keys are ~21 MB). A key's value there is then `~index` (< 0) when
    its first record is `SURE` if the key is in the checkpoint (see `Store._apply_checkpoint`),
    else >= 0. (The keys come in the order of their first records: those records' flags give the
    index of each, no list of them is kept.)

    Present is proven by the file alone: the previous record to write the key by its first
    operation was a put, and no record since (that one included) may have deleted it: a record
    whose head is not certain, one with a delete after its first operation (or what may be one),
    a first operation deleting a key written with escapes (it may be any key written otherwise),
    and, for a key written with escapes, a delete of a key written without (it may be the same).
    The record's own put (or, if skipped, the key being there) leaves the key there either way.
    For the file's first record of a key, with no such record before it, present is the key
    being there when the file's replay starts.
    """
    flags = bytearray()
    # '<table>","<key>' -> the last record whose first operation wrote it
    last: dict[bytes, int] = written if first and written is not None else {}
    match, op, dl = _FIRST.match, _OP.search, _DEL.search
    append = flags.append
    over = _OVERWRITTEN
    barrier = -1   # the last record that may have deleted any key
    plain = -1     # the last delete of a key written without escapes (a key written with them may be it)
    # (The match inline: a call less per record, on a million records ~0.3 s of a start.)
    for i, payload in enumerate(read_payloads(path)):
        m = match(payload)
        if m is None:
            append(0)
            barrier = i
            continue
        end = m.end(3)
        if payload[end - 1] == 92:   # (a backslash before the quote: see `_FIRST`)
            append(0)
            barrier = i
            continue
        ident = payload[7:end]
        prev = last.get(ident)
        # One operation: no "[" after the head, or none that starts an operation (see `replay`).
        if (b := payload.find(b"[", end)) < 0 or op(payload, b) is None:   # (from `end`: `"[,\]]` ends the head)
            if payload[3] == 112:   # ("p")
                b = barrier if plain <= barrier or 92 not in ident else plain
                if prev is None:
                    flag = _PUT_AT_START if b < 0 else _PUT
                else:
                    flag = _PUT_SURE if prev > b and flags[prev] & 7 else _PUT
            else:
                flag = 0
                if 92 in ident:
                    barrier = i
                else:
                    plain = i
        else:
            flag = _PUT if payload[3] == 112 else 0
            if flag == 0 or dl(payload, b) is not None:
                barrier = i
        if prev is None:
            flag |= _FIRST_WRITE
        elif f := flags[prev]:
            flags[prev] = over[f]
        last[ident] = i
        append(flag)
    if last is written:
        at_start = _FIRST_WRITE | _AT_START
        for ident, i in zip(last, itertools.compress(itertools.count(), flags.translate(_IS_FIRST))):
            if flags[i] == at_start:
                last[ident] = ~i   # (the key is there: the dict grows not)
    elif written is not None:   # (a later file's: its keys not there yet)
        written.update(zip(last.keys() - written.keys(), itertools.repeat(0)))
    return flags.translate(_LEFT)


def replay(path: Path, apply: Callable[[str], None], rows_of: Callable[[str], Container[str] | None],
           flags: bytearray | None = None) -> tuple[int, int]:
    """Apply the journal's records in order (`apply(payload)`), less the overwritten one-operation
    puts whose key is in `rows_of(table)` when they come: the table's keys as they are then (a
    live container, asked for once a table; None: no such table, nothing in it). Returns
    (records, skipped). `flags`: `overwritten(path)`, when the caller has it already; the records
    it marks `SURE` are skipped unread."""
    if flags is None:
        flags = overwritten(path)
    n = len(flags)
    skipped = flags.count(SURE)
    match, op = _FIRST.match, _OP.search
    tables: dict[bytes, Container[str]] = {}
    f = open_records(path)
    if f is None:
        return n, 0
    # (The SURE records are passed over in C, as lines: no test, no slice, no call. The others'
    # tests inline, each table's keys looked up once: 630,000 skip tests of a million records
    # cost three calls each, ~0.2 s of a start, and a call to ask for the key ~0.1 s. A second
    # operation starts with "[": a record with none after the first operation's head is decided
    # by one memchr; otherwise the pattern is searched from that "[" on (an instance's first is
    # near its end). Records past the flags, if any, are applied.)
    with f:
        for flag, line in itertools.compress(zip(itertools.chain(flags, itertools.repeat(0)), f),
                                             itertools.chain(flags.translate(_READ), itertools.repeat(1))):
            payload = line[9:-1]
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


# A checkpoint's row line starts with its table and key, as a journal operation does: its ident
# '<table>","<key>' (as `overwritten` notes them) is `line[2:m.end(2)]`, certain unless a backslash
# comes before the key's closing quote (see `_FIRST`). `Store._apply_checkpoint` reads it inline.
ROW = re.compile(rb'\["([a-z_]+)","([^"]*)",')
