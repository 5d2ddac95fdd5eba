"""The change life cycle, once for every backend: plan, apply, commit-confirm, rollback, remove, status.

NAPALM's verbs on a Linux relay. Each change is:

1. under the exclusive state lock (one change at a time; the second caller waits, then fails clearly);
2. finish or undo an interrupted earlier change (journal), roll back an overdue commit-confirm;
3. read the live owned state ONCE; diff it against the desired state;
4. snapshot the live state, write the journal, start the commit-confirm timer (if asked) - all
   *before* touching the firewall, so a crash at any later point is recoverable and still timed;
5. ONE backend transaction; then forwarding sysctls, persistence, the records; drop the journal.

A no-change re-apply does not even parse the spec when the spec file, netfwd and the backend are
the same as last time and the firewall provably did not change since (nf_tables generation ID), or
its owned state reads back identical to what was applied.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from netfwd import __version__, host, listeners, trust
from netfwd.backends import Context, get_backend
from netfwd.backends.base import Backend, Change, Live, Plan, diff
from netfwd.engine import sysctl, timer
from netfwd.engine.lock import StateLock
from netfwd.engine.state import DIR_MODE, FILE_MODE, SnapshotTampered, State, digest, new_id
from netfwd.errors import EnvironmentProblem, InputError, NetfwdError
from netfwd.safefiles import publish, sweep_temp_files, write_json

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"netfwd: {message}", file=sys.stderr, flush=True)


class NothingToDo(NetfwdError):
    """confirm / rollback with nothing pending or recorded (exit 1)."""


@dataclass
class Outcome:
    """What a change did, for the command to report."""

    plan: Plan
    changed: bool
    change_id: str | None = None
    backend: str = ""
    notes: list[str] = field(default_factory=list)
    sysctl: list[tuple[str, str, str]] = field(default_factory=list)
    deadline: float | None = None
    fast: bool = False  # decided without parsing the spec (same spec, firewall provably unchanged)

    def as_dict(self) -> dict[str, Any]:
        return {**self.plan.as_dict(), "changed": self.changed, "change_id": self.change_id,
                "sysctl": [{"what": w, "now": n, "wanted": v} for w, n, v in self.sysctl],
                "confirm_deadline": self.deadline, "notes": self.notes, "fast_path": self.fast}


class Engine:
    def __init__(self, state_dir: Path, root: Path, backend: str = "auto", *, lock_wait: float = 60.0,
                 log: Log = _stderr, cluster: str | None = None, allow_runtime_loss: bool = False) -> None:
        """`state_dir` is the cluster's own (netfwd.engine.state.cluster_dir); `cluster` defaults to its name."""
        self.state_dir, self.root, self.requested = state_dir, root, backend
        self.cluster = cluster or state_dir.name
        self.lock_wait, self.log = lock_wait, log
        self.allow_runtime_loss = allow_runtime_loss  # firewalld: a reload may drop others' runtime-only config
        self._preloaded: dict[tuple[str, str | None], Any] = {}  # specs parsed by _preflight

    @classmethod
    def for_timer(cls, state_dir: Path) -> "Engine":
        trust.check_dir(state_dir)
        state = State.load(state_dir)
        return cls(state_dir, Path(state.root or "/"), state.backend or "auto", lock_wait=600.0,
                   log=lambda m: print(m, flush=True))

    # -- backends ------------------------------------------------------------------------------
    def _backend(self, state: State, lock_fd: int | None, *, name: str | None = None) -> Backend:
        chosen = name or self.requested
        if chosen == "auto":
            if state.backend and state.applied_text():
                chosen = state.backend
            else:
                from netfwd.engine.auto import choose

                chosen, why = choose()
                self.log(f"backend {chosen}: {why}")
        elif state.backend and state.backend != chosen and state.applied_text() and name is None:
            raise EnvironmentProblem(f"netfwd's rules on this relay were applied with --backend {state.backend}; "
                                     f"remove them first (netfwd remove --backend {state.backend}) "
                                     f"before switching to {chosen}")
        context = Context(root=self.root, workdir=self.state_dir, lock_fd=lock_fd, cluster=self.cluster,
                          legacy=self._legacy_names(), allow_runtime_loss=self.allow_runtime_loss)
        return get_backend(chosen, context)

    def _legacy_names(self) -> Callable[[], tuple[str, ...]]:
        """Objects of earlier versions that only the spec can attribute to this cluster (firewalld
        ipsets were named after the forward alone): worked out from the specs preloaded now, but only
        when the backend asks - no other backend has such objects, so no other pays for them."""
        specs = [loaded.spec for loaded in self._preloaded.values()]

        def names() -> tuple[str, ...]:
            from netfwd.dialects.firewalld import legacy_ipset_name

            return tuple(dict.fromkeys(legacy_ipset_name(f) for spec in specs for f in spec.forwards))

        return names

    def _lock(self, what: str, exclusive: bool = True) -> StateLock:
        if self.state_dir.parent.name == "clusters":  # BASE/clusters/<cluster>: root's alone, all three
            for folder in (self.state_dir.parent.parent, self.state_dir.parent):
                os.close(trust.open_dir(folder, create=DIR_MODE))
        self._check_dirs()
        return StateLock(self.state_dir, exclusive=exclusive, wait=self.lock_wait, what=what)

    def _check_dirs(self) -> None:
        """Root reads and writes only where nobody else can plant or swap files (exit 3 naming
        the directory and the fix): the state directory and --root (up to netfwd's sysctl.d file),
        each with every parent."""
        trust.check_dir(self.state_dir)
        trust.check_dir(sysctl.path(self.root, self.cluster).parent)  # and so --root, read by plan too

    def _check_targets(self, backend: Backend) -> None:
        """Before the firewall changes: the directories of every file the change may persist are
        trusted too, so a refusal never comes half-way through a change."""
        files = [sysctl.path(self.root, self.cluster), *backend.persisted_files()]
        for directory in dict.fromkeys(path.parent for path in files):
            trust.check_dir(directory)
        for path in files:
            trust.refuse_planted(path)

    # -- plan ------------------------------------------------------------------------------------
    def plan(self, spec_path: str, catalog: str | None = None) -> Outcome:
        """What `apply` would change (reads only; takes no lock)."""
        self._check_dirs()
        self._preflight(spec_path, catalog)
        state = State.load(self.state_dir)
        backend = self._backend(state, None)
        recorded = _recorded_live(state, backend, backend.fingerprint())
        live = recorded if recorded is not None else backend.read()
        desired, meta = self._desired(spec_path, catalog, backend, live,
                                      _spec_key(spec_path, catalog, backend.name))
        _refuse_clashes(self.cluster, meta, self._claims(backend, live))
        _refuse_served_ports(spec_path, catalog, meta)
        plan = diff(backend, live.text, desired)
        if not plan.in_sync:
            backend.validate(plan.desired, live)  # the firewall's own dry run: errors show before apply
        changes = sysctl.pending(meta["sysctl_text"], self.root, self.cluster)
        plan = _with_sysctl(plan, changes)
        return Outcome(plan, False, backend=backend.name, sysctl=changes)

    def plan_remove(self) -> Outcome:
        """What `remove` would change (reads only; takes no lock): check mode for callers like Ansible."""
        self._check_dirs()
        state = State.load(self.state_dir)
        backend = self._backend(state, None, name=state.backend if self.requested == "auto" else self.requested)
        plan = diff(backend, backend.read().text, "")
        if sysctl.path(self.root, self.cluster).exists():
            plan = plan.with_extra((Change("-", "sysctl", "file", old=str(sysctl.path(self.root, self.cluster))),))
        return Outcome(plan, False, backend=backend.name)

    # -- apply / remove --------------------------------------------------------------------------
    def apply(self, spec_path: str, *, catalog: str | None = None, confirm_timeout: float | None = None,
              approve: Callable[[Plan], bool] | None = None, explain: int | None = 0) -> Outcome:
        """`explain`: how many of the plan's changes the caller will show (None: all), worked out
        while the transaction runs."""
        self._check_dirs()
        self._preflight(spec_path, catalog)
        with self._lock(f"netfwd apply {spec_path}") as lock:
            state = State.load(self.state_dir)
            self._recover(state, lock.fd)
            self._refuse_while_pending(state)
            backend = self._backend(state, lock.fd)
            key = _spec_key(spec_path, catalog, backend.name)
            fast = self._unchanged(state, backend, key)
            if fast is not None:
                return fast
            generation = backend.fingerprint()
            recorded = _recorded_live(state, backend, generation)
            with self._phase("read live" if recorded is None else "read live skipped (unchanged since netfwd's apply)"):
                live = recorded if recorded is not None else backend.read()
            if (not backend.desired_depends_on_live and state.applied
                    and state.applied.get("spec_key") == key and live.text == state.applied_text()
                    and state.backend == backend.name and self._sysctl_ok(state)):
                _keep_claims(state.applied, live, self._claims(backend, live))  # the fingerprint below vouches for them
                self._remember(state, backend, generation, live.text)
                return Outcome(Plan(backend.name, live.text, live.text), False,
                               backend=backend.name, fast=True)
            desired, meta = self._desired(spec_path, catalog, backend, live, key, keep=False)
            claims = self._claims(backend, live)
            _refuse_clashes(self.cluster, meta, claims)
            _refuse_served_ports(spec_path, catalog, meta)
            with self._phase("diff"):
                plan = diff(backend, live.text, desired)
            changes = sysctl.pending(meta["sysctl_text"], self.root, self.cluster)
            plan = _with_sysctl(plan, changes)
            record = {"op": "apply", "spec": str(Path(spec_path).resolve()), "spec_key": key, **meta}
            _keep_claims(record, live, claims)
            if plan.in_sync:
                state.applied = {**(state.applied or {}), **record, "digest": digest(desired)}
                if not state.applied.get("id"):
                    state.applied["id"] = new_id()
                self._remember(state, backend, generation, desired, write_text=True)
                return Outcome(plan, False, backend=backend.name)
            if approve is not None and not approve(plan):
                raise NothingToDo("not applied")
            outcome = self._transact(state, backend, live, desired, record=record, lock_fd=lock.fd,
                                     confirm_timeout=confirm_timeout, generation=generation, plan=plan,
                                     explain=explain)
            outcome.sysctl = changes
            return outcome

    def remove(self, *, confirm_timeout: float | None = None) -> Outcome:
        """Take away every object this cluster owns (and its persisted sysctl), nothing else."""
        with self._lock("netfwd remove") as lock:
            state = State.load(self.state_dir)
            self._recover(state, lock.fd)
            self._refuse_while_pending(state)
            backend = self._backend(state, lock.fd, name=state.backend if self.requested == "auto" else self.requested)
            generation = backend.fingerprint()
            live = backend.read()
            plan = diff(backend, live.text, "")
            sysctl_file = os.path.lexists(sysctl.path(self.root, self.cluster))  # a planted link is refused
            if plan.in_sync and not sysctl_file:
                return Outcome(plan, False, backend=backend.name)
            record = {"op": "remove", "spec": None, "spec_key": None, "forwards": 0}
            return self._transact(state, backend, live, "", record=record, lock_fd=lock.fd,
                                  confirm_timeout=confirm_timeout, generation=generation, forget=True,
                                  plan=plan)

    # -- confirm / rollback / expire -------------------------------------------------------------
    def confirm(self) -> str:
        with self._lock("netfwd confirm") as lock:
            state = State.load(self.state_dir)
            self._recover(state, lock.fd)
            pending = state.pending
            if not pending:
                raise NothingToDo("no change is waiting for confirmation (it may have been rolled back "
                                  "already: see netfwd status)")
            backend = self._backend(state, lock.fd, name=state.backend)
            self._check_targets(backend)
            timer.stop(pending.get("pid"), pending.get("start"))
            state.pending = None
            state.save()
            notes = backend.persist(state.applied_text())
            for note in notes:
                self.log(note)
            return f"confirmed change {pending['id']}"

    def rollback(self, pending: str | None = None) -> Outcome:
        """Undo the last change (a rollback is a change too: rolling back twice redoes it).
        `pending`: only if that change still waits for confirmation (not if its timer won the race)."""
        with self._lock("netfwd rollback") as lock:
            state = State.load(self.state_dir)
            self._recover(state, lock.fd)
            if pending is not None and (state.pending or {}).get("id") != pending:
                raise NothingToDo(f"change {pending} no longer waits for confirmation")
            return self._undo(state, lock.fd, "rollback")

    def expire(self, change_id: str) -> str:
        """The commit-confirm deadline of `change_id` has passed: roll it back if still pending."""
        with self._lock(f"netfwd commit-confirm timer ({change_id})") as lock:
            state = State.load(self.state_dir)
            self._recover(state, lock.fd, timer_of=change_id)
            if not state.pending or state.pending.get("id") != change_id:
                return f"change {change_id} is no longer pending: nothing to do"
            outcome = self._undo(state, lock.fd, "commit-confirm timeout")
            return f"rolled back change {change_id} (not confirmed in time) as change {outcome.change_id}"

    def _undo(self, state: State, lock_fd: int | None, why: str) -> Outcome:
        if not state.rollback:
            raise NothingToDo("nothing to roll back: no change recorded in " + str(self.state_dir))
        backend = self._backend(state, lock_fd, name=state.backend)
        target = state.read_snapshot(state.rollback["snapshot"], state.rollback.get("snapshot_digest"),
                                     state.rollback["id"])
        previous = state.rollback.get("previous") or {"op": "remove", "forwards": 0}
        pending = state.pending
        if pending:
            timer.stop(pending.get("pid"), pending.get("start"))
            state.pending = None
        generation = backend.fingerprint()
        live = backend.read()
        record = {k: v for k, v in previous.items() if k not in ("id", "at", "digest", "fingerprint", "claims")}
        record["op"] = f"rollback of {state.rollback['id']} ({why})"
        plan = diff(backend, live.text, target)
        return self._transact(state, backend, live, target, record=record, lock_fd=lock_fd,
                              confirm_timeout=None, generation=generation, plan=plan,
                              forget=not record.get("sysctl_text"))

    # -- the transaction -------------------------------------------------------------------------
    def _transact(self, state: State, backend: Backend, live: Live, target: str, *, record: dict,
                  lock_fd: int | None, confirm_timeout: float | None, generation: str | None, plan: Plan,
                  forget: bool = False, explain: int | None = 0) -> Outcome:
        """Snapshot, journal, timer, ONE backend write, then sysctls, persistence and records.
        Forwarding is enabled (and persisted) as `record["sysctl_text"]` says; `forget` drops it.
        While the firewall's tool runs, the plan is counted (and `explain` changes explained)."""
        self._check_targets(backend)
        change_id = new_id()
        prepared: dict[str, Any] = {}

        def prepare() -> None:
            """Before the firewall changes (the backend's tool may be reading its input meanwhile,
            its commit waits for this): snapshot, target, journal, the commit-confirm timer."""
            with self._phase("snapshot"):
                before = state.write_snapshot(change_id, live.text)
                after = state.write_snapshot(change_id, target, "after")
            applied = {"id": change_id, "at": _now(), **record, "digest": digest(target), "fingerprint": None}
            journal = {"id": change_id, "backend": backend.name, "before": before, "after": after,
                       "before_digest": digest(live.text),
                       "applied": applied, "previous": state.applied, "forget_sysctl": forget,
                       "sysctl_text": record.get("sysctl_text")}
            write_json(state.journal_file, journal, mode=FILE_MODE, dir_mode=DIR_MODE)
            state.backend, state.root = backend.name, str(self.root)
            prepared.update(prior_pending=state.pending, deadline=None)
            if confirm_timeout is not None:
                prepared["deadline"] = time.time() + confirm_timeout
                pid, start = timer.spawn(self.state_dir, change_id, prepared["deadline"])
                state.pending = {"id": change_id, "deadline": prepared["deadline"], "timeout": confirm_timeout,
                                 "pid": pid, "start": start}
            state.save()
            prepared["journal"] = journal
            crash_point("before-write")

        try:
            with self._phase("write (one transaction)"):
                commits = backend.write_meanwhile(target, live, lambda: _count_plan(plan, explain), prepare)
        except BaseException:
            if "journal" in prepared:  # else nothing was committed: the backend does not commit before
                self._abandon(state, backend, live, prepared["journal"], prepared["prior_pending"])
            raise
        journal, deadline = prepared["journal"], prepared["deadline"]
        crash_point("after-write")
        if confirm_timeout is not None and state.pending is not None:  # set together with the deadline above
            deadline = time.time() + confirm_timeout  # the confirm window starts when the change is live
            state.pending = {**state.pending, "deadline": deadline}  # (the timer rereads it)
            state.save()
        with self._phase("records"):
            notes = self._finish(state, backend, journal, generation=generation, commits=commits,
                                 persist=confirm_timeout is None, target=target)
        if plan.removed:  # only a removed line can mean a forward's target changed or went away
            with self._phase("conntrack"):
                notes += _forget_old_targets(backend, live.text, target)
        if deadline is not None:
            notes.append(f"rolls back at {time.strftime('%H:%M:%S', time.localtime(deadline))} unless you run "
                         f"`netfwd confirm` within {confirm_timeout:g} s")
        return Outcome(plan, True, change_id, backend.name, notes, deadline=deadline)

    def _finish(self, state: State, backend: Backend, journal: dict[str, Any], *, generation: str | None,
                commits: Any, persist: bool, target: str) -> list[str]:
        notes: list[str] = []
        if journal.get("sysctl_text"):
            for key, value in sysctl.items_of(journal["sysctl_text"]):  # accept_ra before forwarding
                sysctl.set_key(key, value)
            sysctl.write_file(self.root, journal["sysctl_text"], self.cluster)
        if journal.get("forget_sysctl") and sysctl.forget(self.root, self.cluster):
            notes.append(f"removed {sysctl.path(self.root, self.cluster)} (forwarding stays on until reboot)")
        if persist:
            notes += backend.persist(target)
        applied = dict(journal["applied"])
        applied["fingerprint"] = _fingerprint_after(backend, generation, commits)
        after = self.state_dir / journal["after"]
        if after.exists():  # else an interrupted earlier _finish already moved it into place
            publish(after, state.applied_file)
        crash_point("after-rename")
        state.applied = applied
        state.rollback = {"id": journal["id"], "snapshot": journal["before"],
                          "snapshot_digest": journal.get("before_digest"), "previous": journal["previous"]}
        state.save()
        crash_point("after-records")
        state.journal_file.unlink(missing_ok=True)
        state.prune({journal["before"]})
        return notes

    def _abandon(self, state: State, backend: Backend, live: Live, journal: dict[str, Any],
                 prior_pending: dict[str, Any] | None) -> None:
        """The transaction failed (or we were interrupted): make sure the old state is what is live."""
        try:
            now = backend.read()
            if now.text != live.text:
                self.log("the transaction failed part-way: restoring the state before it")
                backend.write(live.text, now)
        finally:
            pending = state.pending
            if pending and pending.get("id") == journal["id"]:
                timer.stop(pending.get("pid"), pending.get("start"))
                state.pending = prior_pending
            state.save()
            state.journal_file.unlink(missing_ok=True)
            for name in (journal["before"], journal["after"]):
                (self.state_dir / name).unlink(missing_ok=True)

    # -- recovery --------------------------------------------------------------------------------
    def _recover(self, state: State, lock_fd: int | None, timer_of: str | None = None) -> None:
        """Finish or undo a change whose netfwd died mid-way; honour overdue commit-confirms."""
        for leftover in sweep_temp_files(self.state_dir):
            self.log(f"removed {leftover.name}, left by a netfwd that died while writing it")
        journal = state.journal()
        if journal:
            backend = self._backend(state, lock_fd, name=journal["backend"])
            live = backend.read()
            after = _read_text(self.state_dir / journal["after"])
            if after is None and digest(state.applied_text()) == journal["applied"]["digest"]:
                after = state.applied_text()  # moved into place by a _finish that was cut short
            before = _read_text(self.state_dir / journal["before"])
            if before is None:
                raise EnvironmentProblem(f"{state.journal_file} refers to a snapshot that is gone; move the "
                                         "journal aside and run `netfwd status` to see what is live")
            if after is not None and live.text == after:
                self.log(f"change {journal['id']} was interrupted after its transaction: recording it")
                self._finish(state, backend, journal, generation=None, commits=None,
                             persist=not (state.pending and state.pending.get("id") == journal["id"]),
                             target=after)
            else:
                if live.text != before:
                    # restored as root: only the snapshot as it was written (its digest is in the journal)
                    state.read_snapshot(journal["before"], journal.get("before_digest"), journal["id"])
                    self.log(f"change {journal['id']} was interrupted mid-way: restoring the state before it")
                else:
                    self.log(f"change {journal['id']} was interrupted before its transaction: discarding it")
                self._abandon(state, backend, type(live)(before), journal, None)
        pending = state.pending
        if pending and pending.get("id") != timer_of and not timer.alive(pending.get("pid"), pending.get("start")):
            if time.time() >= pending["deadline"]:
                self.log(f"change {pending['id']} was not confirmed by its deadline and its timer is gone: "
                         "rolling it back now")
                try:
                    self._undo(state, lock_fd, "commit-confirm timeout (timer gone)")
                except SnapshotTampered as problem:  # stays pending: confirm keeps it, status shows why
                    self.log(f"cannot roll back change {pending['id']}: {problem}")
            else:
                pid, start = timer.spawn(self.state_dir, pending["id"], pending["deadline"])
                state.pending = {**pending, "pid": pid, "start": start}
                state.save()
                self.log(f"restarted the commit-confirm timer of change {pending['id']} (pid {pid})")

    def _refuse_while_pending(self, state: State) -> None:
        if state.pending:
            left = max(0, state.pending["deadline"] - time.time())
            raise EnvironmentProblem(f"change {state.pending['id']} is waiting for confirmation (rolls back in "
                                     f"{left:.0f} s): run `netfwd confirm` or `netfwd rollback` first")

    def _claims(self, backend: Backend, live: Live) -> list[Any]:
        """Listen sockets other clusters take: read live where the backend can tell clusters apart by
        their rule comments; else (firewalld: rich rules carry no comment) from the other clusters'
        records of what they applied."""
        if "claims" in live.extra:
            return live.extra["claims"]
        from netfwd.netfilter.xstate import Claim

        found = []
        for sibling in self.state_dir.parent.iterdir() if self.state_dir.parent.is_dir() else ():
            if sibling.name == self.cluster or not (sibling / "applied.txt").is_file():
                continue
            other = State.load(sibling)
            if other.backend == backend.name:
                found += [Claim(sibling.name, "", e.listen_address, e.listen_port, e.protocol)
                          for e in backend.forwards(other.applied_text())]
        return found

    # -- the desired state (cached per spec) -------------------------------------------------------
    def _desired(self, spec_path: str, catalog: str | None, backend: Backend, live: Live,
                 key: str, keep: bool = True) -> tuple[str, dict[str, Any]]:
        """The desired owned state and what the records need from the spec. Rendering it means
        parsing and validating the spec (seconds for 10,000 forwards), so `plan` keeps it per spec
        key (spec bytes, catalog, netfwd version, backend) and apply after plan skips it. Apply
        reads that cache but does not write it (`keep`): once applied, a re-apply of the same spec
        takes the fingerprint path, so writing megabytes there would only serve a drift repair.
        Zones make firewalld's desired state depend on the live firewall, so it is never cached."""
        cacheable = not backend.desired_depends_on_live
        folder = self.state_dir / "cache"
        if cacheable:
            try:
                meta = json.loads(trust.read_text(folder / f"{key}.json"))
                text = trust.read_text(folder / f"{key}.txt")
                if digest(text) == meta.pop("digest"):
                    return text, meta
            except (OSError, ValueError, KeyError, trust.Untrusted):
                pass
        with self._phase("load spec"):
            loaded = self._preloaded.pop((spec_path, catalog), None) or _load(spec_path, catalog)
            spec = loaded.spec
            loaded.check(backend.check, spec)
        with self._phase("render desired"):
            text = backend.desired(spec, live)
        if spec.cluster != self.cluster:
            raise InputError(f"cluster is {spec.cluster!r}, but this state directory is cluster {self.cluster!r}",
                             file=spec_path, field="cluster")
        meta = {"forwards": len(spec.forwards), "cluster": spec.cluster, "sysctl_text": sysctl.file_text(spec),
                "listens": listeners.rows(spec), "forward_names": [f.name for f in spec.forwards]}
        if cacheable and keep:
            try:
                for old in folder.glob("*") if folder.is_dir() else ():
                    old.unlink(missing_ok=True)  # one spec at a time is enough
                state = State(self.state_dir)
                state.write(folder / f"{key}.txt", text)
                write_json(folder / f"{key}.json", {**meta, "digest": digest(text)}, mode=FILE_MODE,
                           dir_mode=DIR_MODE, compact=True)
            except (OSError, EnvironmentProblem):
                pass
        return text, meta

    def _preflight(self, spec_path: str, catalog: str | None) -> None:
        """Bad input fails first: before a backend is chosen (and logged), the lock is taken or
        anything is written. Bytes that were planned or applied before (same spec key for the
        recorded or the requested backend) were valid then and are not parsed here; otherwise the
        spec parsed now is the one _desired renders (one parse either way)."""
        try:
            state = State.load(self.state_dir)
        except NetfwdError:
            state = State(self.state_dir)
        for name in {state.backend, self.requested} - {None, "auto"}:
            key = _spec_key(spec_path, catalog, name)  # type: ignore[arg-type]
            if (state.applied or {}).get("spec_key") == key or (self.state_dir / "cache" / f"{key}.json").exists():
                return
        with self._phase("load spec (preflight)"):
            self._preloaded[(spec_path, catalog)] = _load(spec_path, catalog)

    def _phase(self, name: str):
        return _Phase(name, self.log if os.environ.get("NETFWD_TIMING") else None)

    # -- no-change fast path ---------------------------------------------------------------------
    def _unchanged(self, state: State, backend: Backend, key: str) -> Outcome | None:
        applied = state.applied
        if not applied or applied.get("spec_key") != key or state.backend != backend.name:
            return None
        token = applied.get("fingerprint")
        if not token or backend.fingerprint() != token or not self._sysctl_ok(state):
            return None
        return Outcome(Plan(backend.name, "", ""), False, backend=backend.name, fast=True)

    def _sysctl_ok(self, state: State) -> bool:
        applied = state.applied or {}
        text = applied.get("sysctl_text")
        if not text:
            return False
        if any(sysctl.current(k) != v for k, v in sysctl.items_of(text)):
            return False
        try:
            return trust.read_text(sysctl.path(self.root, self.cluster)) == text
        except (OSError, NetfwdError):
            return False

    def _remember(self, state: State, backend: Backend, generation: str | None, text: str,
                  write_text: bool = False) -> None:
        """In sync: record the fingerprint (and the text) so the next identical apply is instant."""
        if write_text or state.applied_text() != text:
            state.write(state.applied_file, text)
        if state.applied is not None:
            state.applied["fingerprint"] = generation if generation and backend.fingerprint() == generation else None
        state.backend, state.root = backend.name, str(self.root)
        state.save()

    # -- status ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        self._check_dirs()
        state = State.load(self.state_dir)
        report: dict[str, Any] = {"cluster": self.cluster, "state_dir": str(self.state_dir), "backend": state.backend,
                                  "applied": state.applied, "pending": None, "rollback": None,
                                  "interrupted": None, "drift": None, "forwards": []}
        if state.pending:
            p = state.pending
            report["pending"] = {"id": p["id"], "deadline": p["deadline"],
                                 "seconds_left": max(0.0, p["deadline"] - time.time()),
                                 "timer_pid": p.get("pid"), "timer_alive": timer.alive(p.get("pid"), p.get("start"))}
        if state.rollback:
            report["rollback"] = {"undoes": state.rollback["id"], "problem": None}
            try:
                state.read_snapshot(state.rollback["snapshot"], state.rollback.get("snapshot_digest"),
                                    state.rollback["id"])
            except (OSError, NetfwdError) as problem:
                report["rollback"]["problem"] = str(problem)
        journal = state.journal()
        if journal:
            report["interrupted"] = journal["id"]
        if not state.backend and self.requested == "auto":
            return report
        backend = self._backend(state, None, name=state.backend if self.requested == "auto" else None)
        report["backend"] = backend.name
        live = backend.read()
        reference = state.applied_text()
        plan = diff(backend, reference, live.text)
        report["drift"] = None if plan.in_sync else {
            "lines_appeared": plan.added, "lines_missing": plan.removed,
            "changes": [c.as_dict() for c in plan.changes(40)],
            "hint": ("netfwd's objects are gone (a firewall reload or restart flushes them?): "
                     "run `netfwd apply` again" if reference and not live.text else
                     "someone changed netfwd's objects: `netfwd plan` shows what apply would restore")}
        counters = live.counters or {}
        for essence in backend.forwards(live.text):
            tag = _tag_of(live.text, essence)
            packets, octets = counters.get(tag, (None, None)) if tag else (None, None)
            report["forwards"].append({**essence._asdict(), "tag": tag, "packets": packets, "bytes": octets})
        return report


