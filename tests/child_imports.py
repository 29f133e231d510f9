"""What a fresh interpreter has imported after the CLI's start-up steps: settings read once by a
library at its load (GLib's G_SLICE, aiohttp's CA bundle) must be in place before that load."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def loaded_after(imports: str, modules: tuple[str, ...]) -> list[bool]:
    """For each of `modules`, whether it is loaded once `imports` ran and the default config was
    validated (as `cloudctl serve` does before the server starts), in a child with a bare environment."""
    code = (f"import sys; {imports}\n"
            "from cloudctl.config import load_config\n"
            "load_config(None)\n"
            f"print(*(m in sys.modules for m in {modules!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return [w == "True" for w in done.stdout.split()]
