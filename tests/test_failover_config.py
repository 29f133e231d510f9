"""Host-failure policy in the config: precedence, and combinations that could never work are
refused at load with one line."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cloudctl.config import ConfigError, FenceCommand, FenceIpmi, load_config

from support import DEFAULT_CONFIG, write_config

NODE = str(DEFAULT_CONFIG.parent / "hosts/host-b.xml")


def _hosts(**b1: Any) -> list[dict[str, Any]]:
    """Three hosts of zone 1b: b1 (customised), b2 shared, b3 not shared."""
    return [{"name": "b1", "uri": "test:///", "node_xml": NODE, "zone": "cloudctl-1b", **b1},
            {"name": "b2", "uri": "test:///", "node_xml": NODE, "zone": "cloudctl-1b", "shared_storage": True},
            {"name": "b3", "uri": "test:///", "node_xml": NODE, "zone": "cloudctl-1b"}]


TYPES = {"t3.nano": {"vcpus": 1, "memory_mib": 512, "failure_policy": "restart"},
         "t3.micro": {"vcpus": 1, "memory_mib": 512, "failure_policy": "none"},
         "t3.small": {"vcpus": 1, "memory_mib": 512}}


@pytest.mark.parametrize("b1,glob,types,message", [
    ({"failure_policy": "restart"}, "none", None,
     "hosts: 'b1' has failure_policy restart but not shared_storage"),
    ({"failure_policy": "restart", "shared_storage": True, "zone": "cloudctl-1a"}, "none", None,
     "hosts: 'b1' has failure_policy restart but no other host of zone 'cloudctl-1a' has shared_storage"),
    ({}, "restart", None, "monitor: failure_policy restart, but no host could ever restart an instance"),
    ({}, "none", TYPES, "instance_types.t3.nano: failure_policy restart, but no host could ever restart"),
    ({"failure_policy": "sometimes"}, "none", None, "hosts.0.failure_policy"),
    ({"fence": {"kind": "ipmi", "host": "10.0.0.9", "user": "admin"}}, "none", None, "hosts.0.fence.ipmi.password"),
    ({"fence": {"kind": "ssh", "host": "10.0.0.9"}}, "none", None, "hosts.0.fence"),
    ({"fence": {"kind": "command", "argv": []}}, "none", None, "hosts.0.fence.command.argv"),
    ({"fence": {"kind": "command", "argv": ["/nonexistent/fence-pdu", "-o", "off"]}}, "none", None,
     "hosts.0.fence.argv: /nonexistent/fence-pdu is not an executable file"),
    ({"fence": {"kind": "command", "argv": ["no-such-fence-program-here"]}}, "none", None,
     "hosts.0.fence.argv: no-such-fence-program-here is not an executable file"),
])
def test_impossible_policies_are_refused(tmp_path: Path, model_cache: Path, b1: dict[str, Any], glob: str,
                                         types: dict[str, Any] | None, message: str) -> None:
    extra = {"instance_types": types} if types else {}
    path = write_config(tmp_path, model_cache, hosts=_hosts(**b1), networks=[], subnets={},
                        monitor={"failure_policy": glob}, **extra)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_precedence_type_then_host_then_global(tmp_path: Path, model_cache: Path) -> None:
    agent = tmp_path / "fence-pdu"
    agent.write_text("#!/bin/sh\nexit 0\n")
    agent.chmod(0o755)
    cfg = load_config(write_config(
        tmp_path, model_cache, networks=[], subnets={}, instance_types=TYPES, monitor={"failure_policy": "restart"},
        hosts=_hosts(shared_storage=True, failure_policy="none",
                     fence={"kind": "command", "argv": ["./fence-pdu", "--outlet", "7"]})))
    b1, b2, b3 = cfg.hosts
    got = {(h.name, t): cfg.failure_policy(h, t) for h in (b1, b2, b3) for t in TYPES}
    assert got == {
        ("b1", "t3.nano"): "restart", ("b1", "t3.micro"): "none", ("b1", "t3.small"): "none",    # host: none
        ("b2", "t3.nano"): "restart", ("b2", "t3.micro"): "none", ("b2", "t3.small"): "restart",  # global
        ("b3", "t3.nano"): "none", ("b3", "t3.micro"): "none", ("b3", "t3.small"): "none",   # not shared
    }
    # The agent's program is resolved against the config's directory once, at load.
    assert isinstance(b1.fence, FenceCommand) and b1.fence.argv == [str(agent), "--outlet", "7"]


def test_ipmi_fence_defaults(tmp_path: Path, model_cache: Path) -> None:
    cfg = load_config(write_config(tmp_path, model_cache, networks=[], subnets={}, hosts=_hosts(
        fence={"kind": "ipmi", "host": "10.0.0.9", "user": "admin", "password": "pw"})))
    fence = cfg.hosts[0].fence
    assert isinstance(fence, FenceIpmi) and fence.port == 623 and fence.timeout_s == 60
    assert cfg.monitor.failure_policy == "none" and cfg.failure_policy(cfg.hosts[1], "t3.nano") == "none"
