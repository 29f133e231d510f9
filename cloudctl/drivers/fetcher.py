"""Downloads an image over HTTP(S) into a file, hashing as it arrives (the image fetcher).

The declared size (Content-Length) and the given digests are checked before the file is
renamed into place; anything else leaves no file behind.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp


class FetchError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Fetched:
    size: int
    sha256: str
    sha512: str


async def fetch(url: str, dest: Path, progress: Callable[[int, int | None], None],
                sha256: str | None = None, sha512: str | None = None, timeout_s: float = 3600) -> Fetched:
    """Download `url` to `dest` (via `dest.part`); `progress(done, total)` is called per chunk."""
    part = dest.with_name(dest.name + ".part")
    h256, h512 = hashlib.sha256(), hashlib.sha512()
    done = 0
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
            async with session.get(url) as resp:
                if resp.status != 200:
                    raise FetchError(f"GET {url}: HTTP {resp.status} {resp.reason}")
                total = resp.content_length
                f = await asyncio.to_thread(open, part, "wb")
                try:
                    async for chunk in resp.content.iter_chunked(1 << 20):
                        h256.update(chunk)
                        h512.update(chunk)
                        await asyncio.to_thread(f.write, chunk)
                        done += len(chunk)
                        progress(done, total)
                    await asyncio.to_thread(_sync_close, f)
                finally:
                    f.close()
        if total is not None and done != total:
            raise FetchError(f"GET {url}: received {done} bytes, the server declared {total}")
        for want, h, name in ((sha256, h256, "sha256"), (sha512, h512, "sha512")):
            if want and h.hexdigest() != want.lower():
                raise FetchError(f"{name} mismatch: expected {want}, received {h.hexdigest()}")
        await asyncio.to_thread(os.replace, part, dest)
    except aiohttp.ClientError as e:
        part.unlink(missing_ok=True)
        raise FetchError(f"GET {url}: {e}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return Fetched(done, h256.hexdigest(), h512.hexdigest())


def _sync_close(f: object) -> None:
    f.flush()  # type: ignore[attr-defined]
    os.fsync(f.fileno())  # type: ignore[attr-defined]
