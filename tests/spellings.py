"""Other ways of writing one signed EC2 request that its signature still covers.

A replay rewritten in any of these forms must be recognised as the same request (the replay
cache keys on what was verified); tests/test_auth.py checks the verifier accepts each with
the same replay key, tests/test_auth_attacks.py that a served controller refuses each replay.
"""
from __future__ import annotations


def authorization_variants(auth: str) -> list[str]:
    """A SigV4 Authorization header with other spacing, tabs, field order and extra fields."""
    algo, _, rest = auth.partition(" ")
    fields = [f.strip() for f in rest.split(",")]
    return [
        f"{algo}   " + ",   ".join(fields),                                  # more spaces
        f"{algo} \t" + ",\t".join(fields) + "\t",                            # tabs
        f"{algo} " + ",".join(fields),                                       # no spaces
        f"{algo} " + ", ".join(reversed(fields)),                            # field order
        f"{algo} " + ", ".join([fields[2], fields[0], fields[1]]),
        f"{algo} " + ", ".join(f.replace("=", "= ", 1) for f in fields),     # space after '='
        f"{algo} " + ", ".join([*fields, "Extra=ignored"]),                  # an unknown field
    ]


def query_variants(query: str) -> list[str]:
    """A query string or form body holding the same parameters, written differently."""
    pairs = query.split("&")
    out = [
        "&".join(reversed(pairs)),                                            # order
        "&".join(sorted(pairs, key=lambda p: not p.startswith(("X-Amz-Signature=", "Signature=")))),
        query.replace("%2F", "%2f").replace("%3A", "%3a"),                    # hex case
        query.replace("%20", "+"),                                            # '+' for a space
        query.replace("Action=", "%41ction=").replace("&Version=", "&Versio%6E="),  # needless escapes
        query.replace("X-Amz-Signature=", "X%2DAmz%2DSignature="),
        query.replace("%3A", ":"),                                            # unescaped ':'
    ]
    return list(dict.fromkeys(q for q in out if q != query))
