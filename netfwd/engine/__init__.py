"""The change life cycle, once for every backend (see netfwd.engine.core).

    state.py   the state directory and its records     files.py   atomic files, the state lock
    core.py    Engine: plan/apply/confirm/rollback/remove/status, recovery
    timer.py   the detached commit-confirm timer        sysctl.py  forwarding on, and persisted

Kept import-free so that `python -m netfwd.engine.timer` loads only what the timer needs.
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("Engine", "Outcome", "NothingToDo"):
        from netfwd.engine import core

        return getattr(core, name)
    raise AttributeError(name)
