"""Code run on several threads at once, switching as often as the interpreter allows."""
from __future__ import annotations

import sys
import threading
from collections.abc import Callable


def racing(work: Callable[[int], None], threads: int = 4) -> list[BaseException]:
    """`work(k)` for k < `threads`, each on its own thread at a 1 us switch interval (a module
    cache's compound steps are interrupted inside); what they raised (a thread's exception fails
    nothing by itself)."""
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as e:   # noqa: BLE001  (reported to the caller)
            errors.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        running = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for t in running:
            t.start()
        for t in running:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    return errors
