"""The state directory: what netfwd applied, what it can roll back to, what awaits confirmation.

Each cluster has its own, STATE_DIR = BASE/clusters/<cluster> (BASE: --state-dir, else
ROOT/var/lib/netfwd), so clusters sharing a relay never share records, snapshots or locks.
Earlier versions kept one cluster's records in BASE itself; :func:`migrate_legacy` moves them.

    STATE_DIR/state.json           records (below), replaced atomically
    STATE_DIR/applied.txt          the owned state of the last change (the drift reference)
    STATE_DIR/snapshots/<id>.txt   the owned state before change <id> (what `rollback` restores)
    STATE_DIR/journal.json         exists only while a transaction is being written
    STATE_DIR/lock, timer.log

state.json:
    backend   the backend of the last change (`--backend auto` sticks to it)
    root      where persisted files go (the commit-confirm timer needs it)
    applied   {id, at, op, spec, spec_key, forwards, digest, fingerprint} of the live change
    rollback  {id, snapshot, snapshot_digest, previous} - undo of the last change (`previous` = the
              applied before it; the snapshot must still have its sha256 `snapshot_digest` to be restored)
    pending   {id, deadline, timeout, pid, start} - a commit-confirm waiting for `netfwd confirm`
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netfwd import trust
from netfwd.errors import EnvironmentProblem
from netfwd.owned import CLUSTER_RE
from netfwd.safefiles import read_json, write_atomic, write_json

FORMAT = 1
DIR_MODE = 0o700  # the state directory and its subdirectories: root's alone
FILE_MODE = 0o600  # records, snapshots, cache: the digests that guard snapshots are in state.json


class SnapshotTampered(EnvironmentProblem):
    """A snapshot no longer matches the digest recorded when it was written: not restored (exit 3)."""


def default_dir(root: Path, netns: str | None) -> Path:
    """NETFWD_STATE_DIR, else ROOT/var/lib/netfwd (per namespace when acting inside one)."""
    explicit = os.environ.get("NETFWD_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = root / "var/lib/netfwd"
    return base / "netns" / netns if netns else base


def cluster_dir(base: Path, cluster: str) -> Path:
    return base / "clusters" / cluster


def clusters(base: Path) -> list[str]:
    """Clusters with records under BASE (and the one an earlier version recorded in BASE itself)."""
    folder = base / "clusters"
    found = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file()) if folder.is_dir() else []
    legacy = legacy_cluster(base)
    return sorted({*found, legacy}) if legacy else found


def resolve_cluster(base: Path, option: str | None = None, spec_file: str | None = None,
                    option_name: str = "--cluster") -> str:
    """The cluster a command acts on: the spec's, else `option` (--cluster; `option_name` is what
    errors call it, e.g. an Ansible module's `cluster`), else the only one recorded under BASE; bad
    input (exit 2) when none or several could be meant."""
    from netfwd.errors import InputError
    from netfwd.owned import cluster_of_spec

    if spec_file:
        name = cluster_of_spec(spec_file)
        if option and option != name:
            raise InputError(f"the spec is cluster {name!r}, not {option!r}", file=spec_file, field="cluster")
        return name
    if option:
        if not CLUSTER_RE.match(option):
            raise InputError(f"{option!r} is not a cluster name", field=option_name)
        return option
    known = clusters(base)
    if len(known) == 1:
        return known[0]
    naming = f"{option_name} NAME" if option_name.startswith("-") else f"the {option_name} option"
    if not known:
        raise InputError(f"no cluster recorded in {base}: name one with {naming} (or give the SPEC)",
                         field=option_name)
    raise InputError(f"{len(known)} clusters on this relay ({', '.join(known)}): choose one with {naming}",
                     field=option_name)


def legacy_cluster(base: Path) -> str | None:
    """The cluster whose records an earlier version kept in BASE itself, if any."""
    try:
        data = read_json(base / "state.json") or {}
    except Exception:  # noqa: BLE001 - unreadable old records are left for the operator
        return None
    cluster = (data.get("applied") or {}).get("cluster") or ((data.get("rollback") or {}).get("previous") or {}).get("cluster")
    return cluster if isinstance(cluster, str) and CLUSTER_RE.match(cluster) else None


def migrate_legacy(base: Path, cluster: str) -> bool:
    """Move an earlier version's records of `cluster` from BASE into its cluster directory. The
    no-change shortcut is dropped, so the next apply reads the live state and replaces the global
    objects of that version by the cluster's own (netfwd.owned); the desired-state cache goes."""
    if legacy_cluster(base) != cluster:
        return False
    target = cluster_dir(base, cluster)
    if (target / "state.json").exists():
        return False
    os.close(trust.open_dir(target, create=DIR_MODE))
    for name in ("applied.txt", "journal.json", "snapshots", "timer.log"):
        if (base / name).exists():
            os.replace(base / name, target / name)
    data = read_json(base / "state.json") or {}
    for record in (data.get("applied"), (data.get("rollback") or {}).get("previous")):
        if isinstance(record, dict):
            record.pop("fingerprint", None)
            record.pop("spec_key", None)
    write_json(target / "state.json", data)
    os.unlink(base / "state.json")
    import shutil

    shutil.rmtree(base / "cache", ignore_errors=True)
    return True


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def new_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{os.getpid()}-{time.monotonic_ns() % 1000000:06d}"


