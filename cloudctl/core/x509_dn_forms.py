"""X.509 distinguished names in the textual forms people and tools write, compared as names.

The same subject reaches cloudctl written many ways: OpenSSL's legacy one-line form
(`X509_NAME_oneline`, `openssl x509 -nameopt compat`: `/C=DE/O=Example/CN=J\\xC3\\xB6rg`, what
vmcatcher and econe compare, every byte outside printable ASCII as `\\xHH`), the same with raw
UTF-8, RFC 4514/2253 (`CN=J\\C3\\B6rg,O=Example,C=DE`: reversed, commas, backslash escapes, as
`cryptography` and Java print), and OpenSSL's `-nameopt oneline` (`C = DE, O = Example, CN = Jörg`:
certificate order, ` = ` with spaces). `parse` turns each into one normal form, a tuple of
(attribute OID, value) in certificate order, so two texts, or a text and a certificate's name,
compare equal exactly when they name the same subject (a tuple of RDNs, each a sorted tuple of
(attribute OID, value)):

- attribute types by OID: short names, long names and dotted OIDs are the same type;
- values unescaped to Unicode (escaped bytes decoded as UTF-8), then matched as RFC 5280 asks for
  its string types (RFC 4518 in short): NFKC, case folded, inner white space collapsed;
- a multi-valued RDN (`A=x+B=y`) is a set: OpenSSL's one-line form writes its attributes in DER
  order, its RFC 2253 output reversed.

This module holds no trust: it says whether two names are equal, nothing about who is trusted.
"""
from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (cryptography, ~7 MiB, is loaded only once a certificate is read: issue 14)
    from cryptography import x509

Pair = tuple[str, str]                 # (dotted OID, value)
Normal = tuple[tuple[Pair, ...], ...]  # the RDNs in certificate order, each its pairs sorted

# OpenSSL's short names (OBJ_nid2sn) for the attributes found in subject names, by dotted OID.
_SHORT: dict[str, str] = {
    "2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN",
    "0.9.2342.19200300.100.1.25": "DC", "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "UID", "2.5.4.5": "serialNumber", "2.5.4.9": "street", "2.5.4.12": "title",
    "2.5.4.42": "GN", "2.5.4.4": "SN", "2.5.4.43": "initials", "2.5.4.65": "pseudonym",
    "2.5.4.44": "generationQualifier", "2.5.4.46": "dnQualifier", "2.5.4.17": "postalCode",
    "2.5.4.15": "businessCategory", "2.5.4.41": "name",
}
# Every spelling of a type seen in the forms above (upper-cased) -> its dotted OID.
_TYPES: dict[str, str] = {sn.upper(): oid for oid, sn in _SHORT.items()}
_TYPES.update({
    "COUNTRYNAME": "2.5.4.6", "STATEORPROVINCENAME": "2.5.4.8", "S": "2.5.4.8", "LOCALITYNAME": "2.5.4.7",
    "ORGANIZATIONNAME": "2.5.4.10", "ORGANIZATIONALUNITNAME": "2.5.4.11", "COMMONNAME": "2.5.4.3",
    "DOMAINCOMPONENT": "0.9.2342.19200300.100.1.25", "E": "1.2.840.113549.1.9.1",
    "EMAIL": "1.2.840.113549.1.9.1", "USERID": "0.9.2342.19200300.100.1.1", "STREETADDRESS": "2.5.4.9",
    "GIVENNAME": "2.5.4.42", "SURNAME": "2.5.4.4", "SERIALNUMBER": "2.5.4.5",
})
_TYPE = re.compile(r"(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)")
_SLASH_SPLIT = re.compile(r"/(?=\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*=)")
_PLUS_SPLIT = re.compile(r"\+(?=\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*=)")


class DnSyntaxError(ValueError):
    """A text that is not a distinguished name in any of the forms above."""


def short_name(oid: str) -> str:
    """OpenSSL's short name for an attribute type given by dotted OID (`CN`, `emailAddress`), else
    the dotted OID."""
    return _SHORT.get(oid, oid)


def oneline(name: x509.Name) -> str:
    """OpenSSL's `X509_NAME_oneline` form, byte for byte: what vmcatcher compares `hv:dn` with
    (M2Crypto's `str(X509_Name)`, `openssl x509 -nameopt compat`).

    `/SN=value` per RDN in certificate order, `+SN=value` for a further attribute of the same
    RDN (in its DER order), the value's UTF-8 bytes with each byte outside `' '..'~'` written as
    `\\xHH` (upper-case hex)."""
    out = []
    for rdn in name.rdns:
        for i, attr in enumerate(rdn):
            value = attr.value if isinstance(attr.value, str) else attr.value.decode("latin-1")
            text = "".join(chr(b) if 0x20 <= b <= 0x7E else f"\\x{b:02X}" for b in value.encode("utf-8"))
            out.append(f"{'+' if i else '/'}{short_name(attr.oid.dotted_string)}={text}")
    return "".join(out)


