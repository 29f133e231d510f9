"""Certificate subject names (DNs) as users write them, compared as X.509 names.

A DN reaches cloudctl in several spellings (read by x509_dn_forms, which the marketplace compares
with vmcatcher's rules; this module is econe's side of it): OpenSSL's one-line form (`/C=ES/O=ONE/CN=Jörg`,
certificate order, non-ASCII bytes written `\\xC3\\xB6`; what econe stores, with its spaces
removed), RFC 4514/2253 (`CN=Jörg,O=ONE,C=ES`, reversed, what nginx's `$ssl_client_s_dn` and
Apache's `SSL_CLIENT_S_DN` send) or a certificate. They are compared by `dn_key`: the
attributes in certificate order, each type by its OID and each value with its
escapes undone, its whitespace removed (econe removes it) and its case folded (X.509 name
matching ignores case), so every spelling of one name has one key.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

from .x509_dn_forms import DnSyntaxError, rdns, short_name

if TYPE_CHECKING:   # (cryptography, ~7 MiB, is loaded only once a certificate is read: issue 14)
    from cryptography import x509

_WS = re.compile(r"\s+")

DnKey = tuple[tuple[str, str], ...]
DnError = DnSyntaxError   # text that is not a distinguished name in any form cloudctl reads


def oneline(name: "x509.Name") -> str:
    """OpenSSL's one-line form of a certificate's name with whitespace removed: econe's DN."""
    return "".join(f"{'+' if i else '/'}{short_name(a.oid.dotted_string)}="
                   f"{_escaped(a.value if isinstance(a.value, str) else a.value.hex())}"
                   for rdn in name.rdns for i, a in enumerate(rdn))


def _escaped(value: str) -> str:
    """A value as X509_NAME_oneline writes it (bytes outside printable ASCII as \\xHH), spaces removed."""
    return "".join(chr(b) if 0x20 < b < 0x7F else f"\\x{b:02X}" for b in _WS.sub("", value).encode("utf-8"))


def _read(dn: "str | x509.Name") -> list[list[tuple[str, str]]]:
    """The RDNs of a DN in any spelling x509_dn_forms reads (DnError if none)."""
    return rdns(dn if isinstance(dn, str) else oneline(dn))


def dn_key(dn: "str | x509.Name") -> DnKey:
    """The comparison key of a DN in any form read here (DnError if it is none of them)."""
    return tuple(pair for rdn in _read(dn) for pair in sorted((oid, _WS.sub("", v).casefold()) for oid, v in rdn))


def canonical(dn: "str | x509.Name") -> str:
    """The econe spelling of a DN (`/C=../O=../CN=..`, whitespace removed, non-ASCII as OpenSSL
    escapes it): how cloudctl stores and lists it, whatever form it was given in."""
    if not isinstance(dn, str):
        return oneline(dn)
    return "".join(f"{'+' if i else '/'}{short_name(oid)}={_escaped(v)}"
                   for rdn in _read(dn) for i, (oid, v) in enumerate(rdn))


def same(a: "str | x509.Name", b: "str | x509.Name") -> bool:
    return dn_key(a) == dn_key(b)
