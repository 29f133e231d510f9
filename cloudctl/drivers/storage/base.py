"""The storage driver contract: create, copy, resize, delete and inspect disk-image files.

Like the hypervisor contract, it knows nothing about volumes, snapshots or users: it speaks
paths and sizes. Every method is a coroutine and never blocks the event loop.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import NamedTuple

GIB = 1024 ** 3


class StorageError(Exception):
    """A storage operation failed; the message is the tool's own text (e.g. qemu-img's stderr)."""


class ImageInfo(NamedTuple):
    format: str          # "qcow2", "raw", ...
    virtual_size: int    # bytes the guest sees
    actual_size: int     # bytes allocated on the host
    # Other files the image names (a backing file, a qcow2 external data file): qemu opens
    # them when a guest uses the image, so an image from outside must name none.
    references: tuple[str, ...] = ()


class StorageDriver(ABC):
    @abstractmethod
    async def create(self, path: Path, size_gib: int, backing: Path | None = None) -> None:
        """A new, empty (sparse) qcow2 image of `size_gib` GiB at `path`, replacing any file there.

        With `backing`, the image is a copy-on-write overlay over that file (which must then
        outlive it).
        """

    @abstractmethod
    async def copy(self, src: Path, dst: Path) -> None:
        """A standalone qcow2 copy of `src` at `dst` (backing chains flattened, holes kept)."""

    @abstractmethod
    async def resize(self, path: Path, size_gib: int) -> None:
        """Grow the image's virtual size to `size_gib` GiB."""

    @abstractmethod
    async def delete(self, path: Path) -> None:
        """Remove the image; a no-op if it is already gone."""

    @abstractmethod
    async def info(self, path: Path) -> ImageInfo:
        ...
