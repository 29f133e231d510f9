"""YAML text parsed in a forked child, so the process that asks never imports PyYAML.

The controller reads YAML once, its config at start; imported for that, PyYAML's modules and its
C loader stay in the controller's memory for good (~1.5 MiB of RSS, issue 14's base RSS). A child
forked for the read imports it, parses, and sends the data back pickled over a pipe (what
`yaml.safe_load` makes: dicts with any keys, lists, strings, numbers, booleans, None, dates,
bytes, sets), then exits without running the parent's exit handlers. Where the child cannot be
made, the text is parsed in process, as before.

The parent reads the answer with `_pickle.loads`, CPython's C unpickler, which is what `pickle.loads`
is: `pickle`'s own module (its pure-Python pickler and unpickler, ~0.26 MiB) was imported by nothing
else a started controller loads. The child imports `pickle` after the fork.
"""
from __future__ import annotations

import os
from typing import Any


class YamlError(ValueError):
    """The text is not valid YAML: `problem` says why, `line` (1-based) where, when known."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem, self.line = problem, line


def safe_load(text: str) -> Any:
    """`yaml.safe_load(text)`, from a child when one can be forked; raises YamlError."""
    try:
        r, w = os.pipe()
    except OSError:
        return _answer(_parse(text))
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return _answer(_parse(text))
    if pid == 0:   # the child: never returns
        os.close(r)
        code = 1
        try:
            import pickle
            data = memoryview(pickle.dumps(_parse(text)))
            while data:
                data = data[os.write(w, data):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        raw = f.read()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0 or not raw:
        return _answer(_parse(text))   # (the child died: read it here rather than fail the start)
    return _answer(_loads(raw))


def _loads(raw: bytes) -> Any:
    try:
        from _pickle import loads  # (CPython's C unpickler: `pickle.loads` itself)
    except ImportError:   # (an interpreter without it)
        from pickle import loads
    return loads(raw)


def _parse(text: str) -> tuple[str, Any, int | None]:
    """("ok", data, None) or ("error", problem, line), picklable whatever YAML's error was."""
    import yaml
    try:
        return "ok", yaml.safe_load(text), None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        return "error", str(getattr(e, "problem", None) or e), mark.line + 1 if mark else None


def _answer(result: tuple[str, Any, int | None]) -> Any:
    kind, value, line = result
    if kind == "error":
        raise YamlError(value, line)
    return value
