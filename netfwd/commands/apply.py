"""`netfwd plan|apply|confirm|rollback|remove|status`: change a live relay's firewall (root).

Thin: options in, :class:`netfwd.engine.Engine` does the work, a report out. Exit codes:
0 done / in sync; 1 nothing to confirm or roll back, or drift found by status; 2 bad input;
3 the host cannot do it (not root, tool missing, lock busy, confirm pending); 4 plan: changes pending.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import click

from netfwd.commands.params import SpecPath
from netfwd.errors import EXIT_CHANGES_PENDING, EXIT_FINDINGS, InputError

SHOWN = 40  # plan lines printed before "... and N more"


def _options(function: Callable) -> Callable:
    options = [
        click.option("--backend", "-b", default="auto", show_default=True,
                     help="iptables (nf_tables), iptables-legacy, libiptc, nft, firewalld, or auto."),
        click.option("--netns", metavar="NAME", help="Act inside this network namespace (ip netns)."),
        click.option("--root", metavar="DIR", envvar="NETFWD_ROOT", default="/", show_default=True,
                     help="Where persisted files go (sysctl.d, saved rules, state); env NETFWD_ROOT."),
        click.option("--state-dir", metavar="DIR", envvar="NETFWD_STATE_DIR",
                     help="State directory [default: ROOT/var/lib/netfwd]; env NETFWD_STATE_DIR."),
        click.option("--lock-timeout", type=click.FloatRange(0, 3600), default=60.0, show_default=True,
                     help="Seconds to wait for another netfwd to finish before giving up."),
        click.option("--cluster", metavar="NAME",
                     help="The cluster to act on (default: the spec's, else the only one recorded here)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


OUTPUT = click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True,
                      help="Report format.")
CATALOG = click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False),
                       help="A region catalog file to use instead of the bundled one.")
SPEC = click.argument("spec_file", metavar="SPEC", type=SpecPath())
RUNTIME_LOSS = click.option("--allow-runtime-loss", is_flag=True,
                            help="firewalld: reload even when configuration others made at runtime only "
                                 "(not --permanent) would be lost; without it such a change exits 3, "
                                 "naming what differs.")


def _engine(backend: str, netns: str | None, root: str, state_dir: str | None, lock_timeout: float,
            cluster: str | None, spec_file: str | None = None, allow_runtime_loss: bool = False):
    """The engine of one cluster: the spec's, else --cluster, else the only one with records."""
    from netfwd.engine.core import Engine
    from netfwd.engine.state import cluster_dir, migrate_legacy

    base, root_path = _base(backend, netns, root, state_dir)
    name = _cluster(base, cluster, spec_file)
    migrate_legacy(base, name)
    return Engine(cluster_dir(base, name), root_path, backend, lock_wait=lock_timeout, cluster=name,
                  allow_runtime_loss=allow_runtime_loss)


def _base(backend: str, netns: str | None, root: str, state_dir: str | None) -> tuple[Path, Path]:
    """Checked options, the namespace entered: (the state directory of every cluster, the root)."""
    from netfwd.backends import NAMES
    from netfwd.engine.state import default_dir

    if backend not in NAMES:
        raise InputError(f"unknown backend {backend!r}; choose one of: {', '.join(NAMES)}", field="--backend")
    if os.geteuid() != 0:
        from netfwd.errors import EnvironmentProblem

        raise EnvironmentProblem("changing the firewall needs root: run it with sudo")
    if netns:
        from netfwd import host

        host.enter(netns)
    root_path = Path(root)
    if not root_path.is_dir():
        raise InputError(f"{root} is not a directory", field="--root")
    from netfwd import trust

    base = Path(state_dir) if state_dir else default_dir(root_path, netns)
    trust.check_dir(base)  # read to find the clusters: trusted first, as every directory netfwd uses
    trust.check_dir(root_path / "etc/sysctl.d")
    return base, root_path


def _cluster(base: Path, option: str | None, spec_file: str | None) -> str:
    from netfwd.engine.state import resolve_cluster

    return resolve_cluster(base, option, spec_file)


def _print_plan(plan, header: str) -> None:
    click.echo(header)
    shown = plan.changes(SHOWN)
    for change in shown[:SHOWN]:
        click.echo(f"  {change.render()}")
    if plan.count > SHOWN:
        click.echo(f"  ... and about {plan.count - SHOWN} more (--output json lists all)")


