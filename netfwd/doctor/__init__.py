"""`netfwd doctor`: pre-flight checks for the relay and the cluster, after kubeadm's preflight.

    framework.py   Check, Finding, Outcome, run_checks, --ignore      output.py   table / JSON / JUnit
    ../relayfacts.py  facts of a Linux relay (read-only, cached)     firewall.py what the rules do to a forward
    relay.py       the Linux relay checks                            windows.py  the Windows report checks
    winreport.py   the collector's report                            windows_collector.py  the .ps1 collector
    cluster.py     API server (via netfwd.probe) and audit checks    integrations.py  drift (netfwd.engine)

Python API::

    from netfwd.doctor import doctor
    report = doctor(spec, netns="nf-ab12-relay")        # a Report; report.exit_code is 0 or 1
"""

from __future__ import annotations

from typing import Sequence

from netfwd.doctor.framework import Check, Report, parse_ignore, run_checks
from netfwd.errors import InputError

GROUPS = ("relay", "windows", "cluster", "audit")


def all_checks() -> list[Check]:
    """Every check, in report order (names are unique across groups)."""
    from netfwd.doctor import cluster, compat, relay, windows

    return [*compat.CHECKS, *relay.CHECKS, *windows.CHECKS, *cluster.CHECKS, *cluster.AUDIT_CHECKS]


def select(*, windows: bool, cluster: bool, audit: bool, only: Sequence[str] = ()) -> list[Check]:
    """The checks a run does: the relay's (Linux live, or Windows from a report), then the cluster's."""
    chosen = [c for c in all_checks()
              if (c.group == "relay" and not windows) or (c.group == "windows" and windows)
              or (c.group == "cluster" and cluster) or (c.group == "audit" and audit)]
    if only:
        known = {c.name for c in all_checks()}
        unknown = [n for n in only if n not in known]
        if unknown:
            raise InputError(f"unknown check {unknown[0]!r}; checks: {', '.join(sorted(known))}", field="--only")
        chosen = [c for c in all_checks() if c.name in only]
    return chosen


def doctor(spec=None, *, netns: str | None = None, root: str = "/", windows_report: str | None = None,
           cluster=None, ignore: str | None = None, only: Sequence[str] = (), probe: bool = False) -> Report:
    """Run the checks and return the report (the CLI renders it; exit code = report.exit_code)."""
    from netfwd.doctor.context import DoctorContext

    names = [c.name for c in all_checks()]
    ignored = parse_ignore(ignore, names)
    if cluster is not None:
        _validate(cluster)
    audit = cluster is not None and bool(cluster.manifest or cluster.audit_policy)
    checks = select(windows=windows_report is not None, cluster=probe, audit=audit, only=only)
    ctx = DoctorContext(spec=spec, cluster=cluster)
    if windows_report is not None:
        from netfwd.doctor.winreport import load_report

        ctx.windows = load_report(windows_report)
    elif any(c.group == "relay" for c in checks):
        from netfwd.relayfacts import LinuxRelay

        ctx.relay = LinuxRelay(netns, root)
    try:
        return run_checks(checks, ctx, ignored)
    finally:
        if ctx.relay is not None:
            ctx.relay.close()


def _validate(cluster) -> None:
    """Files and addresses the user named are bad input (exit 2) when unreadable, not skipped checks."""

    if cluster.manifest:
        from netfwd.audit.manifest import load_manifest

        load_manifest(cluster.manifest)
    if cluster.audit_policy:
        from netfwd.audit.policy import check_policy

        from netfwd.audit.manifest import MAX_MANIFEST_BYTES
        from netfwd.inputfile import read_utf8

        text = read_utf8(cluster.audit_policy, MAX_MANIFEST_BYTES, "Kubernetes audit policy")
        check_policy(text, cluster.audit_policy, cluster.k8s_version)
    if cluster.via:
        try:
            from netfwd.probe.targets import parse_hostport
        except ImportError:
            return
        parse_hostport(cluster.via, "--via")


__all__ = ["GROUPS", "Report", "all_checks", "doctor", "select"]
