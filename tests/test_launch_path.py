"""What the launch path's CPU cuts must not change: a security group's member addresses, kept as
rows come and go, are what a recomputation from its members gives (and a change reaches the
filters); libvirt's watch and timer updates, coalesced and dropped when they change nothing,
still leave the loop watching what libvirt last asked for."""
from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from cloudctl.core.security_groups import _MembersIndex
from cloudctl.drivers.hypervisor import libvirt as lv
from cloudctl.store.records import Instance
from cloudctl.store.store import Store

# -- a security group's member addresses --------------------------------------------------------------
steps = st.lists(st.tuples(st.integers(0, 9),                               # which instance
                           st.sampled_from([None, "10.0.0.1", "10.0.0.2", "10.0.0.10", "9.9.9.9"]),
                           st.sampled_from(["pending", "running", "stopped", "shutting-down", "terminated", "gone"]),
                           st.sampled_from([(), ("sg-a",), ("sg-b",), ("sg-a", "sg-b")])),
                 max_size=60)


@given(steps)
def test_group_addresses_follow_their_members(ops: list[tuple[int, str | None, str, tuple[str, ...]]]) -> None:
    """Instances put, changed and deleted in any order (two on one address, as on two networks):
    each group's sorted live addresses equal a recomputation from its members, and every change of
    them was reported with the row that made it."""
    s = Store(Path("/nonexistent"))   # (tables and indexes only: never opened)
    table = s.table(Instance)
    reported: list[tuple[str, list[str]]] = []
    index = table.add_index(_MembersIndex(lambda row, moved: reported.append((row.id, list(moved)))))
    before = {g: list(index.ips(g)) for g in ("sg-a", "sg-b")}
    for n, ip, state, groups in ops:
        iid = f"i-{n}"
        reported.clear()
        if state == "gone":
            table._set(iid, None)
        else:
            table._set(iid, Instance(id=iid, owner="o", reservation_id="r", image_id="ami", instance_type="t",
                                     host="h", zone="z", state=state, launch_time=0.0, private_ip=ip,
                                     group_ids=groups))
        for g in ("sg-a", "sg-b"):
            want = sorted({i.private_ip for i in table.values()
                           if g in i.group_ids and i.private_ip and i.state not in ("shutting-down", "terminated")})
            assert index.ips(g) == want
            if want != before[g]:
                assert any(g in moved for _, moved in reported)
            before[g] = want
        assert all(rid == iid for rid, _ in reported)


# -- libvirt's event hooks, called from other threads -------------------------------------------------
def test_watch_updates_from_threads_end_as_libvirt_last_asked() -> None:
    """A socket watch turned off and on from worker threads (as a remote connection does around
    each RPC), many times before the loop runs: the loop ends up watching it exactly when libvirt
    last asked it to, and calls libvirt back then only; a timer updated to its own value still
    fires, and one turned off from a thread does not."""
    loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    got: list[tuple[int, int]] = []
    fired: list[int] = []
    try:
        bridge = lv._EventBridge(loop)
        loop.run_until_complete(asyncio.sleep(0))

        def from_thread(fn: Any, *args: Any) -> Any:
            out: list[Any] = []
            t = threading.Thread(target=lambda: out.append(fn(*args)))
            t.start()
            t.join()
            return out[0]

        watch = from_thread(bridge._add_handle, a.fileno(), 0, lambda w, fd, ev, _o: got.append((w, ev)), None)
        for _ in range(5):   # off and on, queued together: replayed as the last
            from_thread(bridge._update_handle, watch, 0)
            from_thread(bridge._update_handle, watch, lv._READ)
        from_thread(bridge._update_handle, watch, lv._READ)   # (the same again: dropped)
        b.send(b"x")
        loop.run_until_complete(asyncio.sleep(0.05))
        assert got and all(g == (watch, lv._READ) for g in got)

        from_thread(bridge._update_handle, watch, lv._READ)
        from_thread(bridge._update_handle, watch, 0)           # off, last: no more callbacks
        loop.run_until_complete(asyncio.sleep(0.01))
        got.clear()
        loop.run_until_complete(asyncio.sleep(0.05))
        assert got == []
        from_thread(bridge._update_handle, watch, lv._READ)   # on again: the pending byte is seen
        loop.run_until_complete(asyncio.sleep(0.05))
        assert got and got[0] == (watch, lv._READ)

        timer = from_thread(bridge._add_timeout, 10, lambda t, _o: fired.append(t), None)
        from_thread(bridge._update_timeout, timer, 10)
        loop.run_until_complete(asyncio.sleep(0.1))
        assert fired and set(fired) == {timer}
        from_thread(bridge._update_timeout, timer, 0)
        from_thread(bridge._update_timeout, timer, -1)
        loop.run_until_complete(asyncio.sleep(0.05))
        fired.clear()
        loop.run_until_complete(asyncio.sleep(0.1))
        assert fired == []
        assert from_thread(bridge._remove_handle, watch) == 0 and from_thread(bridge._remove_timeout, timer) == 0
        assert from_thread(bridge._update_handle, watch, lv._READ) is None   # (a removed watch: nothing queued)
        loop.run_until_complete(asyncio.sleep(0.01))
        assert not bridge.callbacks and not bridge._want and not bridge._queued
    finally:
        a.close()
        b.close()
        loop.close()
