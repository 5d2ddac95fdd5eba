"""The check framework, after kubeadm's preflight: named checks that return warnings and errors.

Each check is a small object with a stable ``name`` (what ``--ignore`` and the reports use), a
``group`` (relay, windows, cluster, audit) and a ``run(ctx)`` that returns an :class:`Outcome`:
the findings (each an error or a warning with a one-line fix) and a one-line summary of what it
saw. A check that cannot run here raises :class:`Skip` with the reason. ``--ignore NAME,...|all``
downgrades a check's errors to warnings (they stay visible, marked ignored), so the run passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol, Sequence

from netfwd.errors import EnvironmentProblem, InputError

ERROR, WARNING = "error", "warning"
STATUSES = ("ok", "warning", "error", "skipped")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem a check found. `fix` is one line a person can act on."""

    severity: str  # error | warning
    message: str
    fix: str
    ignored: bool = False  # an error downgraded to a warning by --ignore


def error(message: str, fix: str) -> Finding:
    return Finding(ERROR, message, fix)


def warning(message: str, fix: str) -> Finding:
    return Finding(WARNING, message, fix)


@dataclass(frozen=True, slots=True)
class Outcome:
    findings: tuple[Finding, ...] = ()
    summary: str = ""


def passed(summary: str) -> Outcome:
    return Outcome((), summary)


def found(findings: Iterable[Finding], summary: str = "") -> Outcome:
    """An outcome with these findings (an empty list is a pass with `summary`)."""
    return Outcome(tuple(findings), summary)


class Skip(Exception):
    """Raised by a check that cannot run here; the message says why (and what would let it run)."""


class Check(Protocol):
    name: str  # stable, lowercase, dash-separated: the key of --ignore and of the reports
    group: str  # relay | windows | cluster | audit
    doc: str  # one line: what the check makes sure of

    def run(self, ctx: Any) -> Outcome: ...


@dataclass(frozen=True, slots=True)
class Result:
    name: str
    group: str
    status: str  # ok | warning | error | skipped
    summary: str
    findings: tuple[Finding, ...]
    seconds: float

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]


@dataclass
class Report:
    results: list[Result] = field(default_factory=list)
    ignored: tuple[str, ...] = ()  # what --ignore named ("all" or check names)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when no error remains after --ignore, 1 otherwise."""
        return 1 if any(r.status == "error" for r in self.results) else 0

    def counts(self) -> dict[str, int]:
        return {status: sum(r.status == status for r in self.results) for status in STATUSES}

    def result(self, name: str) -> Result:
        for result in self.results:
            if result.name == name:
                return result
        raise KeyError(name)


def parse_ignore(text: str | None, known: Sequence[str]) -> frozenset[str]:
    """`--ignore a,b` / `--ignore all` -> names; an unknown name is bad input that lists the known ones."""
    if not text:
        return frozenset()
    names = [part.strip().lower() for part in text.split(",") if part.strip()]
    if "all" in names:
        if len(names) > 1:
            raise InputError("'all' cannot be combined with check names", field="--ignore")
        return frozenset({"all"})
    unknown = [n for n in names if n not in known]
    if unknown:
        raise InputError(f"unknown check {unknown[0]!r}; checks: {', '.join(sorted(known))}, or all",
                         field="--ignore")
    return frozenset(names)


def run_checks(checks: Sequence[Check], ctx: Any, ignore: frozenset[str] = frozenset()) -> Report:
    """Run every check in order; one check's failure (even a crash) never stops the others."""
    start = time.perf_counter()
    report = Report(ignored=tuple(sorted(ignore)))
    for check in checks:
        report.results.append(run_one(check, ctx, "all" in ignore or check.name in ignore))
    report.seconds = time.perf_counter() - start
    return report


def run_one(check: Check, ctx: Any, ignored: bool = False) -> Result:
    start = time.perf_counter()
    try:
        outcome = check.run(ctx)
    except Skip as why:
        return Result(check.name, check.group, "skipped", str(why), (), time.perf_counter() - start)
    except (EnvironmentProblem, InputError) as problem:
        return Result(check.name, check.group, "skipped", f"cannot check here: {problem}", (),
                      time.perf_counter() - start)
    except Exception as bug:  # noqa: BLE001 - a broken check must not hide the others' results
        outcome = Outcome((error(f"the check itself failed: {type(bug).__name__}: {bug}",
                                 "report this as a netfwd bug, with this message"),))
    findings = tuple(replace(f, severity=WARNING, ignored=True) if ignored and f.severity == ERROR else f
                     for f in outcome.findings)
    if any(f.severity == ERROR for f in findings):
        status = "error"
    elif findings:
        status = "warning"
    else:
        status = "ok"
    return Result(check.name, check.group, status, outcome.summary, findings, time.perf_counter() - start)