def of_name(name: x509.Name) -> Normal:
    """A certificate's name in the normal form."""
    return tuple(tuple(sorted((a.oid.dotted_string, _fold(a.value if isinstance(a.value, str)
                                                          else a.value.decode("latin-1"))) for a in rdn))
                 for rdn in name.rdns)


def parse(text: str) -> Normal:
    """Any of the textual forms in the module's docstring, in the normal form."""
    return tuple(tuple(sorted((oid, _fold(v)) for oid, v in rdn)) for rdn in rdns(text))


def rdns(text: str) -> list[list[Pair]]:
    """Any of the textual forms, read: its RDNs in certificate order, each its (dotted OID, value)
    pairs as written, escapes undone (values neither folded nor sorted: see `parse`)."""
    t = text.strip()
    for prefix in ("subject=", "issuer=", "subject =", "issuer ="):
        if t.lower().startswith(prefix):
            t = t[len(prefix):].strip()
            break
    if not t:
        raise DnSyntaxError("an empty distinguished name")
    if t.startswith("/"):
        items = [p for p in _SLASH_SPLIT.split(t[1:]) if p.strip()]
        groups = [[_pair(av, slash=True) for av in _PLUS_SPLIT.split(p)] for p in items]
    else:
        groups = [[_pair(av, slash=False) for av in _glued(_split_unescaped(rdn, "+"), "+")]
                  for rdn in _glued(_split_unescaped(t, ",;"), ",")]
        if not _display_order(t, groups):
            groups.reverse()
    return groups


_MOST_SIGNIFICANT = {"2.5.4.6", "0.9.2342.19200300.100.1.25", "2.5.4.10", "2.5.4.8", "2.5.4.7"}   # C DC O ST L


def _display_order(text: str, groups: list[list[Pair]]) -> bool:
    """Whether a comma-separated name is in certificate order (OpenSSL's display, `-nameopt
    oneline`/`utf8`: ` = ` with spaces, or the most significant attribute first) rather than
    RFC 4514's reversed order."""
    if re.search(r"\s=\s", text):
        return True
    first, last = groups[0][0][0], groups[-1][0][0]
    return first in _MOST_SIGNIFICANT and last not in _MOST_SIGNIFICANT


def _glued(pieces: list[str], sep: str) -> list[str]:
    """Rejoin a piece that is not `TYPE=...` to the one before: a separator OpenSSL's `utf8`
    display left unescaped inside a value (`O=Example, Inc`)."""
    out: list[str] = []
    for p in pieces:
        if out and not re.match(r"\s*(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+)\s*=", p):
            out[-1] += sep + p
        else:
            out.append(p)
    return out


def same(a: str | x509.Name, b: str | x509.Name) -> bool:
    """Whether `a` and `b` name the same subject; False if either text is not a name."""
    try:
        return _normal(a) == _normal(b)
    except DnSyntaxError:
        return False


def _normal(x: str | x509.Name) -> Normal:
    return parse(x) if isinstance(x, str) else of_name(x)


def _split_unescaped(text: str, seps: str) -> list[str]:
    """Split at separators not escaped by a backslash and not inside double quotes."""
    out, cur, i, quoted = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in seps and not quoted:
            out.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    out.append("".join(cur))
    if any(not p.strip() for p in out):
        raise DnSyntaxError(f"an empty RDN in {text!r}")
    return out


def _pair(item: str, slash: bool) -> Pair:
    kind, eq, value = item.partition("=")
    kind = kind.strip()
    if not eq or not _TYPE.fullmatch(kind):
        raise DnSyntaxError(f"not TYPE=value: {item.strip()!r}")
    oid = kind if kind[0].isdigit() else _TYPES.get(kind.upper().replace(" ", ""))
    if oid is None:
        raise DnSyntaxError(f"unknown attribute type {kind!r}")
    v = value.strip()
    if v.startswith("#") and not slash:
        raise DnSyntaxError(f"a DER-encoded value (#...) in {item.strip()!r} is not supported")
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"' and not slash:
        v = v[1:-1]
    return oid, _unescape(v)


_ESCAPE = re.compile(r"\\(?:x([0-9A-Fa-f]{2})|([0-9A-Fa-f]{2})|(.))", re.S)


def _unescape(v: str) -> str:
    """`\\xHH` (OpenSSL) and `\\HH` (RFC 4514) bytes, decoded together as UTF-8; `\\c` is `c`."""
    raw = bytearray()
    pos = 0
    for m in _ESCAPE.finditer(v):
        raw += v[pos:m.start()].encode("utf-8")
        hexpair = m.group(1) or m.group(2)
        raw += bytes([int(hexpair, 16)]) if hexpair else m.group(3).encode("utf-8")
        pos = m.end()
    raw += v[pos:].encode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")    # a T61String or Latin-1 byte written as \xHH


def _fold(v: str) -> str:
    """RFC 4518's matching, in short: compatibility form, case folded, white space collapsed."""
    return " ".join(unicodedata.normalize("NFKC", v).casefold().split())
