"""The client certificate a request presents, as the subject (DN) that core/users.py logs in by.

Two ways in: the listener's own TLS, where OpenSSL verified the certificate in the handshake
(api/tls.py), or a TLS proxy in front of cloudctl that verified it and passes it on in a
header: the certificate (`X-SSL-Client-Cert`, PEM, URL-escaped as nginx's
`$ssl_client_escaped_cert`; Apache's spaces-for-newlines and nginx's tab-indented forms read
too) or its subject (`SSL_CLIENT_S_DN`, RFC 2253 or OpenSSL's one-line form). A header is
believed only from `x509.trusted_proxies`; from any other address it is ignored, and logged.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
import time
from urllib.parse import unquote

from aiohttp import web

from ..config import X509Login
from ..core import x509names

log = logging.getLogger("cloudctl.x509")

_PEM = re.compile(r"-----BEGIN CERTIFICATE-----(.+?)-----END CERTIFICATE-----", re.S)
_NONE = {"", "(null)", "-"}   # what proxies send for "no certificate" (nginx: empty; Apache: "(null)")
_LOG_EVERY_S = 60.0


def _subject(der: bytes) -> str:
    """A DER certificate's subject in econe's form (cryptography is loaded with the first one: issue 14)."""
    from cryptography import x509
    return x509names.oneline(x509.load_der_x509_certificate(der).subject)


def header_cert_dn(value: str) -> str | None:
    """The subject of the certificate in a proxy's header, in econe's form; None if it holds none."""
    value = value.strip()
    if value in _NONE:
        return None
    if "%" in value:
        value = unquote(value)
    m = _PEM.search(value)
    if m is None:
        raise ValueError("no PEM certificate in it")
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
        return _subject(der)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not a certificate: {e}") from None


def _text(value: str) -> str:
    """A header's text: raw non-ASCII bytes (aiohttp keeps them as surrogates) read as UTF-8, else Latin-1."""
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class ClientCerts:
    """Finds the verified client certificate's DN of a request, if it presents one."""

    def __init__(self, cfg: X509Login) -> None:
        self.cfg = cfg
        self.proxies = [ipaddress.ip_network(p.strip(), strict=False) for p in cfg.trusted_proxies]
        self._logged: dict[str, float] = {}   # address -> when an ignored header from it was last logged

    def trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:   # (a dual-stack socket)
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.proxies)

    def dn(self, request: web.Request) -> str | None:
        """The DN of the certificate the request presents (econe's form), or None."""
        tr = request.transport
        ssl_object = tr.get_extra_info("ssl_object") if tr is not None else None
        if ssl_object is not None:
            der = ssl_object.getpeercert(binary_form=True)   # (verified in the handshake, or absent)
            if der:
                return _subject(der)
        headers = request.headers
        cert_value = headers.get(self.cfg.cert_header)
        dn_value = headers.get(self.cfg.dn_header)
        if cert_value is None and dn_value is None:
            return None
        source = request.remote or ""
        if not self.trusted(source):
            self._ignored(source)
            return None
        try:
            if cert_value is not None and cert_value.strip() not in _NONE:
                return header_cert_dn(cert_value)
            if dn_value is not None and dn_value.strip() not in _NONE:
                return x509names.canonical(_text(dn_value))
        except ValueError as e:   # (x509names.DnError too)
            log.warning("a client certificate header from proxy %s was refused: %s", source, e)
        return None

    def _ignored(self, source: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(source, -_LOG_EVERY_S) < _LOG_EVERY_S:
            return
        if len(self._logged) > 1000:
            self._logged.clear()
        self._logged[source] = now
        log.warning("client certificate header (%s / %s) from %s ignored: not a trusted proxy "
                    "(x509.trusted_proxies)", self.cfg.cert_header, self.cfg.dn_header, source or "?")