@dataclass
class State:
    directory: Path
    backend: str | None = None
    root: str | None = None
    applied: dict[str, Any] | None = None
    rollback: dict[str, Any] | None = None
    pending: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- files ---------------------------------------------------------------------------------
    @property
    def file(self) -> Path:
        return self.directory / "state.json"

    @property
    def applied_file(self) -> Path:
        return self.directory / "applied.txt"

    @property
    def journal_file(self) -> Path:
        return self.directory / "journal.json"

    def snapshot_file(self, change_id: str, suffix: str = "txt") -> Path:
        return self.directory / "snapshots" / f"{change_id}.{suffix}"

    @classmethod
    def load(cls, directory: Path) -> "State":
        data = read_json(directory / "state.json") or {}
        known = {"backend", "root", "applied", "rollback", "pending"}
        return cls(directory, **{k: data.get(k) for k in known},
                   extra={k: v for k, v in data.items() if k not in known | {"format"}})

    def save(self) -> None:
        write_json(self.file, {"format": FORMAT, "backend": self.backend, "root": self.root,
                               "applied": self.applied, "rollback": self.rollback, "pending": self.pending,
                               **self.extra}, mode=FILE_MODE, dir_mode=DIR_MODE)

    def write(self, path: Path, text: str) -> None:
        """A file of the state directory (root-only, never through a symlink)."""
        write_atomic(path, text, mode=FILE_MODE, dir_mode=DIR_MODE)

    def applied_text(self) -> str:
        try:
            return trust.read_text(self.applied_file)
        except FileNotFoundError:
            return ""

    def read_snapshot(self, name: str, expected: str | None = None, change: str = "") -> str:
        """A snapshot's text; with `expected` (its digest recorded at apply time) it must match, so
        that a swapped snapshot is never restored as root."""
        path = self.directory / name
        text = trust.read_text(path)
        if expected is not None and digest(text) != expected:
            raise SnapshotTampered(
                f"refusing to restore {path}: its sha256 is {digest(text)[:16]}..., not {expected[:16]}... as "
                f"recorded when change {change or '?'} was applied - it was changed since, and nothing was "
                f"restored; see who wrote it, then set a known state with `netfwd apply SPEC` or "
                f"`netfwd remove`")
        return text

    def write_snapshot(self, change_id: str, text: str, suffix: str = "txt") -> str:
        path = self.snapshot_file(change_id, suffix)
        self.write(path, text)
        return str(path.relative_to(self.directory))

    def journal(self) -> dict[str, Any] | None:
        return read_json(self.journal_file)

    def prune(self, keep: set[str]) -> None:
        """Drop snapshot files no record refers to (one rollback level is kept)."""
        folder = self.directory / "snapshots"
        if not folder.is_dir():
            return
        for path in folder.iterdir():
            if str(path.relative_to(self.directory)) not in keep and not path.name.startswith("."):
                path.unlink(missing_ok=True)
