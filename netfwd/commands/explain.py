"""`netfwd explain`: which rule on the relay does what to a packet (a tracer for Linux netfilter)."""

from __future__ import annotations

import json

import click

from netfwd.errors import InputError


@click.command()
@click.option("--src", help="Source address of the packet (the client).")
@click.option("--dst", help="Destination address (what the client dials).")
@click.option("--proto", "protocol", type=click.Choice(["tcp", "udp", "icmp"]), default="tcp", show_default=True)
@click.option("--dport", type=click.IntRange(1, 65535), help="Destination port (tcp/udp).")
@click.option("--sport", type=click.IntRange(1, 65535), help="Source port (default: any match on it is unknown).")
@click.option("--in-interface", "in_interface", metavar="IF",
              help="Interface the packet arrives on (default: where the route back to --src leaves).")
@click.option("--netns", help="Explain against this live network namespace (default: the current one).")
@click.option("--ruleset", "rulesets", multiple=True, type=click.Path(dir_okay=False),
              help="Offline: iptables-save (either flavour), `nft list ruleset` or `nft -j` output. Repeatable.")
@click.option("--routes", type=click.Path(dir_okay=False), help="Offline: `ip -j route [show table all]` output.")
@click.option("--local", "local", multiple=True, metavar="ADDR[@IF]", help="Offline: an address of the relay.")
@click.option("--packets", type=click.Path(dir_okay=False),
              help="Explain many packets: JSON lines {src, dst, proto, dport, sport, in_interface}.")
@click.option("--output", "-o", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def explain(ctx: click.Context, src: str | None, dst: str | None, protocol: str, dport: int | None,
            sport: int | None, in_interface: str | None, netns: str | None, rulesets: tuple[str, ...],
            routes: str | None, local: tuple[str, ...], packets: str | None, output: str) -> None:
    """Follow the first packet of a new connection through the relay's firewall and routing:
    the verdict (forward to ADDRESS:PORT out of IF with the source the target sees, local, drop,
    reject, or unknown naming what is not modelled) and every rule on the way.

    Exit 0 for forward/local, 1 for drop/reject/unknown (any packet), 2 on bad input.

    \b
    Examples:
      netfwd explain --netns relay --src 203.0.113.7 --dst 10.0.0.4 --dport 16443
      netfwd explain --ruleset iptables-save.txt --ruleset nft.json --routes routes.json \\
          --local 10.0.0.4@eth0 --src 203.0.113.7 --dst 10.0.0.4 --dport 16443 -o json
    """
    from netfwd import explain as inputs
    from netfwd.firewall.trace import Tracer

    if packets and (src or dst):
        raise InputError("give either --packets or --src/--dst", field="--packets")
    if not packets and not (src and dst):
        raise InputError("name the packet: --src and --dst (and --dport for tcp/udp), or --packets", field="--src")
    if rulesets and netns:
        raise InputError("--ruleset explains files; --netns a live relay: give one", field="--netns")
    if (routes or local) and not rulesets:
        raise InputError("only applies with --ruleset (live routes and addresses are read)", field="--routes")
    probes = inputs.read_packets(packets) if packets else [
        inputs.make_probe(src, dst, protocol, dport, sport, in_interface)]  # type: ignore[arg-type]
    lazy = not packets  # one packet meets a few rules: read the others only if it does
    if rulesets:
        ruleset, host = inputs.read_ruleset_files(list(rulesets), lazy), inputs.offline_host(routes, list(local))
    else:
        ruleset, host, _read = inputs.live(netns, lazy)
    tracer = Tracer(ruleset, host)
    answers = [tracer.explain(probe) for probe in probes]
    if output == "json":
        for probe, answer in zip(probes, answers):
            doc = answer.as_dict() | {"packet": _packet(probe)}
            click.echo(json.dumps(doc) if packets else json.dumps(doc, indent=2))
    else:
        for probe, answer in zip(probes, answers):
            _print(probe, answer)
    ctx.exit(0 if all(a.verdict in ("forward", "local") for a in answers) else 1)


def _packet(probe) -> dict:
    return {"src": str(probe.src), "dst": str(probe.dst), "proto": probe.protocol, "dport": probe.dport,
            "sport": probe.sport, "in_interface": probe.in_interface}


def _print(probe, answer) -> None:
    ports = f" dport {probe.dport}" if probe.dport else ""
    click.echo(f"packet: {probe.protocol} {probe.src} -> {probe.dst}{ports}"
               + (f" on {probe.in_interface}" if probe.in_interface else ""))
    click.echo(f"verdict: {answer.summary()}")
    for step in answer.path:
        where = " ".join(p for p in (step.table, step.chain) if p)
        number = f"#{step.rule}" if step.rule is not None else "-"
        click.echo(f"  {step.hook:<11} {where:<30} {number:>4}  {step.action:<10} {step.text}")
    click.echo("")
