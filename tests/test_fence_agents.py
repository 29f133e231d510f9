"""The command fence agent with real programs: exit status, output in the reason, timeout with
the whole process group killed, and the event loop kept free while it runs."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from cloudctl.drivers.fence import CommandFence, FenceError


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_exit_zero_is_a_fence_and_gets_the_host_last(tmp_path: Path) -> None:
    agent = CommandFence([_script(tmp_path / "f", 'echo "off: $*"\n'), "--outlet", "7"], timeout_s=10)
    assert asyncio.run(agent.fence("far")).endswith("exited 0: off: --outlet 7 far")


def test_failure_reason_is_the_programs_last_line(tmp_path: Path) -> None:
    agent = CommandFence([_script(tmp_path / "f", 'echo trying; echo "PDU busy" >&2; exit 4\n')], timeout_s=10)
    with pytest.raises(FenceError, match="exited 4: PDU busy"):
        asyncio.run(agent.fence("far"))


def test_host_name_is_one_argument_never_a_shell(tmp_path: Path) -> None:
    out = tmp_path / "args"
    agent = CommandFence([_script(tmp_path / "f", f'printf "%s|" "$@" > {out}\n')], timeout_s=10)
    asyncio.run(agent.fence("far; touch pwned"))
    assert out.read_text() == "far; touch pwned|" and not (tmp_path / "pwned").exists()


def test_timeout_kills_the_group_and_the_loop_keeps_running(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    agent = CommandFence([_script(tmp_path / "f", f"sleep 60 & echo $! > {pids}; wait\n")], timeout_s=1.0)

    async def main() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1
        t = asyncio.create_task(tick())
        with pytest.raises(FenceError, match="no answer within 1 s"):
            await agent.fence("far")
        t.cancel()
        return ticks
    assert asyncio.run(main()) > 5
    child = int(pids.read_text())
    deadline = time.time() + 5
    while _alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not _alive(child), "the agent's child outlived the timeout"


def test_missing_program(tmp_path: Path) -> None:
    with pytest.raises(FenceError, match="cannot run"):
        asyncio.run(CommandFence([str(tmp_path / "nope")], timeout_s=1).fence("far"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"
