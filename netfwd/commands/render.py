"""`netfwd validate`, `netfwd render`, `netfwd regions`, `netfwd schema`: the spec-to-text commands."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from netfwd.commands.params import SpecPath
from netfwd.errors import EXIT_BAD_INPUT, InputError, visible

CATALOG_OPTION = click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False),
                              help="A region catalog file to use instead of the bundled one.")
OUTPUT_OPTION = click.option("--output", "-o", "output", type=click.Choice(["table", "json"]), default="table",
                             show_default=True, help="Report format.")


def _catalog(path: str | None):
    from netfwd.catalog import load_catalog

    return load_catalog(path) if path else None


def _open(spec_file: str, catalog_file: str | None):
    from netfwd.spec import catalog_warnings, open_spec

    catalog = _catalog(catalog_file)
    loaded = open_spec(spec_file, catalog)
    for line in catalog_warnings(loaded, catalog):  # stderr, exit status unchanged
        click.echo(f"netfwd: warning: {line}", err=True)
    return loaded


@click.command()
@click.argument("spec_file", metavar="SPEC", type=SpecPath())
@CATALOG_OPTION
@OUTPUT_OPTION
def validate(spec_file: str, catalog_file: str | None, output: str) -> None:
    """Check SPEC and show the forwards it defines (exit 2 with file:line: field on bad input).

    \b
    Example:
      netfwd validate rules/example.yaml
    """
    loaded = _open(spec_file, catalog_file)
    spec = loaded.spec
    if output == "json":
        click.echo(json.dumps({"cluster": spec.cluster, "relay": spec.relay.os, "digest": spec.digest,
                               "forwards": [dict(f.essence()._asdict(), name=f.name) for f in spec.forwards]},
                              indent=2))
        return
    from netfwd.plaintable import print_table

    rows = []
    for f in spec.forwards:
        sources = "any" if f.sources is None else f"{len(f.sources)} CIDR(s)"
        if f.allow is not None and f.allow.regions:
            sources += f" ({', '.join(f.allow.regions)})"
        rows.append((f.name, str(f.listen), str(f.to), f.protocol, "yes" if f.masquerade else "no",
                     "yes" if f.local else "no", sources))
    print_table(f"{spec.cluster}: {len(spec.forwards)} forward(s) on a {spec.relay.os} relay",
                ("name", "listen", "to", "proto", "masq", "local", "sources"), rows)


@click.command()
@click.argument("spec_file", metavar="SPEC", type=SpecPath())
@click.option("--dialect", "-d", "dialect_name", required=True,
              help="iptables, iptables-restore, nft, firewalld, netsh, powershell, or all.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="Write <cluster>.<dialect>.<ext> and its .remove script into this directory.")
@click.option("--remove", is_flag=True, help="Print the remove script instead of the apply script.")
@click.option("--collector", is_flag=True, help="With --dialect powershell: the read-only collector whose report "
                                                "`netfwd doctor --windows-report` checks, instead.")
@CATALOG_OPTION
def render(spec_file: str, dialect_name: str, out_dir: str | None, remove: bool, catalog_file: str | None,
           collector: bool = False) -> None:
    """Render SPEC as complete apply and remove scripts for a platform.

    With one dialect and no --out, the script goes to stdout. `--dialect all` renders every
    dialect for the spec's relay OS and needs --out: it writes every dialect that accepts the
    spec, reports each refusal on stderr and then exits 2.

    \b
    Examples:
      netfwd render rules/example.yaml --dialect iptables > apply.sh
      netfwd render rules/example.yaml --dialect nft --remove
      netfwd render rules/example.yaml --dialect all --out out/
    """
    from netfwd.dialects import dialects_for, get_dialect, render_files

    loaded = _open(spec_file, catalog_file)
    if collector:  # netfwd doctor's Windows collector (netfwd/doctor/windows_collector.py)
        if dialect_name != "powershell":
            raise InputError("the collector is a PowerShell script: use it with --dialect powershell", field="--collector")
        from netfwd.doctor.windows_collector import collector_script

        return _emit_collector(collector_script(), f"{loaded.spec.cluster}.collect.ps1", out_dir)
    refused: list[InputError] = []
    if dialect_name == "all":
        if out_dir is None:
            raise InputError("--dialect all writes several files: give --out DIR", field="--out")
        written = 0
        for dialect in dialects_for(loaded.spec.relay.os):  # each that accepts the spec; refusals reported
            try:
                files = loaded.check(render_files, loaded.spec, [dialect])
            except InputError as problem:
                problem.message = f"{problem.message} (no {dialect.name} files written)"
                refused.append(problem)
                continue
            written += _write_files(Path(out_dir), files)  # now, not after the last: one dialect's texts in memory
        if not written:
            raise refused[0]
    else:
        rendered = loaded.check(render_files, loaded.spec, [get_dialect(dialect_name)])
        if out_dir is None:
            names = list(rendered)
            click.echo(rendered[names[1] if remove else names[0]], nl=False)
            return
        _write_files(Path(out_dir), rendered)
    for refusal in refused:
        click.echo(f"netfwd: error: {visible(refusal.render())}", err=True)
    if refused:
        raise click.exceptions.Exit(EXIT_BAD_INPUT)


def _out_dir(target: Path) -> None:
    """--out: made if missing; refused (exit 3) where others could swap the scripts before root runs
    them - the trust rule of every directory netfwd writes (netfwd/trust.py, docs/security.md)."""
    from netfwd import trust

    os.close(trust.open_dir(target, create=0o755))


def _write_files(target: Path, files: dict[str, str]) -> int:
    _out_dir(target)
    for name, text in files.items():
        _write_atomically(target / name, text)
        click.echo(str(target / name))
    return len(files)


def _emit_collector(text: str, name: str, out_dir: str | None) -> None:
    if out_dir is None:
        click.echo(text, nl=False)
        return
    _out_dir(Path(out_dir))
    _write_atomically(Path(out_dir) / name, text)
    click.echo(str(Path(out_dir) / name))


def _write_atomically(path: Path, text: str) -> None:
    executable = path.suffix in (".sh", ".nft")
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(temp, 0o755 if executable else 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@click.command()
@CATALOG_OPTION
@OUTPUT_OPTION
def regions(catalog_file: str | None, output: str) -> None:
    """Show the region catalog (source addresses per region), with the vendor table's anomalies marked.

    \b
    Example:
      netfwd regions --output json
    """
    from netfwd.catalog import load_catalog

    catalog = load_catalog(catalog_file)
    anomalies = catalog.anomalies()
    if output == "json":
        click.echo(json.dumps({
            "source": catalog.source, "source_updated": catalog.source_updated, "retrieved": catalog.retrieved,
            "regions": [{"id": r.id, "name": r.name, "public": [str(ip) for ip in r.public],
                         "private": [str(n) for n in r.private], "vpc": r.vpc} for r in catalog.regions],
            "anomalies": [{"code": a.code, "cidr": str(a.cidr), "regions": list(a.regions), "note": a.note}
                          for a in anomalies],
        }, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    marks: dict[str, list[str]] = {}
    for anomaly in anomalies:
        if anomaly.code != "shared-space":
            for region in anomaly.regions:
                others = [r for r in anomaly.regions if r != region]
                shared = f" (with {', '.join(others)})" if anomaly.code == "catalog-duplicate" and others else ""
                marks.setdefault(region, []).append(anomaly.code + shared)
    table = Table(title=f"Region catalog ({catalog.source_updated}); ! = anomaly",
                  caption="Private CIDRs in 100.64.0.0/10 are RFC 6598 shared space. "
                          "VPC-mode clusters: only regions marked vpc.")
    for column in ("region", "name", "public IPs", "private CIDR", "vpc", "anomalies"):
        table.add_column(column, overflow="fold")
    for r in catalog.regions:
        flagged = marks.get(r.id, [])
        table.add_row(r.id, r.name, ", ".join(str(ip) for ip in r.public),
                      ("! " if flagged else "") + ", ".join(str(n) for n in r.private),
                      "yes" if r.vpc else "no", ", ".join(sorted(set(flagged))))
    Console().print(table)


@click.command()
def schema() -> None:
    """Print the JSON Schema of the spec format (for editors: yaml-language-server, VS Code).

    \b
    Example:
      netfwd schema > netfwd.schema.json
    """
    from importlib import resources

    click.echo((resources.files("netfwd") / "data" / "spec.schema.json").read_text(encoding="utf-8"), nl=False)
