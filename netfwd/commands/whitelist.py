"""`netfwd whitelist verify` and `netfwd whitelist render`: check a source whitelist against the
region catalog, and emit the minimal allow list for a platform. The logic is in netfwd.whitelist;
this module parses options and prints (rich only for the table, imported only then)."""

from __future__ import annotations

import json

import click

from netfwd.errors import InputError

SHOW_ROWS = 20  # findings of one code shown per group in the table; JSON has them all


def _catalog(path: str | None):
    from netfwd.catalog import load_catalog

    return load_catalog(path)


def _regions(value: str | None, catalog) -> list[str]:
    if value is None:
        return []
    ids = [r.strip() for r in value.split(",") if r.strip()]
    return list(catalog.ids) if ids == ["all"] else ids


@click.group()
def whitelist() -> None:
    """Verify source whitelists against the region catalog, and render allow lists.

    \b
    Examples:
      netfwd whitelist verify --regions cn-hangzhou,cn-shanghai --against allow.txt
      netfwd whitelist verify --regions all --against iptables-save.txt --port 16443 -o json
      netfwd whitelist render --regions cn-hangzhou --dialect nft
    """


@whitelist.command()
@click.option("--regions", "-r", "regions_opt", required=True, metavar="R1,R2",
              help="Catalog region ids (see `netfwd regions`), or `all`.")
@click.option("--against", "-a", "source", required=True, metavar="SOURCE",
              help="A list, spec, iptables-save, nft (text/JSON), firewalld, netsh file, a script "
              "`netfwd render` wrote, or `live`.")
@click.option("--format", "-f", "fmt", metavar="NAME", help="Source format instead of detecting it: list, spec, "
              "iptables, nft, nft-json, firewalld-xml, firewalld, netsh, script.")
@click.option("--local-networks", metavar="CIDRS|none",
              help="On-prem/relay networks for local-overlap (default: the routing table).")
@click.option("--port", type=click.IntRange(1, 65535), help="Only the forward/rules for this listening port.")
@click.option("--protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True,
              help="Protocol of the forwarded traffic (firewall dumps).")
@click.option("--relay-address", metavar="ADDRS", help="The relay's own addresses, to evaluate `-d`/`daddr` "
              "matches in firewall dumps (live: read from the namespace).")
@click.option("--interface", metavar="IFACE", help="The interface clients arrive on, to evaluate `-i` matches.")
@click.option("--netns", metavar="NAME", help="With --against live: the network namespace of the relay.")
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), help="A region catalog file.")
@click.option("--output", "-o", type=click.Choice(["table", "json", "junit"]), default="table", show_default=True)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on coverage gaps.")
@click.pass_context
def verify(ctx: click.Context, regions_opt: str, source: str, fmt: str | None, local_networks: str | None,
           port: int | None, protocol: str, relay_address: str | None, interface: str | None,
           netns: str | None, catalog_file: str | None, output: str, strict: bool) -> None:
    """Check that SOURCE admits every address of the given regions, and nothing it should not.

    Exit 0 when every region is covered, 1 when any is partial or missing, 2 on bad input.
    """
    from netfwd.whitelist.load import load
    from netfwd.whitelist.localnets import from_routing_table, parse_cidrs
    from netfwd.whitelist.sources import Context
    from netfwd.whitelist.verify import check_regions, gc_paused, verify as run

    catalog = _catalog(catalog_file)
    region_ids = check_regions(catalog, _regions(regions_opt, catalog))
    if local_networks is None:
        local = from_routing_table(netns if source == "live" else None)
    else:
        local = None if local_networks.strip() == "none" else parse_cidrs(local_networks, "--local-networks")
    relay = parse_cidrs(relay_address, "--relay-address") if relay_address else None
    context = Context(catalog=catalog, protocol=protocol, port=port, relay_addresses=relay, interface=interface)
    with gc_paused():  # one pause for parse and check: see netfwd.whitelist.verify.gc_paused
        report = run(load(source, context, fmt, netns), catalog, region_ids, local)
    if output == "json":
        from netfwd.whitelist.report import to_json

        click.echo(json.dumps(to_json(report, strict), indent=2))
    elif output == "junit":
        from netfwd.whitelist.report import to_junit

        click.echo(to_junit(report), nl=False)
    else:
        _print_table(report)
    ctx.exit(report.exit_code(strict))


def _print_table(report) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    style = {"covered": "green", "partial": "yellow", "missing": "red"}
    for group in report.groups:
        table = Table(title=escape(f"{report.source} [{report.format}] {group.label}: "
                            f"{group.entries:,} entr{'y' if group.entries == 1 else 'ies'}"))
        for column in ("region", "status", "missing"):
            table.add_column(column, overflow="fold")
        for r in group.regions:
            table.add_row(r.region, f"[{style[r.status]}]{r.status}[/]", ", ".join(r.missing) or "-")
        console.print(table)
        _print_findings(console, group.findings)
    if report.findings:
        console.print("[bold]catalog and source notes[/]")
        _print_findings(console, report.findings)
    verdict = "every region covered" if report.covered else "GAPS: some regions are not (fully) admitted"
    console.print(f"[bold]{verdict}[/]")


def _print_findings(console, findings) -> None:
    from rich.markup import escape

    shown: dict[str, int] = {}
    for finding in findings:
        shown[finding.code] = shown.get(finding.code, 0) + 1
        if shown[finding.code] <= SHOW_ROWS:
            where = f"  [{finding.origin}]" if finding.origin else ""
            console.print(f"  {finding.severity} [bold]{finding.code}[/]: {escape(finding.message + where)}",
                          markup=True, highlight=False, soft_wrap=True)
    for code, count in shown.items():
        if count > SHOW_ROWS:
            console.print(f"  ... and {count - SHOW_ROWS} more {code} finding(s) (see --output json)")


@whitelist.command()
@click.option("--regions", "-r", "regions_opt", metavar="R1,R2", help="Catalog region ids, or `all`.")
@click.option("--cidrs", metavar="CIDRS", help="Extra IPs/CIDRs/ranges, comma-separated.")
@click.option("--dialect", "-d", required=True, metavar="NAME",
              help="ipset, nft, firewalld, netsh, powershell, or list.")
@click.option("--name", default="netfwd_allow", show_default=True, help="The set name (ipset, nft, firewalld).")
@click.option("--catalog", "catalog_file", type=click.Path(dir_okay=False), help="A region catalog file.")
def render(regions_opt: str | None, cidrs: str | None, dialect: str, name: str, catalog_file: str | None) -> None:
    """Print the minimal aggregated whitelist (regions + CIDRs) in a platform's syntax.

    \b
    Examples:
      netfwd whitelist render --regions cn-hangzhou,cn-shanghai --dialect ipset | ipset restore
      netfwd whitelist render --regions all --cidrs 203.0.113.7 --dialect powershell
    """
    from netfwd.whitelist.localnets import parse_cidrs
    from netfwd.whitelist.render import aggregate, render as spell
    from netfwd.whitelist.verify import check_regions

    catalog = _catalog(catalog_file)
    region_ids = check_regions(catalog, _regions(regions_opt, catalog)) if regions_opt else []
    extra = list(parse_cidrs(cidrs, "--cidrs").iter_cidrs()) if cidrs else []
    if not region_ids and not extra:
        raise InputError("give --regions and/or --cidrs", field="--regions")
    click.echo(spell(aggregate(catalog, region_ids, extra), dialect, name), nl=False)
