"""Downloads an image over HTTP(S) into a file, hashing as it arrives (the image fetcher).

The declared size (Content-Length) and the given digests are checked before the file is
renamed into place; anything else leaves no file behind.
"""
from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver

from ..slim import dataclass

MAX_REDIRECTS = 5


class FetchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Fetched:
    size: int
    sha256: str
    sha512: str


def forbidden_address(addr: str) -> bool:
    """Addresses a user's URL must not make the controller reach: itself, the link-local
    range (the metadata service lives there), and addresses that are not unicast hosts."""
    try:
        ip = ipaddress.ip_address(addr.split("%")[0])
    except ValueError:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast or ip.is_reserved


def check_url(url: str, refuse_local: bool) -> None:
    """http(s) only; with `refuse_local`, a literal address must not be a forbidden one."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"'{url}' is not an http(s) URL")
    host = parts.hostname.lower()
    if not refuse_local:
        return
    if (_is_ip(host) and forbidden_address(host)) or host == "localhost" or host.endswith(".localhost"):
        raise FetchError(f"'{url}' points at a loopback or link-local address, which image URLs may not")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


class _GuardedResolver(AbstractResolver):
    """Resolves names, then drops forbidden addresses: checked at connect time, so a name that
    changes its answer after the API call (DNS rebinding) still cannot reach them."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if not forbidden_address(r["host"])]
        if not allowed:
            raise OSError(f"{host} resolves only to loopback or link-local addresses, which image URLs may not reach")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


async def fetch(url: str, dest: Path, progress: Callable[[int, int | None], None],
                sha256: str | None = None, sha512: str | None = None, timeout_s: float = 3600,
                refuse_local: bool = False) -> Fetched:
    """Download `url` to `dest` (via `dest.part`); `progress(done, total)` is called per chunk.

    With `refuse_local` (URLs from users) no hop of the download, redirects included, may
    reach a loopback or link-local address."""
    part = dest.with_name(dest.name + ".part")
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    done = 0
    total: int | None = None
    check_url(url, refuse_local)
    connector = aiohttp.TCPConnector(resolver=_GuardedResolver()) if refuse_local else None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s),
                                         connector=connector) as session:
            for _ in range(MAX_REDIRECTS + 1):
                resp = await session.get(url, allow_redirects=False)
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    resp.release()
                    url = urljoin(url, resp.headers["Location"])
                    check_url(url, refuse_local)
                    continue
                break
            else:
                raise FetchError(f"GET {url}: more than {MAX_REDIRECTS} redirects")
            async with resp:
                if resp.status != 200:
                    raise FetchError(f"GET {url}: HTTP {resp.status} {resp.reason}")
                total = resp.content_length
                done = await _write(resp.content.iter_chunked(1 << 20), part, "wb", (h256, h512), 0,
                                    lambda n: progress(n, total))
        if total is not None and done != total:
            raise FetchError(f"GET {url}: received {done} bytes, the server declared {total}")
        for want, h, name in ((sha256, h256, "sha256"), (sha512, h512, "sha512")):
            if want and h.hexdigest() != want.lower():
                raise FetchError(f"{name} mismatch: expected {want}, received {h.hexdigest()}")
        await asyncio.to_thread(os.replace, part, dest)
    except aiohttp.ClientPayloadError:
        part.unlink(missing_ok=True)
        raise FetchError(f"GET {url}: the transfer ended early: received {done} bytes, "
                         f"the server declared {total}") from None
    except (aiohttp.ClientError, OSError) as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"GET {url}: {e}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Fetched(done, h256.hexdigest(), h512.hexdigest())


async def _write(chunks: AsyncIterator[bytes], part: Path, mode: str, hashes: tuple[Any, ...], done: int,
                 progress: Callable[[int], None], limit: int | None = None, url: str = "") -> int:
    """Write and hash chunks as they arrive (file I/O off the loop); returns the bytes reached.
    More than `limit` bytes in all is a Rejected("size")."""
    f = await asyncio.to_thread(open, part, mode)
    try:
        async for chunk in chunks:
            if limit is not None and done + len(chunk) > limit:
                raise Rejected("size", f"GET {url}: more than the declared {limit} bytes")
            for h in hashes:
                h.update(chunk)
            await asyncio.to_thread(f.write, chunk)
            done += len(chunk)
            progress(done)
        await asyncio.to_thread(_sync_close, f)
    finally:
        f.close()
    return done


def _sync_close(f: object) -> None:
    f.flush()  # type: ignore[attr-defined]
    os.fsync(f.fileno())  # type: ignore[attr-defined]


class Incomplete(FetchError):
    """The transfer stopped early; the partial file is kept so the next attempt resumes it."""


class Rejected(FetchError):
    """The bytes are wrong (too many, or the digest differs); the partial file is gone."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _rehash(part: Path) -> tuple[int, Any, Any]:
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    n = 0
    try:
        with open(part, "rb") as f:
            while chunk := f.read(1 << 20):
                h256.update(chunk)
                h512.update(chunk)
                n += len(chunk)
    except FileNotFoundError:
        pass
    return n, h256, h512


async def fetch_resumable(url: str, part: Path, size: int, sha512: str, progress: Callable[[int, int], None],
                          timeout_s: float = 3600) -> Fetched:
    """Bring `part` up to `size` bytes from `url`, resuming with `Range`, then check its sha512.

    Hash state cannot be saved, so an existing part is re-hashed first. More than `size` bytes,
    or a digest mismatch, deletes the part (it must never be resumed from); a short transfer
    raises Incomplete and leaves it for the next attempt. The caller renames it into place.
    """
    have, h256, h512 = await asyncio.to_thread(_rehash, part)
    if have > size:
        await asyncio.to_thread(part.unlink)
        have, h256, h512 = 0, hashlib.sha256(), hashlib.sha512()
    progress(have, size)
    try:
        if have < size:
            headers = {"Range": f"bytes={have}-"} if have else {}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
                async with session.get(url, headers=headers) as resp:
                    if resp.status == 206 and have:
                        start = (resp.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
                        if start != str(have):
                            raise Incomplete(f"GET {url}: asked for bytes {have}-, got {start}-")
                        mode = "ab"
                    elif resp.status == 200:   # no range support: start over
                        have, h256, h512 = 0, hashlib.sha256(), hashlib.sha512()
                        mode = "wb"
                    else:
                        raise Incomplete(f"GET {url}: HTTP {resp.status} {resp.reason}")
                    # Whatever has arrived is written at once: a transfer cut short keeps it all.
                    have = await _write(resp.content.iter_any(), part, mode, (h256, h512), have,
                                        lambda n: progress(n, size), limit=size, url=url)
    except Rejected:
        part.unlink(missing_ok=True)
        raise
    except (aiohttp.ClientError, asyncio.TimeoutError) as e:
        raise Incomplete(f"GET {url}: {e or type(e).__name__}") from None
    if have < size:
        raise Incomplete(f"GET {url}: {have} of {size} bytes so far")
    if h512.hexdigest() != sha512.lower():
        part.unlink(missing_ok=True)
        raise Rejected("sha512", f"sha512 mismatch: the list declares {sha512[:16]}..., "
                                 f"the bytes hash to {h512.hexdigest()[:16]}...")
    return Fetched(have, h256.hexdigest(), h512.hexdigest())