# -- helpers ---------------------------------------------------------------------------------------

class _Phase:
    """`with engine._phase("read"):` logs how long it took when NETFWD_TIMING is set."""

    def __init__(self, name: str, log: Log | None) -> None:
        self.name, self.log = name, log

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.log:
            self.log(f"timing: {self.name} {1000 * (time.perf_counter() - self.started):.1f} ms")


def _read_text(path: Path) -> str | None:
    try:
        return trust.read_text(path)
    except FileNotFoundError:
        return None


def _load(spec_path: str, catalog: str | None):
    from netfwd.spec import open_spec

    cat = None
    if catalog:
        from netfwd.catalog import load_catalog

        cat = load_catalog(catalog)
    return open_spec(spec_path, cat)


def _refuse_served_ports(spec_path: str, catalog: str | None, meta: dict) -> None:
    """A forward may not take the port of a service listening on the relay (sshd on 2222) unless
    it says listen.takeover: bad input, reported at the forward's listen.port line."""
    rows = meta.pop("listens", [])  # needed here only, not in the state records
    clashes = listeners.clashes([tuple(row) for row in rows], listeners.sockets())
    if not clashes:
        return
    index, sock = clashes[0]
    raise _load(spec_path, catalog).doc.error(f"forwards[{index}].listen.port",
                                              listeners.message(sock, host.socket_owner(sock.inode)))


