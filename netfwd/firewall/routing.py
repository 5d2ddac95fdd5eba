"""What the kernel's routing decision needs besides the rules: the relay's local addresses, its
routes, whether it forwards, and reverse-path filtering. Read from `ip -j route [show table all]`
output (a file, or the live namespace) so the live and offline cases share one lookup.

Modelled: the main routing table (longest prefix, then lowest metric; unicast, blackhole,
unreachable, prohibit routes), the local table's local addresses, `ip_forward` and `rp_filter`.
Not modelled: policy routing (`ip rule`), multipath weights, VRFs (docs/explain.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from netaddr import IPAddress, IPNetwork, IPSet

from netfwd.errors import InputError

ALWAYS_LOCAL = {4: IPSet(["127.0.0.0/8"]), 6: IPSet(["::1/128"])}


@dataclass(frozen=True, slots=True)
class Route:
    destination: IPNetwork
    dev: str | None = None
    gateway: IPAddress | None = None
    prefsrc: IPAddress | None = None
    kind: str = "unicast"  # unicast | blackhole | unreachable | prohibit | throw
    metric: int = 0

    def __str__(self) -> str:
        if self.kind != "unicast":
            return f"{self.kind} {self.destination}"
        via = f" via {self.gateway}" if self.gateway else ""
        src = f" src {self.prefsrc}" if self.prefsrc else ""
        return f"{self.destination}{via} dev {self.dev}{src}"


@dataclass
class Host:
    """The relay's routing facts. `forwarding` and `rp_filter` default to a plain router's."""

    routes: list[Route] = field(default_factory=list)
    local: dict[IPAddress, str | None] = field(default_factory=dict)  # address -> its interface
    forwarding: dict[int, bool] = field(default_factory=lambda: {4: True, 6: True})
    rp_filter: dict[str, int] = field(default_factory=dict)  # interface (and 'all') -> 0/1/2
    primary: dict[str, IPAddress] = field(default_factory=dict)  # interface -> its first IPv4 address
    local_nets: IPSet = field(default_factory=IPSet)  # local-table prefixes (`local 127.0.0.0/8`)

    def is_local(self, address: IPAddress) -> bool:
        return address in self.local or address in ALWAYS_LOCAL[address.version] or address in self.local_nets

    def route(self, address: IPAddress) -> Route | None:
        """The main table's answer for `address`; None when no route matches (network unreachable)."""
        best: Route | None = None
        for route in self.routes:
            if route.destination.version != address.version or address not in route.destination:
                continue
            if best is None or (route.destination.prefixlen, -route.metric) > (best.destination.prefixlen,
                                                                               -best.metric):
                best = route
        return best

    def source_for(self, route: Route) -> IPAddress | None:
        """The address MASQUERADE gives a packet leaving by `route`: the route's preferred source,
        else the one of the connected route to its gateway, else the interface's first address."""
        if route.prefsrc is not None:
            return route.prefsrc
        if route.gateway is not None:
            link = self.route(route.gateway)
            if link is not None and link.dev == route.dev and link.prefsrc is not None:
                return link.prefsrc
        return self.primary.get(route.dev or "")

    def address_of(self, interface: str) -> IPAddress | None:
        """REDIRECT's new destination: the first address of the interface the packet came in on."""
        if interface in self.primary:
            return self.primary[interface]
        return next((a for a, dev in self.local.items() if dev == interface and a.version == 4), None)

    def rp_mode(self, interface: str) -> int:
        return max(self.rp_filter.get("all", 0), self.rp_filter.get(interface, 0))


def read_routes(text: str, file: str, host: Host | None = None) -> Host:
    """`ip -j route` (or `ip -j route show table all`, with the local table) -> a Host."""
    host = host or Host()
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as problem:
        raise InputError(f"invalid JSON: {problem.msg} (expected `ip -j route` output)", file=file,
                         line=problem.lineno) from None
    if not isinstance(entries, list):
        raise InputError("expected a JSON list, as `ip -j route` prints", file=file, field="routes")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "dst" not in entry:
            raise InputError(f"route {index} has no dst", file=file, field=f"[{index}].dst")
        try:
            _add(host, entry)
        except (ValueError, TypeError) as problem:
            raise InputError(f"route {index}: {problem}", file=file, field=f"[{index}]") from None
    return host


def _add(host: Host, entry: dict) -> None:
    kind, table = entry.get("type", "unicast"), entry.get("table", "main")
    dst = entry["dst"]
    family = 6 if ":" in dst or ":" in str(entry.get("gateway", "")) else 4
    if dst == "default":
        dst = "::/0" if family == 6 else "0.0.0.0/0"
    network = IPNetwork(dst)
    if kind == "local" or table == "local":
        if kind == "local" and network.size == 1:
            host.local.setdefault(network.ip, entry.get("dev"))
        elif kind == "local":
            host.local_nets.add(network)
        return
    if table not in ("main", 254, "254"):
        return  # other tables are reached only through `ip rule`, which is not modelled
    gateway = entry.get("gateway")
    prefsrc = entry.get("prefsrc")
    host.routes.append(Route(network, entry.get("dev"), IPAddress(gateway) if gateway else None,
                             IPAddress(prefsrc) if prefsrc else None, kind, int(entry.get("metric", 0) or 0)))
