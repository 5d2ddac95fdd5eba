"""The typed, immutable, validated model of what a relay should forward. No I/O.

Data flows one way: spec (YAML) -> model -> plan -> dialect text / backend transaction -> report.
Everything downstream may assume the invariants checked here: ports in range, network-aligned
CIDRs, names safe in file names and rule comments, one forward per (listen address, port, protocol),
and address families a relay can actually translate between.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from netaddr import IPAddress, IPNetwork
from netaddr.strategy import ipv4 as _ipv4

from netfwd.errors import ModelError

Protocol = Literal["tcp", "udp"]
OS = Literal["linux", "windows"]

# Names end up in file names, iptables comments, firewall rule names and PowerShell strings:
# keep them to characters that need no quoting anywhere (and still quote them everywhere).
NAME_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")
# Ports an operator reaches the relay by: forwarding one away locks them out (docs/security.md).
MANAGEMENT_PORTS = {22: "SSH", 3389: "RDP", 5985: "WinRM", 5986: "WinRM over HTTPS"}
# Linux interface names: at most 15 bytes, no '/', no whitespace; we also refuse ':' and quotes.
IFACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


# IPv4 text in the one canonical form netaddr itself prints, parsed with inet_pton straight into
# netaddr's fields: netaddr's own string parsing is ~15 us an address, this ~1 us. Any other text
# (IPv6, leading zeros, netmasks, garbage) takes netaddr's constructor and its verdict.
_OCTET = r"(?:0|[1-9][0-9]{0,2})"
_V4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}\Z")
_V4_CIDR = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}/(?:0|[1-9][0-9]?)\Z")


def _set_ipv4(target: IPAddress | IPNetwork, text: str) -> bool:
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:  # an octet above 255: netaddr words the refusal
        return False
    target._value = int.from_bytes(packed, "big")
    target._module = _ipv4
    return True


class Address(IPAddress):  # type: ignore[misc]  # netaddr has no type hints
    """An IPAddress that remembers its text: dialects format the same addresses thousands of times."""

    __slots__ = ("_text",)

    def __init__(self, addr: object) -> None:
        if type(addr) is str and _V4.match(addr) and _set_ipv4(self, addr):
            self._text = addr  # already canonical: four decimal octets without leading zeros
            return
        super().__init__(addr)
        self._text = IPAddress.__str__(self)

    def __str__(self) -> str:
        return self._text

    def __format__(self, spec: str) -> str:
        return format(self._text, spec)


class Network(IPNetwork):  # type: ignore[misc]
    """An IPNetwork that remembers its text (see :class:`Address`)."""

    __slots__ = ("_text",)

    def __init__(self, addr: object) -> None:
        if type(addr) is str and _V4_CIDR.match(addr):
            address, _, prefix = addr.partition("/")
            if int(prefix) <= 32 and _set_ipv4(self, address):
                self._prefixlen = int(prefix)  # type: ignore[misc]  # a slot of netaddr's IPNetwork
                self._text = addr
                return
        super().__init__(addr)
        self._text = IPNetwork.__str__(self)

    def __str__(self) -> str:
        return self._text

    def __format__(self, spec: str) -> str:
        return format(self._text, spec)


def check_name(value: str, field_name: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ModelError(field_name, f"{value!r} is not a safe name: use 1-63 letters, digits, '.', '_' "
                                     "or '-', starting and ending with a letter or digit")
    return value


def check_port(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(field_name, f"{value!r} is not a port number (an integer 1-65535)")
    if not 1 <= value <= 65535:
        raise ModelError(field_name, f"{value} is outside 1-65535")
    return value


class Endpoint(NamedTuple):
    """An (optional) address and a port. For `listen`, no address means every local address.

    `takeover` (listen only) is the explicit opt-in to forward a management port of the relay or a
    port a local service already serves."""

    port: int
    address: IPAddress | None = None
    takeover: bool = False

    def __str__(self) -> str:
        if self.address is None:
            return f"*:{self.port}"
        return f"[{self.address}]:{self.port}" if self.address.version == 6 else f"{self.address}:{self.port}"


@dataclass(frozen=True, slots=True)
class Allow:
    """A source whitelist: catalog regions plus literal CIDRs, resolved to a minimal CIDR list."""

    regions: tuple[str, ...] = ()
    cidrs: tuple[IPNetwork, ...] = ()
    sources: tuple[IPNetwork, ...] = ()  # cidr_merge(regions' addresses + cidrs), sorted


class Essence(NamedTuple):
    """What a forward *does*, independent of how a dialect spells it: the unit of round-trip tests."""

    listen_address: str | None
    listen_port: int
    protocol: str
    to_address: str
    to_port: int
    masquerade: bool
    local: bool
    sources: tuple[str, ...] | None  # None = any source


@dataclass(frozen=True, slots=True)
class Forward:
    """Relay port A (listen) -> on-prem IP:port B (to), optionally only from whitelisted sources."""

    name: str
    listen: Endpoint
    to: Endpoint
    protocol: Protocol = "tcp"
    masquerade: bool = True
    local: bool = False
    allow: Allow | None = None  # None: any source

    def __post_init__(self) -> None:  # the checks' common case inline: this runs once per forward
        if type(self.name) is not str or not NAME_RE.match(self.name):
            check_name(self.name, "name")
        if type(self.listen.port) is not int or not 1 <= self.listen.port <= 65535:
            check_port(self.listen.port, "listen.port")
        if type(self.to.port) is not int or not 1 <= self.to.port <= 65535:
            check_port(self.to.port, "to.port")
        if self.to.address is None:
            raise ModelError("to.address", "is required")
        if self.protocol not in ("tcp", "udp"):
            raise ModelError("protocol", f"{self.protocol!r} is not tcp or udp")
        _check_unicast(self.to.address, "to.address")
        if self.listen.address is not None:
            _check_unicast(self.listen.address, "listen.address")

    @property
    def identity(self) -> tuple[str, int, str]:
        """Two forwards with the same identity are the same forward; a new target replaces the old."""
        return (str(self.listen.address) if self.listen.address is not None else "*",
                self.listen.port, self.protocol)

    @property
    def family(self) -> int:
        """The IP version of the target (and, on Linux, of everything else in the forward)."""
        return 4 if self.to.address._module is _ipv4 else 6  # type: ignore[union-attr]  # set: __post_init__; netaddr's `version`, without its property call

    @property
    def sources(self) -> tuple[IPNetwork, ...] | None:
        return None if self.allow is None else self.allow.sources

    def essence(self) -> Essence:
        return Essence(
            None if self.listen.address is None else str(self.listen.address), self.listen.port,
            self.protocol, str(self.to.address), self.to.port, self.masquerade, self.local,
            None if self.sources is None else tuple(str(n) for n in self.sources),
        )


def _is_loopback(address: IPAddress) -> bool:
    """netaddr's is_loopback (127.0.0.0/8, ::1), with IPv4 as integer arithmetic (it runs per forward)."""
    return bool(address._value >> 24 == 127) if address._module is _ipv4 else bool(address.is_loopback())


