"""The networks that are "local" to the relay: from `--local-networks`, or its routing table.

A whitelist entry overlapping them admits the relay's neighbours or on-prem hosts. The routing
table is read through pyroute2 (imported only here, only when needed); default routes, loopback,
link-local and multicast are not networks anyone whitelists by accident, so they are left out.
"""

from __future__ import annotations

from netaddr import IPNetwork, IPSet

from netfwd.errors import EnvironmentProblem, InputError
from netfwd.firewall.addresses import parse_token, to_cidrs

_IGNORED = IPSet(["127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
                  "::1/128", "fe80::/10", "ff00::/8"])


def parse_cidrs(text: str, option: str) -> IPSet:
    """A comma-separated list of IPs, CIDRs or ranges from an option; InputError names the option."""
    nets = []
    for token in filter(None, (t.strip() for t in text.split(","))):
        try:
            version, first, last = parse_token(token)
        except ValueError as problem:
            raise InputError(str(problem), field=option) from None
        nets.extend(to_cidrs(version, first, last))
    return IPSet(nets)


def from_routing_table(netns: str | None = None) -> IPSet:
    """Connected and routed prefixes (main table) of the current namespace, or of `netns`."""
    try:
        from pyroute2 import IPRoute, NetNS
    except ImportError as problem:  # pragma: no cover - pyroute2 is a dependency
        raise EnvironmentProblem(f"pyroute2 is not available: {problem}") from None
    try:
        handle = NetNS(netns) if netns else IPRoute()
    except Exception as problem:
        raise EnvironmentProblem(f"cannot read the routing table{f' of {netns}' if netns else ''}: "
                                 f"{problem}") from None
    nets: list[IPNetwork] = []
    with handle:
        for route in handle.get_routes(table=254):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"] > 0:
                nets.append(IPNetwork(f"{dst}/{route['dst_len']}").cidr)
        for addr in handle.get_addr():
            nets.append(IPNetwork(f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}").cidr)
    return IPSet(nets) - _IGNORED
