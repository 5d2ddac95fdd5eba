"""`netfwd lab up|status|exec|down|demo`: the rehearsal topology from the command line (needs root).

Thin wrappers over :mod:`netfwd.lab`; a lab outlives the command that built it (its state file
under $NETFWD_LAB_DIR records everything), so `up`, `exec` and `down` can be separate runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import click

from netfwd.commands.params import SpecPath
from netfwd.errors import EXIT_FINDINGS, EnvironmentProblem, InputError
from netfwd.lab.topology import MAX_FLEET

BUNDLED_EXAMPLE = Path(str(resources.files("netfwd") / "data" / "examples" / "example.yaml"))  # package data
NAME_OPTION = click.option("--name", "-n", help="The lab's name (default: the only lab there is).")
OUTPUT_OPTION = click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Report format.")


def _pick(name: str | None):
    """The lab called `name`, or the only recorded lab; a clear error otherwise."""
    from netfwd.lab import Lab
    from netfwd.lab.state import recorded_labs

    if name:
        return Lab.attach(name)
    labs = recorded_labs()
    if not labs:
        raise InputError("no lab is up (start one with `netfwd lab up`)", field="--name")
    if len(labs) > 1:
        raise InputError(f"several labs are up ({', '.join(labs)}): choose one with --name", field="--name")
    return Lab.attach(labs[0])


@click.group()
def lab() -> None:
    """Rehearse the relay path in network namespaces: client -> relay -> on-prem API server.

    \b
    Example:
      sudo netfwd lab demo
      sudo netfwd lab up --name ab12
      sudo netfwd lab up --fleet 3 --name fl01
      sudo netfwd lab up --fleet 3 --firewalld-relay relay3
      sudo netfwd lab exec --name ab12 client -- ip route
      sudo netfwd lab down --name ab12
    """


@lab.command()
@NAME_OPTION
@click.option("--spec", "spec_file", type=SpecPath(),
              help="Name the relay's outside interface after the spec and start a stand-in on each target port.")
@click.option("--router", is_flag=True, help="Put a router between client and relay (the relay is hop 2).")
@click.option("--route-back", is_flag=True, help="Give on-prem a default route via the relay (no masquerade needed).")
@click.option("--firewalld", is_flag=True, help="Run firewalld in the relay (private D-Bus and /etc/firewalld); "
                                              "with --fleet, in every relay.")
@click.option("--firewalld-relay", "firewalld_relays", multiple=True, metavar="RELAY",
              help="With --fleet: run firewalld in this relay only, e.g. relay2 (repeatable) - a fleet of "
                   "RHEL-family and Debian relays side by side.")
@click.option("--userland", type=click.Choice(["modern", "centos7"]), default="modern", show_default=True,
              help="The relay's firewall programs: this machine's, or CentOS 7's (iptables 1.4.21, firewalld "
                   "0.6.3, no nft; built from vendor/ on first use, see docs/compat.md).")
@click.option("--fleet", type=click.IntRange(1, MAX_FLEET), metavar="N",
              help="Build a fleet lab instead: N relays (relay1..N, each with onpremN behind it), a client and "
                   "an Ansible controller, with a real sshd in every relay and the client (docs/fleet.md).")
@click.option("--no-apiserver", is_flag=True, help="Start no API-server stand-in.")
@click.option("--san", "sans", multiple=True, help="A SAN for the stand-in's certificate (repeatable; "
                                                   "default: on-prem IP and kubernetes names, not the relay).")
@click.option("--git-version", default="v1.28.3", show_default=True, help="The stand-in's /version gitVersion.")
@click.option("--anonymous/--no-anonymous", default=True, show_default=True,
              help="--no-anonymous: the stand-in answers 401 to everything, like --anonymous-auth=false.")
@OUTPUT_OPTION
def up(name: str | None, spec_file: str | None, router: bool, route_back: bool, firewalld: bool,
       firewalld_relays: tuple[str, ...], userland: str, fleet: int | None, no_apiserver: bool, sans: tuple[str, ...], git_version: str, anonymous: bool,
       output: str) -> None:
    """Build a lab and leave it running; print its name and addresses."""
    from netfwd.lab import Lab
    from netfwd.lab.core import crash_point

    if fleet is not None:
        single = {"--spec": spec_file, "--router": router, "--route-back": route_back,
                  "--userland": userland != "modern", "--san": sans, "--git-version": git_version != "v1.28.3",
                  "--no-anonymous": not anonymous}
        if any(single.values()):
            raise InputError(f"{', '.join(k for k, v in single.items() if v)}: only for a one-relay lab, "
                             "not with --fleet", field="--fleet")
        relays = [f"relay{i}" for i in range(1, fleet + 1)]
        unknown = [r for r in firewalld_relays if r not in relays]
        if unknown:
            raise InputError(f"{unknown[0]!r} is not a relay of this fleet ({relays[0]}..{relays[-1]})",
                             field="--firewalld-relay")
        with_firewalld = relays if firewalld else list(dict.fromkeys(firewalld_relays))
        _show(_fleet_up(fleet, name, apiservers=not no_apiserver, firewalld=with_firewalld), output)
        return
    if firewalld_relays:
        raise InputError("only with --fleet (a one-relay lab takes --firewalld)", field="--firewalld-relay")

    ports: list[tuple[int, str]] = [(6443, "tcp")]
    interface = "ext0"
    if spec_file:
        from netfwd.spec import load_spec

        spec = load_spec(spec_file)
        interface = spec.relay.interface or interface
        ports = sorted({(f.to.port, f.protocol) for f in spec.forwards})
    built = Lab.up(name, router=router, onprem_route_back=route_back, relay_outside_if=interface,
                   userland=userland)
    try:
        if not no_apiserver:
            for port, protocol in ports:
                if protocol == "tcp":
                    built.start_server("onprem", port, kind="apiserver", sans=list(sans) or None,
                                       git_version=git_version, anonymous=anonymous)
                else:
                    built.start_server("onprem", port, udp=True)
        crash_point("servers")
        if firewalld:
            built.start_firewalld()
    except BaseException:
        built.down()
        raise
    _show(built.status(rules=False), output)  # a fresh relay has no rules: skip reading them


def _fleet_up(relays: int, name: str | None, apiservers: bool, firewalld: list[str]) -> dict:
    """A fleet lab with sshd in every relay and the client (firewalld in the relays `firewalld` names),
    and an Ansible inventory for it; its status."""
    from netfwd.lab.core import crash_point
    from netfwd.lab.fleet import FleetLab
    from netfwd.safefiles import write_atomic

    built = FleetLab.up(relays=relays, name=name)
    try:
        for node in firewalld:  # before sshd, which then runs in firewalld's mount namespace (its D-Bus)
            built.start_firewalld(node=node)
        for node in (*built.relays, "client"):
            built.start_sshd(node)
        if apiservers:
            built.start_apiservers()
        crash_point("servers")
        inventory = built.workdir / "inventory.json"  # JSON is YAML: ansible-playbook -i reads it
        write_atomic(inventory, json.dumps(built.inventory(), indent=2) + "\n")
    except BaseException:
        built.down()
        raise
    return {**built.status(), "inventory": str(inventory)}


@lab.command()
@NAME_OPTION
@OUTPUT_OPTION
def status(name: str | None, output: str) -> None:
    """Show a lab's namespaces, addresses, processes and the netfwd rules applied in its relay."""
    from netfwd.lab import Lab
    from netfwd.lab.state import recorded_labs

    from netfwd.errors import NetfwdError

    if name:
        reports = [Lab.attach(name).status()]
    else:
        reports = []
        for found in recorded_labs():
            try:
                reports.append(Lab.attach(found).status())
            except NetfwdError as problem:  # torn down meanwhile, or a torn record: say so, go on
                click.echo(f"netfwd: lab {found}: {problem}", err=True)
    if output == "json":
        click.echo(json.dumps(reports if not name else reports[0], indent=2))
        return
    if not reports:
        click.echo("no lab is up")
    for report in reports:
        _show(report, "table")