def _spec_key(spec_path: str, catalog: str | None, backend: str) -> str:
    """Same key = same desired state: spec bytes, catalog bytes, netfwd version, backend."""
    h = hashlib.sha256(f"netfwd {__version__}\0{backend}\0".encode())
    for path in (spec_path, catalog):
        if path:
            try:
                h.update(Path(path).read_bytes())
            except OSError as problem:
                raise InputError(f"cannot read it: {problem.strerror}", file=path) from None
        h.update(b"\0")
    return h.hexdigest()


def _refuse_clashes(cluster: str, meta: dict, claims: list) -> None:
    """A listen socket another cluster's live DNAT already takes: refuse, naming both (nothing applied).
    Same port and protocol clash when either listen address is a wildcard or both are equal."""
    names = meta.pop("forward_names", [])  # needed here only, not in the state records
    if not claims:
        return
    taken: dict[tuple[int, str], list] = {}
    for claim in claims:
        taken.setdefault((claim.port, claim.protocol), []).append(claim)
    for name, (port, protocol, address, *_) in zip(names, meta.get("listens") or ()):
        address = address or None
        for claim in taken.get((port, protocol), ()):
            if address is None or claim.listen_address is None or address == claim.listen_address:
                theirs = f"forward {claim.forward!r}" if claim.forward else "a forward"
                raise EnvironmentProblem(
                    f"listen port clash: cluster {cluster!r} forward {name!r} ({address or '*'}:{port}/{protocol}) and "
                    f"cluster {claim.cluster!r} {theirs} ({claim.listen_address or '*'}:{claim.port}/"
                    f"{claim.protocol}), live on this relay: change one listen port (or remove that cluster first)")