def _summary(plan) -> str:
    return f"{plan.count} change(s), {plan.added} owned line(s) to add, {plan.removed} to remove"


@click.command()
@SPEC
@_options
@CATALOG
@OUTPUT
@click.pass_context
def plan(ctx: click.Context, spec_file: str, catalog_file: str | None, output: str, **common: Any) -> None:
    """Show what `apply` would change: + add, - remove, ~ replace. Exit 0 in sync, 4 changes pending.

    \b
    Example:
      netfwd plan rules/example.yaml --backend iptables
    """
    outcome = _engine(**common, spec_file=spec_file).plan(spec_file, catalog_file)
    if output == "json":
        click.echo(json.dumps(outcome.as_dict(), indent=2))
    elif outcome.plan.in_sync:
        click.echo(f"in sync ({outcome.backend}): nothing to change")
    else:
        _print_plan(outcome.plan, f"{outcome.backend}: {_summary(outcome.plan)}")
    if not outcome.plan.in_sync:
        ctx.exit(EXIT_CHANGES_PENDING)


@click.command()
@SPEC
@_options
@CATALOG
@click.option("--confirm-timeout", type=click.FloatRange(1, 86400), metavar="SECONDS",
              help="Roll back automatically after SECONDS unless `netfwd confirm` runs (survives this "
                   "process being killed and the SSH session dropping).")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking (required when stdin is not a terminal).")
@RUNTIME_LOSS
@OUTPUT
def apply(spec_file: str, catalog_file: str | None, confirm_timeout: float | None, yes: bool, output: str,
          allow_runtime_loss: bool, **common: Any) -> None:
    """Apply SPEC to this relay in one transaction; enable and persist forwarding.

    \b
    Example:
      netfwd apply rules/example.yaml --confirm-timeout 120 --yes
      netfwd confirm
    """
    engine = _engine(**common, spec_file=spec_file, allow_runtime_loss=allow_runtime_loss)
    outcome = engine.apply(spec_file, catalog=catalog_file, confirm_timeout=confirm_timeout,
                           approve=None if yes else _ask, explain=None if output == "json" else SHOWN)
    _report(outcome, output, "applied")


def _ask(plan) -> bool:
    if not sys.stdin.isatty():
        raise InputError("stdin is not a terminal: pass --yes to apply without asking", field="--yes")
    _print_plan(plan, f"{plan.backend}: {_summary(plan)}")
    return click.confirm("Apply these changes?", default=False)


def _report(outcome, output: str, verb: str) -> None:
    if output == "json":
        click.echo(json.dumps(outcome.as_dict(), indent=2))
        return
    if not outcome.changed:
        how = ": spec and live state unchanged since the last apply" if outcome.fast else ""
        click.echo(f"no changes ({outcome.backend}){how}")
        return
    _print_plan(outcome.plan, f"{verb} change {outcome.change_id} ({outcome.backend}): {_summary(outcome.plan)}")
    for note in outcome.notes:
        click.echo(f"note: {note}")


@click.command()
@_options
@click.option("--confirm-timeout", type=click.FloatRange(1, 86400), metavar="SECONDS",
              help="Put everything back after SECONDS unless `netfwd confirm` runs.")
@click.argument("spec_file", metavar="[SPEC]", required=False, type=SpecPath())
@RUNTIME_LOSS
@OUTPUT
def remove(spec_file: str | None, confirm_timeout: float | None, output: str, allow_runtime_loss: bool,
           **common: Any) -> None:
    """Remove every object the cluster owns (chains, jumps, table, rich rules, ipsets), nothing else.

    The cluster is SPEC's (then SPEC must be valid: a typo should not go unnoticed), else --cluster,
    else the only cluster recorded on this relay. Other clusters' forwards stay live.

    \b
    Example:
      netfwd remove --backend iptables
    """
    if spec_file:
        from netfwd.spec import open_spec

        open_spec(spec_file)
    outcome = _engine(**common, spec_file=spec_file,
                      allow_runtime_loss=allow_runtime_loss).remove(confirm_timeout=confirm_timeout)
    _report(outcome, output, "removed, as")


@click.command()
@_options
def confirm(**common: Any) -> None:
    """Keep the change made with `apply --confirm-timeout` (stops the rollback timer, persists it).

    \b
    Example:
      netfwd apply rules/example.yaml --confirm-timeout 120 --yes && netfwd confirm
    """
    click.echo(_engine(**common).confirm())


