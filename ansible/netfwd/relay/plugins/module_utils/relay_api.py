# -*- coding: utf-8 -*-
# Copyright: netfwd maintainers
# Apache License 2.0 (see the netfwd repository's pyproject.toml)
"""What the netfwd.relay modules share: the import check, the engine, a spec file for a dict spec.

The modules run on the managed node and call netfwd's Python API there (netfwd.engine.Engine,
netfwd.probe, netfwd.doctor), so no module parses netfwd's command-line output.
"""

from __future__ import annotations

import json
import os
import tempfile
import traceback
from contextlib import contextmanager

from ansible.module_utils.basic import missing_required_lib

try:
    from netfwd import __version__ as NETFWD_VERSION
except ImportError:
    NETFWD_VERSION = None
    NETFWD_IMPORT_ERROR = traceback.format_exc()
else:
    NETFWD_IMPORT_ERROR = None

# The options every engine-driving module takes (as `netfwd apply`'s --state-dir, --root, ...).
ENGINE_ARGS = dict(
    state_dir=dict(type="path"),
    root=dict(type="path", default="/"),
    backend=dict(type="str", default="auto",
                 choices=["auto", "iptables", "iptables-nft", "iptables-legacy", "libiptc", "nft", "firewalld"]),
    lock_timeout=dict(type="float", default=60.0),
    cluster=dict(type="str"),
)

SPEC_FILE = "ansible-spec.json"  # where a spec given as a dict is kept, inside the state directory


def require_netfwd(module, root_needed=True):
    """Fail the host clearly when netfwd is missing or the module is not root."""
    if NETFWD_IMPORT_ERROR is not None:
        module.fail_json(msg=missing_required_lib("netfwd", reason="the netfwd.relay modules call its Python API"),
                         exception=NETFWD_IMPORT_ERROR)
    if root_needed and os.geteuid() != 0:
        module.fail_json(msg="changing or reading the firewall needs root: use become: true")


def base_dir_of(params):
    """The state directory of every cluster (as `netfwd apply --state-dir`)."""
    from pathlib import Path

    if params.get("state_dir"):
        return Path(params["state_dir"])
    return Path(params["root"]) / "var/lib/netfwd"


def cluster_of(params):
    """The cluster a module acts on: the spec's (a dict's `cluster`, or a spec file's), else the
    `cluster` option, else the only cluster recorded on the relay (netfwd.engine.state.resolve_cluster).
    A `cluster` option naming another cluster than the spec's is bad input; so is no `cluster` on a
    relay that holds several."""
    from netfwd.engine.state import resolve_cluster
    from netfwd.errors import InputError

    spec, option = params.get("spec"), params.get("cluster")
    if isinstance(spec, dict) and isinstance(spec.get("cluster"), str):
        if option and option != spec["cluster"]:
            raise InputError("the spec is cluster %r, not %r" % (spec["cluster"], option), field="cluster")
        return resolve_cluster(base_dir_of(params), spec["cluster"], option_name="cluster")
    return resolve_cluster(base_dir_of(params), option, spec if isinstance(spec, str) else None,
                           option_name="cluster")


def state_dir_of(params):
    """The cluster's own state directory (records, lock, the kept spec)."""
    from netfwd.engine.state import cluster_dir

    return cluster_dir(base_dir_of(params), cluster_of(params))


def engine(module, messages):
    """An Engine for the module's state_dir/root/backend; its log lines collect in `messages`."""
    from pathlib import Path

    from netfwd.engine.core import Engine
    from netfwd.engine.state import migrate_legacy

    root = Path(module.params["root"])
    if not root.is_dir():
        module.fail_json(msg="root: %s is not a directory" % root)
    cluster = cluster_of(module.params)
    migrate_legacy(base_dir_of(module.params), cluster)
    return Engine(state_dir_of(module.params), root, module.params["backend"],
                  lock_wait=module.params["lock_timeout"], log=messages.append, cluster=cluster)


def status(module, messages):
    """`netfwd status` of every cluster recorded on the relay (or only of the `cluster` option's), as
    the CLI reports it: a list under `clusters`, and with exactly one cluster its report at the top
    level too."""
    from pathlib import Path

    from netfwd.engine.core import Engine
    from netfwd.engine.state import cluster_dir, clusters, migrate_legacy

    base, root = base_dir_of(module.params), Path(module.params["root"])
    reports = []
    for name in [cluster_of(module.params)] if module.params.get("cluster") else clusters(base):
        migrate_legacy(base, name)
        reports.append(Engine(cluster_dir(base, name), root, module.params["backend"],
                              lock_wait=module.params["lock_timeout"], log=messages.append, cluster=name).status())
    return {**(reports[0] if len(reports) == 1 else {}), "clusters": reports}


def spec_text(spec):
    """The canonical bytes of a spec given as a dict: the same dict gives the same file, so netfwd's
    no-change fast path (keyed on the spec's bytes) holds from one play to the next."""
    return json.dumps(spec, indent=2, sort_keys=True, default=str) + "\n"


@contextmanager
def spec_path(module, spec, keep):
    """A path to give the engine: `spec` itself when it is a path; a dict is written to the state
    directory (`keep`, for apply) or to a temporary file (check mode: nothing is left behind)."""
    if isinstance(spec, str):
        yield spec
        return
    if not isinstance(spec, dict):
        module.fail_json(msg="spec: give the spec as a dict, or a path on the managed node")
    text = spec_text(spec)
    if keep:
        from netfwd.safefiles import write_atomic

        directory = state_dir_of(module.params)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / SPEC_FILE
        try:
            same = path.read_text() == text
        except OSError:
            same = False
        if not same:
            write_atomic(path, text, mode=0o600)
        yield str(path)
        return
    handle, name = tempfile.mkstemp(prefix="netfwd-spec-", suffix=".json")
    try:
        with os.fdopen(handle, "w") as out:
            out.write(text)
        yield name
    finally:
        os.unlink(name)


def pending_of(params):
    """The commit-confirm waiting in the state directory, or None."""
    import time

    from netfwd.engine.state import State

    pending = State.load(state_dir_of(params)).pending
    if not pending:
        return None
    return {"id": pending["id"], "deadline": pending["deadline"],
            "seconds_left": round(max(0.0, pending["deadline"] - time.time()), 3),
            "timer_pid": pending.get("pid")}


def prepared_diff(plan):
    """Diff mode: the plan's + / - / ~ lines, as `netfwd plan` prints them."""
    return "".join(change.render() + "\n" for change in plan.changes())


def fail(module, problem, **extra):
    """A netfwd error fails the host with netfwd's own one-line message."""
    module.fail_json(msg=str(problem), error_type=type(problem).__name__,
                     exit_code=getattr(problem, "exit_code", 1), **extra)
