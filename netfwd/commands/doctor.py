"""`netfwd doctor`: is this relay (and cluster) ready? Every problem with its one-line fix."""

from __future__ import annotations

import os

import click

from netfwd.commands.params import SpecPath
from netfwd.errors import InputError


@click.command()
@click.argument("spec_file", metavar="[SPEC]", required=False, type=SpecPath())
@click.option("--netns", help="Check inside this network namespace (default: the current one).")
@click.option("--root", default=None, type=click.Path(file_okay=False),
              help="Where the relay's /etc is (sysctl.d); default $NETFWD_ROOT or /.")
@click.option("--windows-report", "windows_report", type=click.Path(dir_okay=False),
              help="Check a Windows relay offline, from the collector's report "
                   "(`netfwd render SPEC --dialect powershell --collector`).")
@click.option("--cluster", "probe", is_flag=True,
              help="Also probe the API server through the relay (sends a few TCP/TLS/HTTP requests).")
@click.option("--via", help="HOST:PORT to dial for --cluster (default: the spec's relay/listen address).")
@click.option("--ca", type=click.Path(dir_okay=False), help="CA to verify the API server with (--cluster).")
@click.option("--timeout", type=float, default=3.0, show_default=True, help="Per-step timeout for --cluster.")
@click.option("--manifest", type=click.Path(dir_okay=False),
              help="Also check this kube-apiserver manifest for the audit prerequisites.")
@click.option("--cluster-id", help="The Security Center cluster id, for --manifest's log agent entries.")
@click.option("--audit-policy", "audit_policy", type=click.Path(dir_okay=False),
              help="Also check this audit policy file's apiVersion against the cluster version.")
@click.option("--k8s-version", help="The cluster's Kubernetes version (else learnt with --cluster).")
@click.option("--ignore", help="Downgrade these checks' errors to warnings: NAME,NAME,... or all.")
@click.option("--only", help="Run only these checks: NAME,NAME,...")
@click.option("--list", "list_checks", is_flag=True, help="List every check and exit.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "junit"]), default="table", show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="Table: also show what passing checks saw.")
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), help="A region catalog file to use.")
@click.pass_context
def doctor(ctx: click.Context, spec_file: str | None, netns: str | None, root: str | None,
           windows_report: str | None, probe: bool, via: str | None, ca: str | None, timeout: float,
           manifest: str | None, cluster_id: str | None, audit_policy: str | None, k8s_version: str | None,
           ignore: str | None, only: str | None, list_checks: bool, output: str, verbose: bool,
           catalog_file: str | None) -> None:
    """Pre-flight checks for the relay (and the cluster): what is not ready, and the fix.

    Reads only. Exit 0 when no error remains (after --ignore), 1 otherwise, 2 on bad input.

    \b
    Examples:
      netfwd doctor rules/example.yaml
      netfwd doctor rules/example.yaml --netns relay --output json
      netfwd doctor rules/example-windows.yaml --windows-report relay.json
      netfwd doctor rules/example.yaml --cluster --manifest /etc/kubernetes/manifests/kube-apiserver.yaml
      netfwd doctor rules/example.yaml --ignore docker,conntrack-unreplied
    """
    from netfwd.doctor import all_checks
    from netfwd.doctor import doctor as run_doctor
    from netfwd.doctor.context import ClusterOptions

    if list_checks:
        for check in all_checks():
            click.echo(f"{check.name:24} {check.group:8} {check.doc}")
        return
    spec = None
    if spec_file:
        from netfwd.commands.render import _open

        spec = _open(spec_file, catalog_file).spec
    if windows_report and spec is None:
        raise InputError("--windows-report needs the SPEC to check the report against", field="SPEC")
    if windows_report and netns:
        raise InputError("--netns looks at a Linux relay; a Windows relay is checked from its report",
                         field="--netns")
    if spec is not None and spec.relay.os == "windows" and not windows_report:
        raise InputError("the spec describes a Windows relay: run the collector there and pass its report "
                         "(--windows-report FILE); print it with `netfwd render SPEC --dialect powershell "
                         "--collector`", field="--windows-report")
    version = None
    if k8s_version:
        from netfwd.audit.policy import parse_version

        version = parse_version(k8s_version)
    if cluster_id:
        from netfwd.audit.manifest import check_cluster_id

        check_cluster_id(cluster_id)
    cluster = ClusterOptions(via=via, ca=ca, timeout=timeout, manifest=manifest, cluster_id=cluster_id,
                             audit_policy=audit_policy, k8s_version=version)
    if probe and spec is None:
        raise InputError("--cluster needs the SPEC (which forwards to probe)", field="SPEC")
    names = [n.strip().lower() for n in (only or "").split(",") if n.strip()]
    report = run_doctor(spec, netns=netns, root=root or os.environ.get("NETFWD_ROOT") or "/",
                        windows_report=windows_report, cluster=cluster, ignore=ignore, only=names, probe=probe)
    from netfwd.doctor import output as out

    if output == "json":
        click.echo(out.to_json(report), nl=False)
    elif output == "junit":
        click.echo(out.to_junit(report), nl=False)
    else:
        out.print_table(report, verbose=verbose)
    ctx.exit(report.exit_code)
