"""`--against live`: read the relay's current netfwd-owned firewall state and evaluate it.

nftables first (`nft -j list table` of every table netfwd owns whole: each cluster's
`inet netfwd-<cluster>`, and `inet netfwd` of earlier versions), else the xtables dump
(`iptables-save` / `ip6tables-save`, where netfwd's NETFWD-* chains are evaluated in context,
so a foreign DROP before the jump still counts), trying the legacy backend when the nf_tables one
holds no netfwd chains. The relay's own addresses and its default-route interface are read from the
namespace (pyroute2), so `-d`/`-i` matches in netfwd's rules are exact. python-iptables is not
needed: `iptables-legacy-save` reads the same legacy tables.
"""

from __future__ import annotations

import subprocess

from netaddr import IPNetwork, IPSet

from netfwd import host
from netfwd.errors import EnvironmentProblem
from netfwd.whitelist.model import Parsed
from netfwd.whitelist.sources import Context

TIMEOUT = 20
OWNED_CHAIN = ":NETFWD-"


def _run(argv: list[str], netns: str | None) -> subprocess.CompletedProcess | None:
    return host.run(argv, netns, TIMEOUT)


def relay_facts(netns: str | None) -> tuple[IPSet, str | None]:
    """The namespace's unicast addresses and the interface of its default route."""
    addresses, interface = host.local_facts(netns)
    return IPSet(IPNetwork(a) for a in addresses) - IPSet(["127.0.0.0/8", "::1/128", "fe80::/10"]), interface


def read_live(context: Context, netns: str | None) -> Parsed:
    if netns is not None:
        host.check_netns(netns)
    addresses, interface = relay_facts(netns)
    context = Context(context.catalog, context.protocol, context.port,
                      context.relay_addresses if context.relay_addresses is not None else addresses,
                      context.interface or interface)
    where = f"live:{netns}" if netns else "live"
    nft = _nft_tables(netns)
    if nft:
        from netfwd.whitelist.sources.nft_json import parse as parse_nft

        names = ", ".join(nft)
        return _renamed(parse_nft(nft[names] if len(nft) == 1 else _merged(nft), f"{where} (nft table {names})",
                                  context), "live-nft")
    for save, save6 in (("iptables-save", "ip6tables-save"), ("iptables-legacy-save", "ip6tables-legacy-save")):
        dump = _run([save], netns)
        if dump is None or dump.returncode != 0 or OWNED_CHAIN not in dump.stdout:
            continue
        text = dump.stdout
        dump6 = _run([save6], netns)
        if dump6 is not None and dump6.returncode == 0 and OWNED_CHAIN in dump6.stdout:
            text += "\n" + dump6.stdout
        from netfwd.whitelist.sources.iptables import parse as parse_save

        return _renamed(parse_save(text, f"{where} ({save})", context), f"live-{save.removesuffix('-save')}")
    if _run(["iptables-save"], netns) is None and _run(["nft", "--version"], netns) is None:
        raise EnvironmentProblem("neither nft nor iptables-save is installed")
    raise EnvironmentProblem(f"no netfwd-owned rules in {netns or 'this namespace'}: neither `table inet netfwd-*` "
                             "nor NETFWD-* chains (is netfwd applied here? are you root?)")


def _nft_tables(netns: str | None) -> dict[str, str]:
    """{"inet netfwd-x": its `nft -j list table` JSON} for every table netfwd owns."""
    listed = _run(["nft", "list", "tables"], netns)
    if listed is None or listed.returncode != 0:
        return {}
    found = {}
    for line in listed.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table" and words[1] == "inet" and \
                (words[2] == "netfwd" or words[2].startswith("netfwd-")):
            done = _run(["nft", "-j", "list", "table", "inet", words[2]], netns)
            if done is not None and done.returncode == 0 and done.stdout.strip():
                found[f"inet {words[2]}"] = done.stdout
    return found


def _merged(documents: dict[str, str]) -> str:
    """Several `nft -j list table` documents as one (one metainfo, every table's objects)."""
    import json

    items: list = []
    for text in documents.values():
        objects = json.loads(text).get("nftables", [])
        items += [o for o in objects if "metainfo" not in o or not items]
    return json.dumps({"nftables": items})


def _renamed(parsed: Parsed, fmt: str) -> Parsed:
    return Parsed(fmt, parsed.file, parsed.groups, parsed.notes)
