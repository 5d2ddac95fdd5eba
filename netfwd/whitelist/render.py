"""The minimal aggregated whitelist, spelled for each platform's address-list construct.

Dialects: an `ipset restore` file, an nft set (an `nft -f` file), a firewalld ipset XML file,
netsh advfirewall's `remoteip=` value, PowerShell's `-RemoteAddress` argument, or a plain list.
IPv4 and IPv6 go to separate sets where the platform types its sets (ipset, nft, firewalld).
"""

from __future__ import annotations

from netaddr import IPNetwork, cidr_merge

from netfwd.errors import InputError
from netfwd.model import NAME_RE

DIALECTS = ("ipset", "nft", "firewalld", "netsh", "powershell", "list")


def aggregate(catalog, region_ids: list[str], cidrs: list[IPNetwork]) -> list[IPNetwork]:
    """cidr_merge of the regions' addresses and extra CIDRs: minimal, sorted, IPv4 before IPv6."""
    return cidr_merge([net for rid in region_ids for net in catalog.region(rid).networks] + list(cidrs))


def _split(nets: list[IPNetwork]) -> dict[int, list[IPNetwork]]:
    return {v: [n for n in nets if n.version == v] for v in (4, 6) if any(n.version == v for n in nets)}


def _set_name(name: str, version: int, both: bool) -> str:
    return f"{name}6" if (version == 6 and both) else name


def ipset(nets: list[IPNetwork], name: str) -> str:
    families = _split(nets)
    out = []
    for version, members in families.items():
        set_name = _set_name(name, version, len(families) > 1)
        family = "inet6" if version == 6 else "inet"
        out += [f"create {set_name} hash:net family {family} maxelem {max(65536, len(members))} -exist",
                f"flush {set_name}"]
        out += [f"add {set_name} {net} -exist" for net in members]
    return "\n".join(out) + "\n"


def nft(nets: list[IPNetwork], name: str) -> str:
    families = _split(nets)
    out = ["add table inet netfwd"]
    for version, members in families.items():
        set_name = _set_name(name, version, len(families) > 1)
        kind = "ipv6_addr" if version == 6 else "ipv4_addr"
        out += [f"add set inet netfwd {set_name} {{ type {kind}; flags interval; }}",
                f"flush set inet netfwd {set_name}"]
        out += [f"add element inet netfwd {set_name} {{ {', '.join(str(n) for n in chunk)} }}"
                for chunk in (members[i:i + 500] for i in range(0, len(members), 500))]
    return "\n".join(out) + "\n"


def firewalld(nets: list[IPNetwork], name: str) -> str:
    """One ipset XML document per family (save as /etc/firewalld/ipsets/NAME.xml)."""
    docs = []
    families = _split(nets)
    for version, members in families.items():
        set_name = _set_name(name, version, len(families) > 1)
        lines = ['<?xml version="1.0" encoding="utf-8"?>', '<ipset type="hash:net">',
                 f"  <short>{set_name}</short>",
                 "  <description>netfwd source whitelist</description>"]
        if version == 6:
            lines.append('  <option name="family" value="inet6"/>')
        lines += [f"  <entry>{net}</entry>" for net in members]
        lines.append("</ipset>")
        docs.append(f"<!-- {set_name}.xml -->\n" + "\n".join(lines))
    return "\n".join(docs) + "\n"


def netsh(nets: list[IPNetwork], name: str) -> str:
    return "remoteip=" + ",".join(str(n) for n in nets) + "\n"


def powershell(nets: list[IPNetwork], name: str) -> str:
    return "-RemoteAddress @(" + ", ".join(f"'{n}'" for n in nets) + ")\n"


def plain(nets: list[IPNetwork], name: str) -> str:
    return "".join(f"{n}\n" for n in nets)


def render(nets: list[IPNetwork], dialect: str, name: str = "netfwd_allow") -> str:
    if dialect not in DIALECTS:
        raise InputError(f"{dialect!r} is not a whitelist dialect; choose from {', '.join(DIALECTS)}",
                         field="--dialect")
    if not NAME_RE.match(name) or len(name) > 30:
        raise InputError(f"{name!r} is not a safe set name (1-30 letters, digits, '.', '_', '-')", field="--name")
    if not nets:
        raise InputError("the whitelist is empty: give --regions and/or --cidrs", field="--regions")
    return {"ipset": ipset, "nft": nft, "firewalld": firewalld, "netsh": netsh,
            "powershell": powershell, "list": plain}[dialect](nets, name)
