"""The lab's address plan: which subnets, which addresses, which interface names. No I/O here.

Each lab lives in its own namespaces, so two labs may use the same addresses; the plan only has to
avoid the *host's* routes, so that an address in a rule or a report can never mean a real host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from ipaddress import IPv4Network, ip_network
from typing import Any, Iterable

# /16 blocks reserved for the lab, tried in order; the first one the host does not route is used.
CANDIDATES: tuple[str, ...] = tuple(f"10.{n}.0.0/16" for n in range(200, 240)) + tuple(
    f"172.{n}.0.0/16" for n in range(24, 32))

NODES_BASIC = ("client", "relay", "onprem")
NODES_ROUTED = ("client", "router", "relay", "onprem")


@dataclass(frozen=True)
class Addresses:
    """Every address and interface name of one lab; also readable as a mapping (``addrs["onprem"]``).

    ``client_allowed`` lies inside ``allowed_cidr`` and ``client_denied`` outside it, so a whitelist
    test needs no arithmetic. ``relay_outside`` is the address clients dial.
    """

    block: str
    client_net: str
    outside_net: str  # the relay's outside link (same as client_net without a router)
    inside_net: str
    allowed_cidr: str
    client_allowed: str
    client_denied: str
    client_gateway: str  # relay_outside, or the router's client-side address
    relay_outside: str
    relay_inside: str
    onprem: str
    router_client: str | None
    router_relay: str | None
    client_if: str = "eth0"
    relay_outside_if: str = "ext0"
    relay_inside_if: str = "int0"
    onprem_if: str = "eth0"
    router_client_if: str | None = None
    router_relay_if: str | None = None

    def __getitem__(self, key: str) -> str | None:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        value: str | None = getattr(self, key)
        return value

    def get(self, key: str, default: str | None = None) -> str | None:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Addresses":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def plan(block: str, router: bool = False, relay_outside_if: str = "ext0") -> Addresses:
    """Lay out a lab inside the /16 `block`: .1 = client link, .2 = inside link, .3 = router-relay link."""
    net = ip_network(block)
    b = net.network_address

    def at(third: int, fourth: int) -> str:
        return str(b + third * 256 + fourth)

    client_net = f"{at(1, 0)}/24"
    inside_net = f"{at(2, 0)}/24"
    common = dict(block=str(net), client_net=client_net, inside_net=inside_net,
                  allowed_cidr=f"{at(1, 8)}/29", client_allowed=at(1, 10), client_denied=at(1, 200),
                  relay_inside=at(2, 1), onprem=at(2, 2), relay_outside_if=relay_outside_if)
    if not router:
        return Addresses(outside_net=client_net, client_gateway=at(1, 1), relay_outside=at(1, 1),
                         router_client=None, router_relay=None, **common)
    return Addresses(outside_net=f"{at(3, 0)}/24", client_gateway=at(1, 1), relay_outside=at(3, 2),
                     router_client=at(1, 1), router_relay=at(3, 1), router_client_if="eth0",
                     router_relay_if="eth1", **common)


def choose_block(taken: Iterable[str]) -> str:
    """The first candidate /16 that overlaps none of the host's routes and addresses (default routes excluded)."""
    nets = []
    for item in taken:
        network = ip_network(item, strict=False)
        if isinstance(network, IPv4Network) and network.prefixlen > 0:
            nets.append(network)
    for candidate in CANDIDATES:
        block = ip_network(candidate)
        if not any(block.overlaps(n) for n in nets):
            return candidate
    raise LookupError("every lab address block (10.200-239.0.0/16, 172.24-31.0.0/16) is routed by this host")


# -- the fleet: many relays, each with its own on-prem network, one controller, one vantage host ------

@dataclass(frozen=True)
class FleetRelay:
    """One relay of a fleet lab: its node names, its outside (client-facing, SSH) and inside addresses."""

    node: str
    onprem_node: str
    outside: str
    inside: str
    onprem: str
    inside_net: str
    outside_if: str = "ext0"
    inside_if: str = "int0"


@dataclass(frozen=True)
class FleetAddresses:
    """A fleet lab's plan. Every host with an address on the shared outside segment (`wan_net`, a
    bridge in the `wan` node) reaches every other: the controller (Ansible over SSH), the vantage
    host (`client`, where probes start) and each relay's outside address. Behind each relay is its
    own inside link to its own on-prem host, with no route back (as in the single-relay lab)."""

    block: str
    wan_net: str
    controller: str
    client_allowed: str
    client_denied: str
    allowed_cidr: str
    relays: tuple[FleetRelay, ...]

    def relay(self, node: str) -> FleetRelay:
        for relay in self.relays:
            if relay.node == node:
                return relay
        raise KeyError(node)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FleetAddresses":
        relays = tuple(FleetRelay(**r) for r in data["relays"])
        return cls(**{**{k: v for k, v in data.items() if k in cls.__dataclass_fields__}, "relays": relays})


MAX_FLEET = 50


def fleet_plan(block: str, relays: int) -> FleetAddresses:
    """`relays` relays in the /16 `block`: outside segment .1.0/24 (relay N at .1.(100+N)),
    relay N's inside link .(10+N).0/24 (relay .1, on-prem .2)."""
    if not 1 <= relays <= MAX_FLEET:
        raise ValueError(f"a fleet lab has 1 to {MAX_FLEET} relays")
    b = ip_network(block).network_address

    def at(third: int, fourth: int) -> str:
        return str(b + third * 256 + fourth)

    fleet = tuple(FleetRelay(node=f"relay{n}", onprem_node=f"onprem{n}", outside=at(1, 100 + n),
                             inside=at(10 + n, 1), onprem=at(10 + n, 2), inside_net=f"{at(10 + n, 0)}/24")
                  for n in range(1, relays + 1))
    return FleetAddresses(block=str(ip_network(block)), wan_net=f"{at(1, 0)}/24", controller=at(1, 5),
                          client_allowed=at(1, 10), client_denied=at(1, 200), allowed_cidr=f"{at(1, 8)}/29",
                          relays=fleet)
