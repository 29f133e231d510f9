"""Random small damage to request text, for the signature checks' fuzz tests."""
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
