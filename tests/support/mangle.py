"""Random small damage: to request text (the signature checks' fuzz tests), to files (the readers')."""
from __future__ import annotations

import random

#: What a mangled field gets: separators, spaces, a non-ASCII letter, a lone surrogate, a NUL.
ALPHABET = "aZ09/=,;:% +\t\u00e9\udcff\x00-_.~&?"


def mangle(rng: random.Random, text: str, most: int) -> str:
    """`text` with 1 to `most` characters deleted or inserted at random places."""
    chars = list(text)
    for _ in range(rng.randint(1, most)):
        pos = rng.randrange(len(chars) + 1)
        if rng.random() < 0.5 and pos < len(chars):
            del chars[pos]
        else:
            chars.insert(pos, rng.choice(ALPHABET))
    return "".join(chars)


def damaged(data: bytes, damage: list[tuple[str, int, bytes]], start: int = 0) -> bytes:
    """`data` with each (kind, at, b) of `damage` done in turn at `at` (taken modulo the length
    from `start`, so anywhere after the first `start` bytes): "cut" ends it there, "set" writes `b`
    over it, "insert" puts `b` in, "delete" drops `len(b)` bytes."""
    for kind, at, b in damage:
        i = start + at % max(1, len(data) - start + 1)
        if kind == "cut":
            data = data[:i]
        elif kind == "set":
            data = data[:i] + b + data[i + len(b):]
        elif kind == "insert":
            data = data[:i] + b + data[i:]
        else:
            data = data[:i] + data[i + len(b):]
    return data
