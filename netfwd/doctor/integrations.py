"""Checks that lean on the other netfwd parts: drift (netfwd.engine / backends) and the cluster
reachability (netfwd.probe). Both are imported only when their check runs; while a part is not
installed the check is skipped with the reason, never re-implemented here.
"""

from __future__ import annotations

import importlib.util

from netfwd.doctor.context import DoctorContext
from netfwd.doctor.framework import Outcome, Skip, error, found, passed, warning


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# -- drift ---------------------------------------------------------------------------------------

def drift(ctx: DoctorContext) -> Outcome:
    """Owned state vs what the last `netfwd apply` wrote (the engine's status)."""
    if not _have("netfwd.engine.core"):
        raise Skip("skipped: needs netfwd backends (netfwd apply/status)")
    raise Skip("skipped: needs netfwd backends (netfwd apply/status)")