@lab.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@NAME_OPTION
@click.argument("node", shell_complete=lambda _ctx, _param, incomplete: [
    n for n in ("client", "relay", "onprem", "router", "controller", "relay1", "onprem1") if n.startswith(incomplete)])
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(name: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND inside NODE's namespace (`netfwd lab exec relay -- iptables-save`); exits with its code.

    NODE: client, relay, onprem, router; in a fleet lab controller, client, relayN, onpremN."""
    chosen = _pick(name)
    try:
        chosen.ns(node)
    except ValueError as problem:
        raise InputError(str(problem), field="NODE") from None
    argv = list(command[1:] if command and command[0] == "--" else command)
    try:
        done = subprocess.run(chosen.exec_argv(node, argv))
    except FileNotFoundError as missing:
        raise EnvironmentProblem(f"cannot run ip netns exec: {missing}") from None
    sys.exit(done.returncode)


@lab.command()
@click.option("--name", "-n", "names", multiple=True, help="The lab to remove (repeatable; default: the only one).")
def down(names: tuple[str, ...]) -> None:
    """Stop every process and remove every namespace a lab made (also after a crash); only those."""
    from netfwd.lab.core import destroy

    targets = list(names) or [_pick(None).name]
    for target in targets:
        from netfwd.lab.state import LAB_NAME_RE, state_path

        if not LAB_NAME_RE.match(target) or not state_path(target).exists():
            raise InputError(f"no lab named {target!r} (see `netfwd lab status`)", field="--name")
        removed = destroy(target)
        click.echo(f"lab {target} is down ({len(removed)} item(s) removed)")


@lab.command()
@click.option("--spec", "spec_file", type=SpecPath(), default=None,
              help="The spec to rehearse (default: the bundled example, rules/example.yaml in the repository).")
@click.option("--dialect", "-d", "dialect_name", default="iptables", show_default=True,
              help="Which Linux dialect's script to apply on the relay.")
@click.option("--keep", is_flag=True, help="Leave the lab running afterwards (remove it with `netfwd lab down`).")
@OUTPUT_OPTION
def demo(spec_file: str | None, dialect_name: str, keep: bool, output: str) -> None:
    """Up -> render and apply the spec on the relay -> probe from the client -> report -> down.

    Targets are replaced by the lab's on-prem address, and the lab's client range is added to the
    whitelist (in memory only). Exit 0 when every check behaved as expected, 1 otherwise.
    """
    from netfwd.lab.demo import run_demo

    path = spec_file or str(BUNDLED_EXAMPLE)
    if not Path(path).is_file():
        raise InputError("no such file", file=path)
    quiet = output == "json"
    report, kept = run_demo(path, dialect_name, keep=keep,
                            progress=(lambda _: None) if quiet else (lambda m: click.echo(f"* {m}", err=True)))
    if output == "json":
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"netfwd lab demo: {report.spec} via {report.dialect} in lab {report.lab}")
        for column in ("check", "expected", "got", "", "note"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            table.add_row(check.name, check.expect, check.got, "ok" if check.ok else "FAIL", check.note)
        Console().print(table)
        click.echo("all checks as expected" if report.ok else "some checks FAILED")
        if kept is not None:
            click.echo(f"lab {kept.name} kept: netfwd lab down --name {kept.name}")
    if not report.ok:
        sys.exit(EXIT_FINDINGS)


def _show(report: dict, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(report, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    import time

    age = int(time.time() - report["created"])
    builder = report["builder"]
    userland = "" if report.get("userland", "modern") == "modern" else f" (relay userland: {report['userland']})"
    table = Table(title=f"lab {report['name']}{userland}" + ("" if report["complete"] else " (incomplete: run lab down)"),
                  caption=f"built {age} s ago by PID {builder['pid']} "
                          f"({'still running' if builder['alive'] else 'gone'})")
    for column in ("node", "netns", "interfaces", "processes"):
        table.add_column(column, overflow="fold")
    for node, info in report["nodes"].items():
        interfaces = "; ".join(f"{i} {' '.join(a for a in addrs if ':' not in a)}".strip()
                               for i, addrs in info["interfaces"].items() if i != "lo")
        procs = ", ".join(f"{p['kind']}:{p['port'] or ''} pid {p['pid']}{'' if p['alive'] else ' (dead)'}"
                          for p in report["processes"] if p["node"] == node)
        table.add_row(node, info["netns"] + ("" if info["exists"] else " (missing)"), interfaces, procs)
    Console().print(table)
    if report["applied"]:
        applied = {k: v for k, v in report["applied"].items() if k != "ip_forward"}
        click.echo(f"relay ip_forward={report['applied'].get('ip_forward', ['?'])[0]}; "
                   f"netfwd rules: {sum(len(v) for v in applied.values()) or 'none'}"
                   + "".join(f"\n  [{k}] {line}" for k, lines in applied.items() for line in lines))
    a = report["addrs"]
    if "relays" in a:  # a fleet lab (netfwd.lab.fleet)
        click.echo(f"{len(a['relays'])} relays: " + ", ".join(f"{r['node']} {r['outside']} -> {r['onprem']}"
                                                             for r in a["relays"])
                   + f"; controller {a['controller']}; allowed source {a['client_allowed']} ({a['allowed_cidr']}), "
                     f"denied source {a['client_denied']}")
        if "inventory" in report:
            click.echo(f"Ansible inventory (SSH as root with the lab's key): {report['inventory']}")
        return
    click.echo(f"clients dial {a['relay_outside']}; allowed source {a['client_allowed']} "
               f"({a['allowed_cidr']}), denied source {a['client_denied']}; on-prem {a['onprem']}")
