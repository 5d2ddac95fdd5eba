"""What every live backend shares: the protocol the engine drives, and the Plan/Change types.

Backends are deliberately dumb (NAPALM style): they read netfwd's owned state, render the desired
owned state, and write one transaction from one to the other. Everything with a life cycle - locks,
snapshots, commit-confirm, rollback, recovery - lives in :mod:`netfwd.engine`, once for all backends.

The *owned state* is text: the objects netfwd owns as the backend reads them back, in a canonical
form (iptables: restore-payload lines; nft: the private table; firewalld: ipsets and rich rules).
Equal text means equal state, so plans, drift checks and snapshots are plain text comparisons, and
a snapshot is something the backend can write back in one transaction.
"""

from __future__ import annotations

import os
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

from netfwd.errors import EnvironmentProblem, NetfwdError

if TYPE_CHECKING:  # the model pulls in netaddr: keep it off the no-change path's start-up
    from netfwd.model import Essence, Spec


class TransactionError(NetfwdError):
    """The backend refused a transaction (nothing was committed unless it says otherwise)."""

    exit_code = 1


@dataclass(frozen=True)
class Live:
    """Owned state as read: canonical `text`, per-tag counters (packets, bytes) when the backend has
    them, and backend-private details the matching write needs (e.g. the zone firewalld uses)."""

    text: str
    counters: dict[str, tuple[int, int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One line of a plan: ``+`` add, ``-`` remove, ``~`` replace (same identity, new content)."""

    op: str
    kind: str  # "forward", "object" (rules/jumps/sets the forwards do not explain), "sysctl"
    key: str
    old: str | None = None
    new: str | None = None

    def render(self) -> str:
        if self.op == "~":
            arrow = "=>" if self.kind == "forward" else "->"
            return f"~ {self.kind} {self.key}: {self.old} {arrow} {self.new}"
        return f"{self.op} {self.kind} {self.key} {self.new if self.op == '+' else self.old}"

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "kind": self.kind, "key": self.key, "old": self.old, "new": self.new}


class Plan:
    """Desired vs live owned state.

    ``added``/``removed`` count the owned lines (rules, jumps, set entries) that differ; ``touched``
    the forwards they belong to. :meth:`changes` explains them forward by forward (+ add, - remove,
    ~ replace). Explaining means parsing rules, which for a fresh 10,000-forward apply costs more
    than a third of the restore itself - so it is done on demand, and only for as many forwards
    as the caller shows."""

    def __init__(self, backend: str, current: str, desired: str, added: int = 0, removed: int = 0,
                 touched: int = 0, explain: Callable[[int | None], list[Change]] | None = None,
                 extra: tuple[Change, ...] = (), counts: Callable[[], tuple[int, int, int]] | None = None) -> None:
        """`counts`: (added, removed, touched) worked out when first asked, instead of the numbers
        (a fresh 10,000-forward apply counts them while its transaction runs)."""
        self.backend, self.current, self.desired, self.extra = backend, current, desired, extra
        self._counts = counts or (lambda: (added, removed, touched))
        self._counted: tuple[int, int, int] | None = None
        self._explain = explain
        self._cache: dict[int | None, tuple[Change, ...]] = {}

    def _count(self) -> tuple[int, int, int]:
        if self._counted is None:
            self._counted = self._counts()
        return self._counted

    @property
    def added(self) -> int:
        return self._count()[0]

    @property
    def removed(self) -> int:
        return self._count()[1]

    @property
    def touched(self) -> int:
        return self._count()[2]

    @property
    def in_sync(self) -> bool:
        return self.current == self.desired and not self.extra

    @property
    def count(self) -> int:
        """How many changes :meth:`changes` lists (without computing them)."""
        return (self.touched or (0 if self.current == self.desired else 1)) + len(self.extra)

    def changes(self, limit: int | None = None) -> tuple[Change, ...]:
        if limit not in self._cache:
            found = self._explain(limit) if self._explain and self.current != self.desired else []
            self._cache[limit] = tuple(found) + self.extra
        return self._cache[limit]

    def with_extra(self, extra: tuple[Change, ...]) -> "Plan":
        return Plan(self.backend, self.current, self.desired, explain=self._explain, extra=self.extra + extra,
                    counts=self._count)

    def as_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "in_sync": self.in_sync, "lines_added": self.added,
                "lines_removed": self.removed, "changes": [c.as_dict() for c in self.changes()]}


@runtime_checkable
class Backend(Protocol):
    """Everything the engine (netfwd.engine.core) and :func:`diff` use of a backend."""

    name: str
    desired_depends_on_live: bool  # True: `desired` reads the live state (cannot be cached by spec)

    def check(self, spec: Spec) -> None:
        """Raise UnsupportedByDialect when the spec asks for what this backend cannot do."""

    def read(self) -> Live:
        """The live owned state, with ONE read of the firewall (one save / list / D-Bus session)."""

    def desired(self, spec: Spec, live: Live) -> str:
        """The owned state `spec` asks for, in the same canonical form :meth:`read` returns."""

    def forwards(self, text: str) -> list[Essence]:
        """The forwards an owned-state text holds (for plans that speak in forwards, not lines)."""

    def validate(self, target: str, live: Live) -> None:
        """The firewall's own dry run of the transaction from `live` to `target` (what `plan` checks)."""

    def write(self, target: str, live: Live) -> int | None:
        """Make the owned state `target` in one transaction (`target` "" = own nothing). Returns how
        many commits it made (None: unknown), which the engine compares with :meth:`fingerprint`."""

    def write_meanwhile(self, target: str, live: Live, meanwhile: Callable[[], object],
                        before_commit: Callable[[], object] | None = None) -> int | None:
        """:meth:`write`, calling `meanwhile()` (work of the caller's that need not wait for the
        firewall) while the firewall's own tool runs, where it runs as a separate process, and
        `before_commit()` before anything is committed (the tool may be reading its input
        already); if that raises, nothing is committed and its error propagates."""

    def tags(self, line: str) -> str | None:
        """The forward (its rule comment) an owned-state line belongs to; None: not one forward's."""

    def focus(self, text: str, tags: set[str]) -> str:
        """Only the lines of the forwards `tags` names (so a plan parses just what differs)."""

    def fingerprint(self) -> str | None:
        """A cheap token that changes whenever the firewall may have changed (None: no such thing)."""

    def persisted_files(self) -> list[Path]:
        """Every file :meth:`persist` may write (the engine checks their directories first)."""

    def persist(self, target: str) -> list[str]:
        """Save the ruleset where the host reloads it at boot; returns what was done, for the log."""


class BaseBackend:
    """The defaults of :class:`Backend`: a backend derives from this and implements ``check``,
    ``read``, ``desired``, ``forwards`` and ``write``; the rest it overrides only when its firewall
    has the thing (a dry run, a generation counter, boot persistence, per-forward lines)."""

    name: str
    desired_depends_on_live: bool = False

    def validate(self, target: str, live: Live) -> None:
        """No dry run: the write itself is the first check."""

    if TYPE_CHECKING:  # each backend's own (a backend without one fails the Backend protocol check)
        def write(self, target: str, live: Live) -> int | None:
            raise NotImplementedError

    def write_meanwhile(self, target: str, live: Live, meanwhile: Callable[[], object],
                        before_commit: Callable[[], object] | None = None) -> int | None:
        """`before_commit()`, the write, then `meanwhile()`: only a backend whose write waits for a
        tool's process can do them at once."""
        if before_commit is not None:
            before_commit()
        commits = self.write(target, live)
        ahead(meanwhile)
        return commits

    def tags(self, line: str) -> str | None:
        return None  # lines not grouped by forward: a plan explains the whole text

    def focus(self, text: str, tags: set[str]) -> str:
        return text

    def fingerprint(self) -> str | None:
        return None

    def persisted_files(self) -> list[Path]:
        return []

    def persist(self, target: str) -> list[str]:
        return []


# -- diffing -------------------------------------------------------------------------------------

def _essence_text(e: "Essence") -> str:
    target = f"[{e.to_address}]:{e.to_port}" if ":" in e.to_address else f"{e.to_address}:{e.to_port}"
    flags = [] if e.masquerade else ["no-masquerade"]
    if e.local:
        flags.append("local")
    sources = "any source" if e.sources is None else f"from {', '.join(e.sources)}"
    return f"-> {target} {sources}" + (f" ({', '.join(flags)})" if flags else "")


def _identity(e: "Essence") -> str:
    return f"{e.listen_address or '*'}:{e.listen_port}/{e.protocol}"


def diff(backend: Backend, current: str, desired: str) -> Plan:
    """Line-level now; forward-level (keyed on listen address, port, protocol: a new target
    *replaces*) when :meth:`Plan.changes` asks, plus an ``object`` change when owned lines differ in
    ways the forwards do not show (a missing jump, a foreign rule inside an owned chain, order)."""
    if current == desired:
        return Plan(backend.name, current, desired)
    found: list[tuple[Counter[str], Counter[str], list[str]]] = []

    def lines() -> tuple[Counter[str], Counter[str], list[str]]:  # (added, removed, their forwards' tags)
        if not found:
            have, want = Counter(_lines(current)), Counter(_lines(desired))
            added, removed = (want, have) if not (have and want) else (want - have, have - want)
            changed = list(added) + list(removed)
            found.append((added, removed, list(dict.fromkeys(t for t in map(backend.tags, changed) if t))))
        return found[0]

    def counts() -> tuple[int, int, int]:
        added, removed, tags = lines()
        return sum(added.values()), sum(removed.values()), len(tags)

    def explain(limit: int | None) -> list[Change]:
        added, removed, tags = lines()
        before, after = current, desired
        if tags:  # parse only the forwards the differing lines belong to
            wanted = set(tags if limit is None else tags[:limit])
            before, after = backend.focus(current, wanted), backend.focus(desired, wanted)
        return _explain(backend, before, after, added, removed)

    return Plan(backend.name, current, desired, explain=explain, counts=counts)


def _explain(backend: Backend, current: str, desired: str, added: Counter[str], removed: Counter[str]) -> list[Change]:
    old = {_identity(e): e for e in backend.forwards(current)}
    new = {_identity(e): e for e in backend.forwards(desired)}
    changes: list[Change] = []
    for key, essence in new.items():
        if key not in old:
            changes.append(Change("+", "forward", key, new=_essence_text(essence)))
        elif old[key] != essence:
            changes.append(Change("~", "forward", key, _essence_text(old[key]), _essence_text(essence)))
    changes += [Change("-", "forward", key, old=_essence_text(e)) for key, e in old.items() if key not in new]
    if not changes:  # same forwards, different objects: say which
        if added or removed:
            sample = next(iter(added or removed))
            changes.append(Change("~", "object", "owned state",
                                  f"{sum(removed.values())} line(s) to remove",
                                  f"{sum(added.values())} line(s) to add (e.g. {'+' if added else '-'} {sample.strip()})"))
        else:
            changes.append(Change("~", "object", "owned state", "rules in another order", "in spec order"))
    return changes


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith(("*", "COMMIT", "#"))]


# -- running tools -------------------------------------------------------------------------------

def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,  # noqa: A002
        timeout: float = 600.0, pass_fds: Sequence[int] = (), stdin_file: str | None = None,
        what: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a firewall tool; a missing tool is an EnvironmentProblem, a refusal a TransactionError.

    `pass_fds` lets the engine hand its lock to the child, so the lock is held until the child
    finishes even if netfwd itself is killed meanwhile."""
    try:
        if stdin_file is not None:
            with open(stdin_file, "rb") as source:
                raw = subprocess.run(list(argv), stdin=source, capture_output=True, timeout=timeout,
                                     pass_fds=tuple(pass_fds))
            done = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                               raw.stderr.decode(errors="replace"))
        else:
            done = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout,
                                  pass_fds=tuple(pass_fds), stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise EnvironmentProblem(f"{argv[0]} not found: install it, or choose another --backend") from None
    except subprocess.TimeoutExpired:
        raise TransactionError(f"{what or argv[0]} did not finish within {timeout:.0f} s") from None
    if check and done.returncode != 0:
        raise failure(done, what or " ".join(argv[:2]))
    return done


def ahead(meanwhile: Callable[[], object]) -> None:
    """Run work that only computes ahead (caches the caller would fill later anyway): a failure of
    it is dropped here and meets the caller again when it asks for the result the usual way."""
    try:
        meanwhile()
    except Exception:  # noqa: BLE001 - see above
        pass


def run_meanwhile(argv: Sequence[str], meanwhile: Callable[[], object], *, timeout: float = 600.0,
                  pass_fds: Sequence[int] = (), stdin_file: str | None = None, what: str | None = None,
                  before_commit: Callable[[], object] | None = None,
                  gate: bool = False) -> subprocess.CompletedProcess[str]:
    """`run(argv, check=False)`, calling `meanwhile()` (see :func:`ahead`) while the tool runs.

    `gate`: the tool's standard input is a pipe that gets "go" once `before_commit()` returned,
    and which the tool reads before it commits; whatever happens first - `before_commit()` raising,
    an interrupt, netfwd being killed - closes it without "go", and the tool commits nothing. The
    tool is never killed for netfwd's sake: an interrupt (or a failure) on this side waits for it
    to finish first - a transaction runs to its end, as when netfwd itself is killed - and then
    propagates."""
    gate_write = None
    try:
        if gate:
            read_end, gate_write = os.pipe()  # both close-on-exec: only the child's stdin stays open
            source = os.fdopen(read_end, "rb")
        else:
            source = open(stdin_file or os.devnull, "rb")
        with source:
            process = subprocess.Popen(list(argv), stdin=source, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, errors="replace", pass_fds=tuple(pass_fds))
    except BaseException as problem:
        if gate_write is not None:
            os.close(gate_write)
        if isinstance(problem, FileNotFoundError):
            raise EnvironmentProblem(f"{argv[0]} not found: install it, or choose another --backend") from None
        raise
    with process:
        try:
            try:
                if before_commit is not None:
                    before_commit()
                if gate_write is not None:
                    try:
                        os.write(gate_write, b"go\n")
                    except BrokenPipeError:  # the tool's side has ended already: its status says how
                        pass
            finally:
                if gate_write is not None:
                    os.close(gate_write)
            ahead(meanwhile)
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise TransactionError(f"{what or argv[0]} did not finish within {timeout:.0f} s") from None
        except BaseException:
            while process.poll() is None:
                try:
                    process.wait()
                except BaseException:  # noqa: BLE001 - a second interrupt: still wait for the tool
                    pass
            raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def failure(done: subprocess.CompletedProcess[str], what: str) -> TransactionError:
    """A tool's refusal as one line: its last words (stderr, else stdout) without usage hints."""
    detail = (done.stderr or done.stdout).strip().splitlines()
    detail = [line for line in detail if not line.startswith("Try `")][-3:]
    return TransactionError(f"{what} failed (exit {done.returncode}): {' / '.join(detail) or 'no output'}")