def _count_plan(plan: Plan, explain: int | None) -> None:
    """What the report will ask of the plan: its counts, and `explain` (None: all) changes."""
    if plan.count and explain != 0:
        plan.changes(explain)


def _with_sysctl(plan: Plan, changes: list[tuple[str, str, str]]) -> Plan:
    if not changes:
        return plan
    return plan.with_extra(tuple(Change("~", "sysctl", what, now, wanted) for what, now, wanted in changes))


def _keep_claims(record: dict[str, Any], live: Live, claims: list[Any]) -> None:
    """Keep the other clusters' listen-port claims with the record when they were read from the
    firewall itself (not from records: firewalld), for the next apply's unread path below."""
    if "claims" in live.extra:
        record["claims"] = [list(claim) for claim in claims]


def _recorded_live(state: State, backend: Backend, generation: str | None) -> Live | None:
    """The live state without reading it, when that is provable: the firewall's fingerprint (the
    nf_tables generation, which every commit by anyone moves) is still the one netfwd recorded right
    after its own last apply, so what that apply made live is live now — and so are the other
    clusters' listen-port claims it read just before. At 10,000 forwards this skips seconds of
    `nft list table` / `iptables-save` when one forward changes. Anything less certain: None (read)."""
    applied = state.applied or {}
    if (not generation or applied.get("fingerprint") != generation or state.backend != backend.name
            or backend.desired_depends_on_live
            or applied.get("op") != "apply" or not isinstance(applied.get("claims"), list)):
        return None
    from netfwd.netfilter.xstate import Claim

    try:
        claims = [Claim(*claim) for claim in applied["claims"]]
        text = state.applied_text()
    except (TypeError, OSError, NetfwdError):
        return None
    if digest(text) != applied.get("digest"):  # the record is not the one that apply wrote: read
        return None
    return Live(text, None, {"claims": claims})


