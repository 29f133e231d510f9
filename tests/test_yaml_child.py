"""The config's YAML parsed in a forked child (cloudctl/yaml_child.py): the data is what
`yaml.safe_load` gives in process, types included; errors keep their line; without a child
(fork refused, or the child dead) the text is parsed in process."""
from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudctl import yaml_child
from cloudctl.config import ConfigError, load_config

REPO = Path(__file__).resolve().parent.parent
TEXT = """
hosts: [{name: a, uri: "test:///default"}, {name: b}]
vlans: {100: blue, 200: [1, 2.5, .inf, null, true]}
when: 2026-12-07
at: 2026-12-07 10:30:00
raw: !!binary aGVsbG8=
set: !!set {x, y}
anchor: &a {k: v}
alias: *a
text: |
  two
  lines
"""


def test_the_data_is_what_safe_load_gives_in_process() -> None:
    got = yaml_child.safe_load(TEXT)
    assert got == yaml.safe_load(TEXT)
    assert got["vlans"][100] == "blue" and isinstance(got["when"], dt.date)
    assert got["raw"] == b"hello" and got["set"] == {"x", "y"}
    assert got["alias"] is got["anchor"]   # (an alias is the same object, as in process)


def test_the_parse_runs_in_another_process(tmp_path: Path) -> None:
    """A constructor that records its process's id: the child's, not ours."""
    class Probe(yaml.SafeLoader):
        pass
    seen = tmp_path / "pid"
    Probe.add_constructor("!pid", lambda loader, node: seen.write_text(str(os.getpid())) and None)
    real = yaml.safe_load
    try:
        yaml.safe_load = lambda text: yaml.load(text, Probe)   # (the child imports this same module: forked)
        yaml_child.safe_load("x: !pid here")
    finally:
        yaml.safe_load = real
    assert int(seen.read_text()) != os.getpid()


@pytest.mark.parametrize("text, line", [("a: [1, 2\nb: 3\n", 2), ("a: 1\n  b: 2\n", 2), ("k: v\n\t- x\n", 2)])
def test_an_error_keeps_its_problem_and_line(text: str, line: int) -> None:
    with pytest.raises(yaml_child.YamlError) as child:
        yaml_child.safe_load(text)
    with pytest.raises(yaml.YAMLError) as here:
        yaml.safe_load(text)
    assert child.value.line == line == here.value.problem_mark.line + 1   # type: ignore[attr-defined]
    assert child.value.problem == here.value.problem   # type: ignore[attr-defined]


def test_a_config_error_names_the_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "c.yaml"
    bad.write_text("state_dir: /x\nhosts: [\n")
    with pytest.raises(ConfigError, match=rf"config {bad} line 3: not valid YAML: "):
        load_config(bad)


def test_without_fork_the_text_is_parsed_in_process(monkeypatch: Any) -> None:
    def refused() -> int:
        raise OSError("no more processes")
    monkeypatch.setattr(os, "fork", refused)
    assert yaml_child.safe_load(TEXT) == yaml.safe_load(TEXT)
    with pytest.raises(yaml_child.YamlError):
        yaml_child.safe_load("a: [")


def test_a_child_that_dies_leaves_the_parse_to_the_parent(monkeypatch: Any) -> None:
    """The child killed before it answers (here: its pickling fails): the parent parses the text."""
    real = yaml_child._parse
    parent = os.getpid()

    def dying(text: str) -> Any:
        if os.getpid() != parent:
            os.kill(os.getpid(), 9)
        return real(text)
    monkeypatch.setattr(yaml_child, "_parse", dying)
    assert yaml_child.safe_load(TEXT) == yaml.safe_load(TEXT)


def test_the_cli_reads_its_config_without_yaml() -> None:
    """`cloudctl serve`'s steps before the server: the default config read and validated, neither
    PyYAML nor `pickle`'s Python module loaded in the process (the answer is read by `_pickle`)."""
    code = ("import sys; import cloudctl.cli; from cloudctl.config import load_config; c = load_config(None); "
            "print(len(c.hosts), 'yaml' in sys.modules, 'pickle' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hosts, yaml_loaded, pickle_loaded = done.stdout.split()
    assert int(hosts) > 0 and yaml_loaded == "False" and pickle_loaded == "False"
