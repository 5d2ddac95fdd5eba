"""`netfwd explain`'s inputs: the ruleset and routing facts (live from a namespace, or from files)
and the packets to explain. The walk itself is netfwd.firewall.trace."""

from __future__ import annotations

import json
from typing import Callable

from netaddr import AddrFormatError, IPAddress

from netfwd.errors import InputError
from netfwd.firewall.routing import Host, read_routes
from netfwd.firewall.model import Ruleset
from netfwd.firewall.trace import Probe

PROTOCOLS = ("tcp", "udp", "icmp")
RULESET_FORMATS = ("iptables", "nft", "nft-json")


def read_ruleset_files(paths: list[str], lazy: bool = False) -> Ruleset:
    """Every file (iptables-save of either flavour, `nft list ruleset`, `nft -j`), detected by content,
    into one model; tables keep apart per file (`2/ipv4:filter`) when several are given. `lazy`:
    iptables rules are read whole when first used (for one packet, which meets few of them)."""
    from netfwd.inputfile import read_text as read_file
    from netfwd.whitelist.detect import detect

    merged = Ruleset()
    for number, path in enumerate(paths, 1):
        text = read_file(path)
        fmt = detect(text)
        if fmt not in RULESET_FORMATS:
            raise InputError("is not iptables-save, `nft list ruleset` or `nft -j list ruleset` output", file=path)
        part = _reader(fmt, lazy)(text, path)
        prefix = f"{number}/" if len(paths) > 1 else ""
        for (table, name), chain in part.chains.items():
            merged.chains[(prefix + table, name)] = chain
    return merged


def _reader(fmt: str, lazy: bool) -> Callable[[str, str], Ruleset]:
    """The reader of one format, imported when a file of it is read (each costs milliseconds to
    import, and the one-packet run is budgeted as a whole)."""
    if fmt == "iptables":
        from netfwd.firewall.iptables_save import read_ruleset

        return lambda text, path: read_ruleset(text, path, lazy)
    if fmt == "nft":
        from netfwd.firewall.nft_text import read_text

        return read_text
    from netfwd.firewall.nft_json import read_json

    return read_json


def offline_host(routes: str | None, local: list[str]) -> Host:
    from netfwd.inputfile import read_text as read_file

    host = read_routes(read_file(routes), routes) if routes else Host()
    for value in local:
        address, _, interface = value.partition("@")
        host.local[_address(address, "--local")] = interface or None
        if interface and "." in address and interface not in host.primary:
            host.primary[interface] = IPAddress(address)
    return host


def live(netns: str | None, lazy: bool = False) -> tuple[Ruleset, Host, list[str]]:
    """Every table the kernel evaluates in `netns` (iptables-nft, iptables-legacy, native nft) and
    its routes, addresses, forwarding and rp_filter settings (`lazy`: see read_ruleset_files)."""
    from netfwd.firewall.live import read_live
    from netfwd.relayfacts import LinuxRelay

    relay = LinuxRelay(netns)
    ruleset, read = read_live(relay, lazy)
    data, problem = relay._ip(["route", "show", "table", "all"])
    if data is None:
        raise InputError(f"cannot read the routes of {relay.where}: {problem}", field="--netns")
    host = read_routes(json.dumps(data), f"routes of {relay.where}")
    for name, nets in relay.interfaces.items():
        for net in nets:
            host.local.setdefault(net.ip, name)
            if net.version == 4 and name not in host.primary:
                host.primary[name] = net.ip
    host.forwarding = {4: relay.sysctl("net.ipv4.ip_forward") == "1",
                       6: relay.sysctl("net.ipv6.conf.all.forwarding") == "1"}
    host.rp_filter = dict(relay.rp_filter)
    return ruleset, host, read


def _address(value: str, field: str) -> IPAddress:
    try:
        return IPAddress(value.strip("[]"), flags=0)
    except (AddrFormatError, ValueError, TypeError):
        raise InputError(f"{value!r} is not an IP address", field=field) from None


def _port(value, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isascii()
                                                                   and value.isdigit())) \
            or not 0 < int(value) < 65536:
        raise InputError(f"{value!r} is not a port (1-65535)", field=field)
    return int(value)


def make_probe(src: str, dst: str, protocol: str = "tcp", dport=None, sport=None,
               in_interface: str | None = None, where: str = "") -> Probe:
    """A packet from options or a `--packets` line, each value checked (`where` names the line)."""
    field = (where + ": ") if where else ""
    source, destination = _address(str(src), f"{field}src"), _address(str(dst), f"{field}dst")
    if source.version != destination.version:
        raise InputError(f"src {source} and dst {destination} are of different IP versions", field=f"{field}dst")
    if protocol not in PROTOCOLS:
        raise InputError(f"{protocol!r} is not one of {', '.join(PROTOCOLS)}", field=f"{field}proto")
    ported = protocol != "icmp"
    destination_port = _port(dport, f"{field}dport") if ported else None
    if ported and destination_port is None:
        raise InputError(f"a {protocol} packet needs a destination port", field=f"{field}dport")
    return Probe(source, destination, protocol, destination_port,
                 _port(sport, f"{field}sport") if ported else None, in_interface or None)


def read_packets(path: str) -> list[Probe]:
    """`--packets FILE`: one JSON object a line, {"src", "dst", "proto", "dport", "sport", "in_interface"}."""
    from netfwd.inputfile import read_text as read_file

    probes = []
    for number, line in enumerate(read_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as problem:
            raise InputError(f"invalid JSON: {problem.msg}", file=path, line=number) from None
        if not isinstance(item, dict) or "src" not in item or "dst" not in item:
            raise InputError("expected an object with src and dst", file=path, line=number)
        try:
            probes.append(make_probe(item["src"], item["dst"], item.get("proto", "tcp"), item.get("dport"),
                                     item.get("sport"), item.get("in_interface")))
        except InputError as problem:
            raise InputError(problem.message, file=path, line=number, field=problem.field) from None
    return probes