def _fingerprint_after(backend: Backend, generation: str | None, commits: Any) -> str | None:
    """Trust the post-write fingerprint only if nobody else committed between our read and write."""
    after = backend.fingerprint()
    if not generation or not after or not isinstance(commits, int):
        return None
    try:
        moved = int(after.rsplit(":", 1)[1]) - int(generation.rsplit(":", 1)[1])
    except ValueError:
        return None
    return after if moved == commits else None


def _tag_of(text: str, essence) -> str | None:
    """The netfwd comment tag of a forward's DNAT rule (for its counters)."""
    needle = f":{essence.to_port}"
    for line in text.splitlines():
        if "DNAT" in line or " dnat " in line:
            if f"--dport {essence.listen_port} " in line or f"dport {essence.listen_port} " in line:
                if needle in line:
                    at = line.find('comment "')
                    if at >= 0:
                        return line[at + 9:line.find('"', at + 9)]
    return None


def crash_point(stage: str) -> None:
    """Test hooks: NETFWD_CRASH_AT=<stage> SIGKILLs this process there, to prove recovery works;
    NETFWD_STALL_AT=<stage>[:SECONDS] sleeps there (default 5 s)."""
    if os.environ.get("NETFWD_CRASH_AT") == stage:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    stall, _, seconds = os.environ.get("NETFWD_STALL_AT", "").partition(":")
    if stall == stage:  # test hook: hold still here (e.g. while a test drops the SSH connection)
        time.sleep(float(seconds or 5))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _forget_old_targets(backend: Backend, before: str, after: str) -> list[str]:
    """Delete tracked connections that still use a target this change replaced or removed."""
    from netfwd.engine import conntrack

    try:
        old, new = backend.forwards(before), backend.forwards(after) if after else []
    except Exception as problem:  # reading back is best effort here: the change itself is done
        return [f"could not read forwards back to forget old connections ({problem})"]
    return conntrack.forget(conntrack.stale(old, new))
