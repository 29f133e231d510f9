"""The storage driver on `qemu-img` (Debian package `qemu-utils`), run as child processes.

Each call is one `qemu-img` process started with `asyncio.create_subprocess_exec`, so a long
copy never holds up the event loop. Images are written next to their destination (`.part`)
and renamed into place when complete: a file at the final path is always a whole image.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from .base import ImageInfo, StorageDriver, StorageError


class QemuImgStorage(StorageDriver):
    def __init__(self, qemu_img: str = "qemu-img") -> None:
        self._tool = qemu_img
        self._path: str | None = None

    def _exe(self) -> str:
        if self._path is None:
            found = shutil.which(self._tool)
            if found is None:
                raise StorageError(f"{self._tool} not found; install the qemu-utils package")
            self._path = found
        return self._path

    async def _run(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            self._exe(), *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        try:
            out, err = await proc.communicate()
        finally:
            if proc.returncode is None:   # cancelled: do not leave the copy running
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip() or out.decode(errors="replace").strip()
            raise StorageError(text or f"qemu-img {args[0]} exited with {proc.returncode}")
        return out.decode(errors="replace")

    async def _atomic(self, dst: Path, *args_before_dst: str, tail: tuple[str, ...] = ()) -> None:
        """Run qemu-img writing `dst.part`, then rename it to `dst`."""
        dst.parent.mkdir(parents=True, exist_ok=True)
        part = dst.with_name(dst.name + ".part")
        try:
            await self._run(*args_before_dst, str(part), *tail)
            await asyncio.get_running_loop().run_in_executor(None, os.replace, part, dst)
        except BaseException:
            part.unlink(missing_ok=True)
            raise

    async def create(self, path: Path, size_gib: int, backing: Path | None = None) -> None:
        args = ["create", "-q", "-f", "qcow2"]
        if backing is not None:
            fmt = (await self.info(backing)).format
            args += ["-b", str(Path(backing).resolve()), "-F", fmt]
        await self._atomic(path, *args, tail=(f"{size_gib}G",))

    async def copy(self, src: Path, dst: Path) -> None:
        # -U: read an image a running guest holds open (a crash-consistent point-in-time read
        # at best; a quiesced guest or a stopped instance gives a clean one).
        await self._atomic(dst, "convert", "-U", "-O", "qcow2", str(src))

    async def resize(self, path: Path, size_gib: int) -> None:
        await self._run("resize", "-q", str(path), f"{size_gib}G")

    async def delete(self, path: Path) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, _unlink, Path(path))

    async def info(self, path: Path) -> ImageInfo:
        out = await self._run("info", "-U", "--output=json", str(path))
        try:
            data = json.loads(out)
            refs = [data.get("backing-filename"), data.get("full-backing-filename")]
            specific = (data.get("format-specific") or {}).get("data") or {}
            refs.append(specific.get("data-file"))
            refs += [e.get("filename") for e in specific.get("extents") or () if isinstance(e, dict)]
            return ImageInfo(str(data["format"]), int(data["virtual-size"]), int(data.get("actual-size", 0)),
                             tuple(str(r) for r in refs if r and str(r) != str(path)))
        except (ValueError, KeyError, TypeError) as e:
            raise StorageError(f"qemu-img info {path}: unexpected output: {e}") from None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        raise StorageError(f"cannot remove {path}: {e.strerror}") from None
    path.with_name(path.name + ".part").unlink(missing_ok=True)
