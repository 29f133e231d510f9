"""Certificate subject names (DNs) as users write them, compared as X.509 names.

A DN reaches cloudctl in several spellings: OpenSSL's one-line form (`/C=ES/O=ONE/CN=Jörg`,
certificate order, non-ASCII bytes written `\\xC3\\xB6`; what econe stores, with its spaces
removed), RFC 4514/2253 (`CN=Jörg,O=ONE,C=ES`, reversed, what nginx's `$ssl_client_s_dn` and
Apache's `SSL_CLIENT_S_DN` send) or a certificate. They are compared by `dn_key`: the
attributes in certificate order, each type by its short name and each value with its
escapes undone, its whitespace removed (econe removes it) and its case folded (X.509 name
matching ignores case), so every spelling of one name has one key.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:   # (cryptography, ~7 MiB, is loaded only once a certificate is read: issue 14)
    from cryptography import x509

# Short names as OpenSSL prints them, by dotted OID; long names and dotted OIDs map to them (upper-cased).
_SHORT = {"2.5.4.6": "C", "2.5.4.8": "ST", "2.5.4.7": "L", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.3": "CN",
          "0.9.2342.19200300.100.1.25": "DC", "0.9.2342.19200300.100.1.1": "UID",
          "1.2.840.113549.1.9.1": "emailAddress", "2.5.4.5": "serialNumber", "2.5.4.4": "SN", "2.5.4.42": "GN",
          "2.5.4.12": "title", "2.5.4.9": "street"}
_ALIASES = {
    "E": "EMAILADDRESS", "EMAIL": "EMAILADDRESS", "1.2.840.113549.1.9.1": "EMAILADDRESS",
    "COUNTRYNAME": "C", "2.5.4.6": "C", "STATEORPROVINCENAME": "ST", "S": "ST", "2.5.4.8": "ST",
    "LOCALITYNAME": "L", "2.5.4.7": "L", "ORGANIZATIONNAME": "O", "2.5.4.10": "O",
    "ORGANIZATIONALUNITNAME": "OU", "2.5.4.11": "OU", "COMMONNAME": "CN", "2.5.4.3": "CN",
    "DOMAINCOMPONENT": "DC", "0.9.2342.19200300.100.1.25": "DC", "USERID": "UID",
    "0.9.2342.19200300.100.1.1": "UID", "SERIALNUMBER": "SERIALNUMBER", "2.5.4.5": "SERIALNUMBER",
    "SURNAME": "SN", "2.5.4.4": "SN", "GIVENNAME": "GN", "2.5.4.42": "GN", "2.5.4.12": "TITLE",
    "STREETADDRESS": "STREET", "2.5.4.9": "STREET",
}
_TYPE = r"[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)+"
_SLASH_SPLIT = re.compile(rf"/(?=(?:{_TYPE})=)")        # OpenSSL does not escape '/' inside values
_HEX_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")
_RFC_HEX = re.compile(r"\\([0-9A-Fa-f]{2})")
_WS = re.compile(r"\s+")

DnKey = tuple[tuple[str, str], ...]


class DnError(ValueError):
    """Text that is not a distinguished name in any form cloudctl reads."""


def oneline(name: "x509.Name") -> str:
    """OpenSSL's one-line form of a certificate's name with whitespace removed: econe's DN."""
    parts = []
    for attr in name:
        value = attr.value if isinstance(attr.value, str) else attr.value.hex()
        oid = attr.oid.dotted_string
        parts.append(f"{_SHORT.get(oid, oid)}={_escaped(value)}")
    return "/" + "/".join(parts)


def _escaped(value: str) -> str:
    """A value as X509_NAME_oneline writes it (bytes outside printable ASCII as \\xHH), spaces removed."""
    return "".join(chr(b) if 0x20 < b < 0x7F else f"\\x{b:02X}" for b in _WS.sub("", value).encode("utf-8"))


def _slash_pairs(dn: str) -> list[tuple[str, str]]:
    out = []
    for item in _SLASH_SPLIT.split(dn[1:]):
        if not item:
            continue
        k, eq, v = item.partition("=")
        if not eq:
            raise DnError(f"{item!r} is not TYPE=value")
        raw = _HEX_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), v.encode("utf-8", "surrogateescape"))
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = raw.decode("latin-1")
        out.append((k, value))
    return out


def _rfc_split(text: str, seps: str) -> list[str]:
    """Split on unescaped separators (and not inside a quoted value)."""
    parts, cur, i, quoted = [], [], 0, False
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            cur.append(text[i:i + 2])
            i += 2
            continue
        if c == '"':
            quoted = not quoted
        elif c in seps and not quoted:
            parts.append("".join(cur))
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    parts.append("".join(cur))
    return parts


def _rfc_value(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == '"' and v[-1] == '"':
        v = v[1:-1]
    # \HH pairs are UTF-8 bytes; \c is the character c.
    raw = bytearray()
    i = 0
    while i < len(v):
        if v[i] == "\\" and i + 1 < len(v):
            m = _RFC_HEX.match(v, i)
            if m:
                raw.append(int(m.group(1), 16))
                i += 3
                continue
            raw += v[i + 1].encode("utf-8")
            i += 2
            continue
        raw += v[i].encode("utf-8")
        i += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _rfc_pairs(dn: str) -> list[tuple[str, str]]:
    out = []
    for rdn in reversed(_rfc_split(dn, ",;")):
        if not rdn.strip():
            continue
        for atv in _rfc_split(rdn, "+"):
            k, eq, v = atv.partition("=")
            if not eq:
                raise DnError(f"{atv.strip()!r} is not TYPE=value")
            out.append((k.strip(), _rfc_value(v)))
    return out


def _pairs(dn: str) -> list[tuple[str, str]]:
    dn = dn.strip()
    if not dn:
        raise DnError("an empty DN")
    pairs = _slash_pairs(dn) if dn.startswith("/") else _rfc_pairs(dn)
    if not pairs:
        raise DnError(f"{dn!r} names no attribute")
    for k, _ in pairs:
        if not re.fullmatch(_TYPE, k.strip()):
            raise DnError(f"{k!r} is not an attribute type")
    return pairs


def dn_key(dn: "str | x509.Name") -> DnKey:
    """The comparison key of a DN in any form read here (DnError if it is none of them)."""
    if not isinstance(dn, str):
        dn = oneline(dn)
    out = []
    for k, v in _pairs(dn):
        t = k.strip().upper()
        out.append((_ALIASES.get(t, t), _WS.sub("", v).casefold()))
    return tuple(out)


def canonical(dn: "str | x509.Name") -> str:
    """The econe spelling of a DN (`/C=../O=../CN=..`, whitespace removed, non-ASCII as OpenSSL
    escapes it): how cloudctl stores and lists it, whatever form it was given in."""
    if not isinstance(dn, str):
        return oneline(dn)
    parts = []
    short = {v.upper(): v for v in _SHORT.values()}
    for k, v in _pairs(dn):
        t = k.strip().upper()
        t = _ALIASES.get(t, t)
        parts.append(f"{short.get(t, k.strip())}={_escaped(v)}")
    return "/" + "/".join(parts)


def same(a: "str | x509.Name", b: "str | x509.Name") -> bool:
    return dn_key(a) == dn_key(b)
