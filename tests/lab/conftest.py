"""The lab tier: tests that need root and host daemons (OVS, sshd, ipmi_sim, nftables, network
namespaces, tmpfs mounts). Everything here is marked ``lab``, so `make check` leaves it out and
`make test-lab` runs it, serially: these tests share the host's OVS, namespaces and mounts."""
from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.lab)