def _check_unicast(address: IPAddress, field_name: str) -> None:
    if address._module is _ipv4:  # multicast 224.0.0.0/4, 0.0.0.0, broadcast: integer tests
        bad = address._value >> 28 == 0xE or address._value in (0, 0xFFFFFFFF)
    else:
        bad = address.is_multicast() or address.value == 0 or address.is_link_local()
    if bad:
        raise ModelError(field_name, f"{address} is not a usable unicast address")


@dataclass(frozen=True, slots=True)
class Relay:
    """The internet-facing relay VM ("the ECS hop")."""

    os: OS = "linux"
    interface: str | None = None  # the interface traffic arrives on (firewalld zone, -i match)
    address: IPAddress | None = None  # its private address (cloud public IPs are not on the NIC)
    management_ports: tuple[int, ...] = ()  # besides MANAGEMENT_PORTS

    def __post_init__(self) -> None:
        for index, port in enumerate(self.management_ports):
            check_port(port, f"management_ports[{index}]")
        if self.os not in ("linux", "windows"):
            raise ModelError("os", f"{self.os!r} is not linux or windows")
        if self.interface is not None and not IFACE_RE.match(self.interface):
            raise ModelError("interface", f"{self.interface!r} is not a valid interface name "
                                          "(1-15 letters, digits, '.', '_' or '-')")
        if self.address is not None:
            _check_unicast(self.address, "address")