@click.command()
@_options
@OUTPUT
def rollback(output: str, **common: Any) -> None:
    """Put back the owned state from before the last change (run twice to redo it).

    \b
    Example:
      netfwd rollback --netns relay
    """
    outcome = _engine(**common).rollback()
    _report(outcome, output, "rolled back with")


@click.command()
@_options
@OUTPUT
@click.pass_context
def status(ctx: click.Context, output: str, **common: Any) -> None:
    """What netfwd owns live, cluster by cluster: counters, a pending confirm, drift since the last change.

    Every cluster recorded here (or only --cluster). Exit 1 when any cluster's live owned state
    differs from what netfwd last applied.

    \b
    Example:
      netfwd status --output json
    """
    from netfwd.engine.core import Engine
    from netfwd.engine.state import cluster_dir, clusters, migrate_legacy

    base, root = _base(common["backend"], common["netns"], common["root"], common["state_dir"])
    reports = []
    for name in [common["cluster"]] if common.get("cluster") else clusters(base):
        migrate_legacy(base, name)
        engine = Engine(cluster_dir(base, name), root, common["backend"], lock_wait=common["lock_timeout"],
                        cluster=name)
        reports.append(engine.status())
    if not reports:
        reports.append({"cluster": None, "state_dir": str(base / "clusters"), "backend": None, "applied": None,
                        "pending": None, "rollback": None, "interrupted": None, "drift": None, "forwards": []})
    # one cluster: its report at the top level too (as before clusters existed), every cluster under "clusters"
    report = {**(reports[0] if len(reports) == 1 else {}), "clusters": reports}
    if output == "json":
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        for index, each in enumerate(reports):
            if index:
                click.echo("")
            _print_status(each)
    if any(each.get("drift") for each in reports):
        ctx.exit(EXIT_FINDINGS)


def _print_status(report: dict) -> None:
    applied = report.get("applied")
    click.echo(f"cluster:  {report.get('cluster') or 'none recorded'}")
    click.echo(f"state:    {report['state_dir']}")
    click.echo(f"backend:  {report.get('backend') or 'none recorded'}")
    if applied:
        what = applied.get("spec") or "nothing (removed)"
        click.echo(f"applied:  {applied.get('id')} at {applied.get('at')}: {applied.get('op')} {what} "
                   f"({applied.get('forwards', 0)} forward(s))")
    else:
        click.echo("applied:  nothing recorded")
    pending = report.get("pending")
    if pending:
        alive = "timer running" if pending["timer_alive"] else "TIMER NOT RUNNING (next netfwd command rolls back)"
        click.echo(f"pending:  change {pending['id']} rolls back in {pending['seconds_left']:.0f} s unless "
                   f"`netfwd confirm` ({alive}, pid {pending['timer_pid']})")
    if report.get("interrupted"):
        click.echo(f"interrupted: change {report['interrupted']} (the next apply/rollback finishes or undoes it)")
    if report.get("rollback"):
        problem = report["rollback"].get("problem")
        click.echo(f"rollback: NOT RESTORABLE - {problem}" if problem else
                   f"rollback: available (undoes {report['rollback']['undoes']})")
    drift = report.get("drift")
    if drift:
        click.echo(f"DRIFT:    {drift['lines_missing']} owned line(s) missing, {drift['lines_appeared']} "
                   f"appeared since the last change - {drift['hint']}")
        for change in drift["changes"][:SHOWN]:
            click.echo(f"  {change['op']} {change['kind']} {change['key']}")
    elif report.get("backend") and applied:
        click.echo("drift:    none (live owned state = last change)")
    forwards = report.get("forwards") or []
    if forwards:
        click.echo(f"forwards live ({len(forwards)}):")
        for f in forwards[:SHOWN]:
            counters = "" if f["packets"] is None else f"  {f['packets']} pkts {f['bytes']} bytes"
            sources = "any" if f["sources"] is None else ",".join(f["sources"])
            target = f"[{f['to_address']}]" if ":" in f["to_address"] else f["to_address"]
            click.echo(f"  {f['listen_address'] or '*'}:{f['listen_port']}/{f['protocol']} -> "
                       f"{target}:{f['to_port']} from {sources}{counters}")
        if len(forwards) > SHOWN:
            click.echo(f"  ... and {len(forwards) - SHOWN} more")


__all__ = ["apply", "confirm", "plan", "remove", "rollback", "status"]
