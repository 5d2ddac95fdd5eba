"""`netfwd lab status`: what exists right now, read from the kernel rather than trusted from the record."""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from netfwd.lab import netns

if TYPE_CHECKING:
    from netfwd.lab.core import Lab

# what netfwd's backends leave behind in the relay: owned chains/tables are prefixed this way
MARKERS = ("NETFWD", "netfwd")


def addresses(name: str) -> dict[str, list[str]]:
    """Interface -> addresses (CIDR) inside namespace `name`."""
    found: dict[str, list[str]] = {}
    with netns.netlink(name) as sock:
        names = {link["index"]: link.get("IFLA_IFNAME") for link in sock.get_links()}
        for link in names.values():
            found.setdefault(link, [])
        for addr in sock.get_addr():
            found.setdefault(names.get(addr["index"], "?"), []).append(
                f"{addr.get('IFA_ADDRESS')}/{addr['prefixlen']}")
    return found


def applied(lab: "Lab") -> dict[str, list[str]]:
    """Lines of the relay's rule sets that belong to netfwd (by their NETFWD/netfwd marker)."""
    result: dict[str, list[str]] = {}
    saves = [("iptables-nft", ["iptables-nft-save"]), ("iptables-legacy", ["iptables-legacy-save"])]
    if getattr(lab, "userland", "modern") != "modern":  # an old relay has one iptables, legacy
        saves = [("iptables-legacy", ["iptables-save"])]
    for label, argv in saves:
        lines = [line.strip() for line in _output(lab, argv).splitlines() if any(m in line for m in MARKERS)]
        if lines:
            result[label] = lines
    # native nftables: netfwd owns whole tables (`table inet netfwd`); iptables-nft's tables are above
    for table in _output(lab, ["nft", "list", "tables"]).splitlines():
        if any(m in table for m in MARKERS):
            body = _output(lab, ["nft", "list", *table.split()])
            result.setdefault("nftables", []).extend(line.strip() for line in body.splitlines() if line.strip())
    try:
        forward = lab.run("relay", ["sysctl", "-n", "net.ipv4.ip_forward"], check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        forward = "?"
    result["ip_forward"] = [forward]
    return result


def _output(lab: "Lab", argv: list[str]) -> str:
    try:
        return lab.run("relay", argv, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def collect(lab: "Lab", rules: bool = True) -> dict:
    nodes = {}
    for node in lab.nodes:
        name = lab.ns(node)
        present = netns.exists(name)
        nodes[node] = {"netns": name, "exists": present, "interfaces": addresses(name) if present else {}}
    processes = [{"pid": p.pid, "node": p.node, "kind": p.kind, "port": p.port, "alive": p.alive()}
                 for p in lab.processes()]
    relay_present = nodes.get("relay", {}).get("exists", False)  # a fleet lab has relay1..N instead
    owner, alive = lab.builder()
    return {"name": lab.name, "userland": getattr(lab, "userland", "modern"), "complete": lab.complete,
            "created": lab.created,
            "builder": {"pid": owner, "alive": alive}, "addrs": lab.addrs.as_dict(),
            "nodes": nodes, "processes": processes, "applied": applied(lab) if relay_present and rules else {}}
