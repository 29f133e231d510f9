"""One list of EC2 actions: the `@action` registry. Its modules are found by walking the package,
the model the server loads is trimmed to its names, and a handler without a model entry (or an
action without a real handler) stops the start-up with one line instead of answering
InvalidAction, or failing, later."""
from __future__ import annotations

import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import cloudctl.api.ec2.actions as actions_pkg
from cloudctl.api.ec2.actions import ACTIONS
from cloudctl.api.ec2.actions.registry import ActionsError, action, check_actions
from cloudctl.api.ec2.model import OPERATIONS, Ec2Model, Operation, load_model

from support import ROOT, write_config


def test_every_module_is_discovered_and_operations_come_from_the_registry() -> None:
    modules = {f"{actions_pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(actions_pkg.__path__)}
    assert {fn.__module__ for fn in ACTIONS.values()} == modules - {f"{actions_pkg.__name__}.registry"}
    assert sorted(OPERATIONS) == sorted(ACTIONS) and len(ACTIONS) >= 52


def test_the_registry_matches_botocores_model(model_cache: Path) -> None:
    check_actions(load_model(ACTIONS, model_cache))


def _model(*ops: str) -> Ec2Model:
    return Ec2Model("2016-11-15", "ns", "0", {op: Operation(op, None, None) for op in ops}, {})


def test_mismatches_are_one_line_errors() -> None:
    async def describe_regions(*args: Any) -> dict[str, Any]:
        return {}

    def not_async(*args: Any) -> dict[str, Any]:
        return {}

    cases: list[tuple[dict[str, Any], Ec2Model, str]] = [
        ({"DescribeRegions": describe_regions}, _model(), r"EC2 action DescribeRegions \(.*describe_regions\) has no "
                                                          "operation in botocore's EC2 model"),
        ({"DescribeRegions": not_async}, _model("DescribeRegions"),
         "EC2 action DescribeRegions has no handler: .*not_async is not an async function"),
        ({"DescribeRegions": None}, _model("DescribeRegions"), "EC2 action DescribeRegions has no handler"),
        ({}, _model("DescribeRegions"), r"EC2 action DescribeRegions is in the loaded model but has no handler "
                                        r"\(no @action\('DescribeRegions'\)\)"),
    ]
    for table, model, message in cases:
        with pytest.raises(ActionsError, match=message) as e:
            check_actions(model, table)
        assert "\n" not in str(e.value)
    check_actions(_model("DescribeRegions"), {"DescribeRegions": describe_regions})


def test_a_second_handler_for_an_action_is_refused() -> None:
    before = dict(ACTIONS)

    async def again(*args: Any) -> dict[str, Any]:
        return {}

    with pytest.raises(ActionsError, match=r"EC2 action DescribeRegions has two handlers: "
                                           r"cloudctl\.api\.ec2\.actions\.catalog\..* and .*again"):
        action("DescribeRegions")(again)
    assert ACTIONS == before


# A server started with one more handler registered, the way a new actions module would.
_START = textwrap.dedent(
    """
    import sys
    from cloudctl.api.ec2.actions.registry import action

    {handler}

    action(sys.argv[2])(handler)
    from cloudctl.cli import main
    main(["--config", sys.argv[1], "serve"])
    """
)


@pytest.mark.parametrize("name, handler, message", [
    ("DescribeNoSuchThings", "async def handler(cloud, caller, req): return {}",
     "cloudctl: building the EC2 model failed (1): operation DescribeNoSuchThings is not in botocore's EC2 model"),
    ("DescribeHosts", "def handler(cloud, caller, req): return {}",
     "cloudctl: EC2 action DescribeHosts has no handler: __main__.handler is not an async function"),
])
def test_start_up_refuses_a_mismatch_in_one_line(tmp_path: Path, model_cache: Path, name: str, handler: str,
                                                 message: str) -> None:
    cfg = write_config(tmp_path, model_cache)
    proc = subprocess.run([sys.executable, "-c", _START.format(handler=handler), str(cfg), name],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == message
    assert "cloudctl ready" not in proc.stdout