@dataclass(frozen=True, slots=True)
class Spec:
    """A relay's whole netfwd configuration: one spec owns all of netfwd's state on that relay."""

    cluster: str
    relay: Relay
    forwards: tuple[Forward, ...]
    version: int = 1
    origin: str = "<memory>"  # where the spec came from (for headers); not part of the meaning
    digest: str = field(default="", compare=False)  # sha256 of the spec text
    catalog: str = field(default="", compare=False)  # identity of the region catalog used, "" if none

    def __post_init__(self) -> None:
        if type(self.version) is not int or self.version != 1:  # not `true` or 1.0, which equal 1
            raise ModelError("version", f"{self.version!r} is not a supported spec version (1)")
        check_name(self.cluster, "cluster")
        names: dict[str, int] = {}
        taken: dict[tuple[int, str], dict[str, int]] = {}
        # Each check's common case is decided inline (this runs once per forward); a forward that
        # might break a rule goes through the check itself, which words the error.
        linux = self.relay.os == "linux"
        managed = {*MANAGEMENT_PORTS, *self.relay.management_ports}
        sources_ok: set[tuple[int, int]] = set()  # (id of an Allow, family) whose sources were checked
        for index, forward in enumerate(self.forwards):
            if forward.name in names:
                raise ModelError(f"forwards[{index}].name", f"{forward.name!r} is already the name of "
                                                            f"forwards[{names[forward.name]}]")
            names[forward.name] = index
            listen, to, allow = forward.listen, forward.to, forward.allow
            if (listen.port, forward.protocol) in taken or listen.address is not None:
                self._check_identity(forward, index, taken)
            else:
                taken[(listen.port, forward.protocol)] = {"*": index}
            if listen.port in managed and not listen.takeover:
                self._check_management(forward, f"forwards[{index}]")
            if to.port == listen.port or (linux and _is_loopback(to.address)):
                self._check_loop(forward, f"forwards[{index}]")
            if not linux or listen.address is not None \
                    or (allow is not None and (id(allow), forward.family) not in sources_ok):
                self._check_families(forward, f"forwards[{index}]")
                if allow is not None:
                    sources_ok.add((id(allow), forward.family))
            if not linux and forward.protocol != "tcp":
                raise ModelError(f"forwards[{index}].protocol", "netsh portproxy forwards TCP only; "
                                                                "a Windows relay cannot forward udp")

    @staticmethod
    def _check_identity(forward: Forward, index: int, taken: dict[tuple[int, str], dict[str, int]]) -> None:
        """`taken` maps (port, protocol) -> {listen address or "*": forward index}."""
        address, port, proto = forward.identity
        on_port = taken.setdefault((port, proto), {})
        # a wildcard listener and a specific address on the same port/protocol shadow each other
        rival = on_port.get(address, on_port.get("*") if address != "*" else next(iter(on_port.values()), None))
        if rival is not None:
            raise ModelError(f"forwards[{index}].listen",
                             f"{forward.listen}/{proto} is already taken by forwards[{rival}]; "
                             "a forward is identified by listen address, port and protocol "
                             "(to change a target, edit that forward)")
        on_port[address] = index

    def _check_management(self, forward: Forward, where: str) -> None:
        port = forward.listen.port
        if forward.listen.takeover or (port not in MANAGEMENT_PORTS and port not in self.relay.management_ports):
            return
        what = MANAGEMENT_PORTS.get(port, "relay.management_ports")
        raise ModelError(f"{where}.listen.port",
                         f"{port} is a management port of the relay ({what}): forwarding it takes the port "
                         "from the relay's own service and can lock its operators out; choose another port, "
                         "or set listen.takeover: true to forward it anyway")

    def _check_loop(self, forward: Forward, where: str) -> None:
        to = forward.to.address
        if forward.to.port == forward.listen.port and (
                _is_loopback(to) or any(a is not None and a == to for a in (forward.listen.address, self.relay.address))):
            raise ModelError(f"{where}.to", f"{forward.to} is the relay's own listening socket: "
                                            "the forward would loop to itself")
        if self.relay.os == "linux" and _is_loopback(forward.to.address):
            raise ModelError(f"{where}.to.address", "a Linux relay cannot DNAT to loopback without "
                                                    "route_localnet; forward to a real address")

    def _check_families(self, forward: Forward, where: str) -> None:
        if self.relay.os == "linux":
            family = forward.family
            if forward.listen.address is not None and forward.listen.address.version != family:
                raise ModelError(f"{where}.listen.address",
                                 f"IPv{forward.listen.address.version} listen address with an IPv{family} "
                                 "target: Linux NAT cannot translate between address families")
        else:  # Windows: the firewall rule applies to the listening side
            family = forward.listen.address.version if forward.listen.address is not None else 4
        for source in forward.sources or ():
            if source.version != family:
                raise ModelError(f"{where}.allow", f"IPv{source.version} source {source} cannot "
                                                   f"reach this IPv{family} forward")

    def forward(self, name: str) -> Forward:
        for candidate in self.forwards:
            if candidate.name == name:
                return candidate
        raise KeyError(name)
