"""Checks that lean on the other netfwd parts: drift (netfwd.engine and its backends).

Drift is the engine's own answer (`netfwd status`): owned state read by the backend that applied it,
compared with what that apply wrote. Nothing of it is re-implemented here. The engine acts in the
namespace of the thread that calls it, so it runs in a short-lived thread that enters the relay's
namespace first (setns(2) is per thread): the doctor process itself never moves.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from netfwd import host
from netfwd.doctor.context import DoctorContext
from netfwd.doctor.framework import Outcome, Skip, error, found, warning

TIMEOUT = 30.0


def _have(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def drift(ctx: DoctorContext) -> Outcome:
    """Owned state vs what the last `netfwd apply` wrote, pending confirms and interrupted changes."""
    if not (_have("netfwd.engine.core") and _have("netfwd.backends")):
        raise Skip("skipped: needs netfwd backends (netfwd apply/status)")
    from netfwd.engine.state import State, cluster_dir, clusters, default_dir

    relay = ctx.need_relay()
    base = default_dir(relay.root, relay.netns)
    found: list[tuple[dict[str, Any], State]] = []
    for cluster in clusters(base):  # every cluster on the relay; the first that drifted speaks
        directory = cluster_dir(base, cluster)
        state = State.load(directory)
        if state.applied and state.backend:
            found.append((host.in_namespace(relay.netns, _status_of(directory, relay.root), TIMEOUT), state))
    if not found:
        raise Skip(f"nothing applied with `netfwd apply` here (no record in {base})")
    report, state = next((item for item in found if item[0].get("drift")), found[-1])
    return _findings(report, state, ctx)


def _status_of(directory: Path, root: Path) -> Callable[[], dict[str, Any]]:
    return lambda: _status(directory, root)


def _status(directory: Path, root: Path) -> dict[str, Any]:
    from netfwd.engine.core import Engine

    return Engine(directory, root, "auto", lock_wait=10.0, log=lambda message: None).status()


def _findings(report: dict[str, Any], state, ctx: DoctorContext) -> Outcome:
    applied = report.get("applied") or {}
    drift_ = report.get("drift")
    summary = (f"drifted from change {applied.get('id')} ({report.get('backend')})" if drift_ else
               f"in step with change {applied.get('id')} ({report.get('backend')})")
    problems = []
    if drift_:
        changes = ", ".join(f"{c['op']} {c['kind']} {c['key']}" for c in drift_.get("changes", [])[:3])
        problems.append(error(f"netfwd's owned state differs from change {applied.get('id')}: "
                              f"{drift_.get('lines_missing', 0)} line(s) missing, {drift_.get('lines_appeared', 0)} "
                              f"appeared ({changes}); {drift_.get('hint', '')}",
                              "netfwd plan SPEC shows what `netfwd apply SPEC` would restore; then apply"))
    pending = report.get("pending")
    if pending:
        if pending.get("timer_alive"):
            problems.append(warning(f"change {pending['id']} rolls back in {pending['seconds_left']:.0f} s unless "
                                    "confirmed", "netfwd confirm (once the relay works as intended)"))
        else:
            problems.append(error(f"change {pending['id']} awaits confirmation but its rollback timer is not "
                                  "running", "netfwd confirm, or netfwd rollback"))
    if report.get("interrupted"):
        problems.append(error(f"change {report['interrupted']} was interrupted",
                              "netfwd apply SPEC (it finishes or undoes the interrupted change first)"))
    if ctx.spec is not None and applied.get("spec") and ctx.spec.origin and \
            Path(applied["spec"]).name != Path(ctx.spec.origin).name:
        problems.append(warning(f"the last apply used {applied['spec']}, not {ctx.spec.origin}",
                                f"netfwd plan {ctx.spec.origin} shows the difference"))
    return found(problems, summary)


