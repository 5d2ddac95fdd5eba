"""`netfwd audit policy|check|patch`: the vendor guide's audit prerequisites, for the current Kubernetes."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import click

from netfwd.errors import InputError

SETTINGS_OPTIONS = [
    click.option("--log-path", default="/var/log/kubernetes/kubernetes.audit", show_default=True,
                 help="--audit-log-path to require/add (an existing flag's value wins)."),
    click.option("--policy-file", default="/etc/kubernetes/audit-policy.yaml", show_default=True,
                 help="--audit-policy-file to require/add (an existing flag's value wins)."),
]


def _settings_options(function):
    for option in reversed(SETTINGS_OPTIONS):
        function = option(function)
    return function


@click.group()
def audit() -> None:
    """Audit logging for Security Center's log-based threat detection (Kubernetes >= 1.16).

    \b
    Examples:
      netfwd audit policy --k8s-version 1.28 > /etc/kubernetes/audit-policy.yaml
      netfwd audit check /etc/kubernetes/manifests/kube-apiserver.yaml --cluster-id c0a1b2...
      netfwd audit patch /etc/kubernetes/manifests/kube-apiserver.yaml --cluster-id c0a1b2... --in-place
    """


@audit.command()
@click.option("--k8s-version", help="The cluster's Kubernetes version (default: 1.12 or later -> audit.k8s.io/v1).")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def policy(k8s_version: str | None, out_file: str | None) -> None:
    """Print the vendor guide's audit policy with the apiVersion the cluster serves.

    The guide's template says audit.k8s.io/v1beta1, which Kubernetes 1.24 removed: a
    kube-apiserver given it does not start. This writes audit.k8s.io/v1 (1.12 and later),
    or v1beta1 for 1.8-1.11.

    \b
    Example:
      netfwd audit policy --k8s-version 1.28 > /etc/kubernetes/audit-policy.yaml
    """
    from netfwd.audit.policy import MIN_THREAT_DETECTION, parse_version, policy_text

    version = parse_version(k8s_version) if k8s_version else None
    text = policy_text(version)
    if version is not None and version < MIN_THREAT_DETECTION:
        click.echo(f"netfwd: note: Kubernetes {version[0]}.{version[1]} is older than 1.16: Security Center's "
                   "log-based threat detection needs 1.16 or later", err=True)
    if out_file:
        _write_atomically(Path(out_file), text, None)
        click.echo(f"netfwd: wrote {out_file}", err=True)
    else:
        click.echo(text, nl=False)


@audit.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--cluster-id", help="Require the log agent env entries for this cluster id (default: any found).")
@_settings_options
@click.option("--output", "-o", type=click.Choice(["table", "json", "junit"]), default="table", show_default=True)
@click.pass_context
def check(ctx: click.Context, manifest: str, cluster_id: str | None, log_path: str, policy_file: str,
          output: str) -> None:
    """Is MANIFEST (the kube-apiserver static pod) ready for audit log collection?

    Each missing piece is a finding with its fix. Exit 0 when complete, 1 otherwise.

    \b
    Example:
      netfwd audit check /etc/kubernetes/manifests/kube-apiserver.yaml --cluster-id c0a1b2c3
    """
    from netfwd.audit.manifest import Settings, check_cluster_id, load_manifest
    from netfwd.audit.manifest import check as check_manifest

    settings = Settings(log_path=_abs(log_path, "--log-path"), policy_file=_abs(policy_file, "--policy-file"),
                        cluster_id=check_cluster_id(cluster_id) if cluster_id else None)
    started = time.perf_counter()
    items = check_manifest(load_manifest(manifest), settings)
    report = _report(items, time.perf_counter() - started)
    _show(report, output, f"netfwd audit check {manifest}")
    ctx.exit(report.exit_code)


@audit.command()
@click.argument("manifest", type=click.Path(dir_okay=False, exists=False))
@click.option("--cluster-id", required=True, help="The Security Center cluster id (Assets > Container > Cluster).")
@_settings_options
@click.option("--in-place", is_flag=True, help="Rewrite MANIFEST (after a backup) instead of printing the result.")
@click.option("--backup", "backup_file", type=click.Path(dir_okay=False),
              help="Backup file for --in-place (default: .<name>.netfwd-<time>.bak next to it: a dot file, "
                   "which the kubelet ignores).")
@click.pass_context
def patch(ctx: click.Context, manifest: str, cluster_id: str, log_path: str, policy_file: str, in_place: bool,
          backup_file: str | None) -> None:
    """Add the missing audit flags, mounts and env entries to MANIFEST; change nothing else.

    Every existing line, comment and the order stay as they are; running it twice changes
    nothing. Without --in-place the result goes to stdout. What was added goes to stderr.

    \b
    Example:
      netfwd audit patch /etc/kubernetes/manifests/kube-apiserver.yaml --cluster-id c0a1b2c3 --in-place
    """
    from netfwd.audit.manifest import Settings, check_cluster_id
    from netfwd.audit.patch import patch_text

    settings = Settings(log_path=_abs(log_path, "--log-path"), policy_file=_abs(policy_file, "--policy-file"),
                        cluster_id=check_cluster_id(cluster_id))
    from netfwd.audit.manifest import MAX_MANIFEST_BYTES
    from netfwd.inputfile import read_utf8

    path = Path(manifest)
    backup = None
    if in_place:  # root rewrites what the kubelet runs: only where nobody else can swap it (netfwd/trust.py)
        from netfwd import trust

        backup = Path(backup_file) if backup_file else \
            path.with_name(f".{path.name}.netfwd-{time.strftime('%Y%m%d-%H%M%S')}.bak")
        for directory in dict.fromkeys((path.parent, backup.parent)):
            trust.check_dir(directory)
    original = read_utf8(path, MAX_MANIFEST_BYTES, "static pod manifest")
    result = patch_text(original, settings, manifest)
    for line in result.added:
        click.echo(f"netfwd: added {line}", err=True)
    if not result.changed:
        click.echo(f"netfwd: {manifest} already has every audit piece; nothing changed", err=True)
    if backup is not None:
        if result.changed:
            _write_atomically(backup, original, path)
            _write_atomically(path, result.text, path)
            click.echo(f"netfwd: wrote {manifest} (backup: {backup}); the kubelet restarts kube-apiserver "
                       "when it sees the change", err=True)
    else:
        sys.stdout.write(result.text)
    for item in result.remaining:
        click.echo(f"netfwd: still to fix by hand: {item.message} -- fix: {item.fix}", err=True)
    ctx.exit(1 if any(i.severity == "error" for i in result.remaining) else 0)


def _abs(value: str, field: str) -> str:
    if not value.startswith("/") or "\n" in value:
        raise InputError(f"{value!r} is not an absolute path", field=field)
    return value


def _report(items, seconds: float):
    """Audit items as a doctor report: one result per piece (same table/JSON/JUnit as doctor)."""
    from netfwd.doctor.framework import Finding, Report, Result

    report = Report(seconds=seconds)
    for item in items:
        findings = () if item.ok else (Finding(item.severity, item.message, item.fix),)
        status = "ok" if item.ok else item.severity
        report.results.append(Result(item.name, "audit", status, item.message if item.ok else "", findings, 0.0))
    return report


def _show(report, output: str, title: str) -> None:
    from netfwd.doctor import output as out

    if output == "json":
        click.echo(out.to_json(report, title), nl=False)
    elif output == "junit":
        click.echo(out.to_junit(report, title), nl=False)
    else:
        out.print_table(report, title)


def _write_atomically(path: Path, text: str, like: Path | None) -> None:
    """Write via a hidden temp file in the same directory (the kubelet ignores dot files), keeping
    the mode and owner of `like` (a manifest is usually 0600 root)."""
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        if like is not None and like.exists():
            info = like.stat()
            os.chmod(temp, info.st_mode & 0o7777)
            try:
                os.chown(temp, info.st_uid, info.st_gid)
            except PermissionError:
                pass
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
