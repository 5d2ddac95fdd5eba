"""The neutral firewall model: what every reader (iptables-save, nft text/JSON) produces and every
walker (whitelist's admission evaluator, doctor's checks, explain's packet tracer) reads.

Only what decides "is a new connection from source S to this port admitted" is modelled: source
matches as address sets, and every other match as a condition on the packet that answers
yes, no, or *unknown* (None). Unknown is never guessed: the evaluator counts such rules as not
admitting anything and reports them as `unevaluated`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from netaddr import IPAddress, IPSet


class Origin(NamedTuple):
    """Where an entry or a finding comes from: a file line, a rule, a forward.

    A NamedTuple, like Entry: a 100,000-line whitelist creates one of each per line.
    """

    file: str
    line: int | None = None
    text: str = ""  # the line or rule as written (shortened), or a label such as a forward name

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where} ({self.text})" if self.text else where


UNIVERSE = {4: IPSet(["0.0.0.0/0"]), 6: IPSet(["::/0"])}
NOT_REMOTE = IPSet(["127.0.0.0/8", "::1/128", "224.0.0.0/4", "ff00::/8"])
# Interfaces a client on the network never arrives on.
INTERNAL_PREFIXES = ("lo", "docker", "br-", "veth", "virbr", "cni", "flannel", "cali", "kube-", "podman", "lxc")
# Priorities of iptables' tables at each hook, as nftables numbers them (nat is -100 where it
# rewrites the destination, PREROUTING and OUTPUT, and 100 where it rewrites the source).
PRIORITY = {"raw": -300, "mangle": -150, "nat": -100, "filter": 0, "security": 50}
SOURCE_NAT_HOOKS = ("postrouting", "input")


@dataclass(frozen=True, slots=True)
class Packet:
    """Everything about the first packet of the connection except its source address."""

    version: int
    protocol: str
    port: int
    hook: str  # prerouting | input | forward
    daddr: IPAddress | None = None  # None: one of the relay's own addresses
    dnat: bool = False  # already destination-NATed (conntrack state DNAT)
    relay: IPSet | None = None  # the relay's addresses, when known
    interface: str | None = None  # the ingress interface, when known
    # What the client dialled, once DNATed: (address or None = one of the relay's own, port). None:
    # not known. Before any DNAT it is (daddr, port) itself.
    orig: tuple[IPAddress | None, int] | None = None


def iface_matches(pattern: str, name: str) -> bool:
    if pattern.endswith(("+", "*")):
        return name.startswith(pattern[:-1])
    return name == pattern


# Where a condition reads its value (`Cond.ct`): the packet itself (""), or the packet's conntrack
# entry, which a packet before conntrack (raw, priority < -200) does not have yet: ENTRY never
# matches such a packet (nft breaks the rule; xt_conntrack answers false), BESIDE_STATE is an
# xt_conntrack option in the same `-m conntrack` as a `--ctstate`, which the kernel does not look at
# for such a packet (the state alone decides). docs/facts.md#packet-tracing-explain.
ENTRY, BESIDE_STATE = "entry", "beside-state"


class Cond:
    """A non-source match; `test` answers True, False, or None (cannot tell)."""

    negated: bool = False
    ct: str = ""  # "", ENTRY or BESIDE_STATE (above)

    def test(self, packet: Packet) -> bool | None:
        raise NotImplementedError

    def check(self, packet: Packet) -> bool | None:
        result = self.test(packet)
        return None if result is None else (result != self.negated)


@dataclass(frozen=True)
class Proto(Cond):
    names: frozenset[str]
    negated: bool = False
    ct: str = ""  # ENTRY: conntrack's protocol (--ctproto)

    def test(self, packet: Packet) -> bool | None:
        return packet.protocol in self.names or bool(self.names & {"all", "ip"})


@dataclass(frozen=True)
class DPort(Cond):
    ranges: tuple[tuple[int, int], ...]
    negated: bool = False
    ct: str = ""  # ENTRY: the reply source port (REPLY_SOURCE)

    def test(self, packet: Packet) -> bool | None:
        return any(low <= packet.port <= high for low, high in self.ranges)


@dataclass(frozen=True)
class SPort(Cond):
    """A source-port match: whitelists evaluate every source port at once, so it is undecided there."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        return None


# REPLY_SOURCE: a connection's reply source (`--ctreplsrc`/`--ctreplsrcport`, `ct reply ip saddr` /
# `proto-src`) needs no condition of its own. For the first packet it is where the packet is headed
# now: the original destination before DNAT, the DNAT target after it (SNAT changes only the reply's
# destination). The readers turn it into DAddr/DPort read from the entry (`ct` ENTRY).
@dataclass(frozen=True)
class OrigDst(Cond):
    """Conntrack's original destination (`--ctorigdst`, `ct original ip daddr`) and/or port
    (`--ctorigdstport`, `ct original proto-dst`): what the client dialled before any DNAT."""

    addresses: IPSet | None = None
    ports: tuple[tuple[int, int], ...] = ()
    negated: bool = False
    ct: str = ENTRY

    def test(self, packet: Packet) -> bool | None:
        if not packet.dnat:
            address, port = packet.daddr, packet.port
        elif packet.orig is not None:
            address, port = packet.orig
        else:
            return None
        if self.ports and not any(low <= port <= high for low, high in self.ports):
            return False
        if self.addresses is None and not self.ports:
            return None  # a named set we could not read
        if self.addresses is not None:
            return DAddr(self.addresses).test(replace(packet, daddr=address))
        return True


@dataclass(frozen=True)
class DAddr(Cond):
    addresses: IPSet | None  # None: a named set we could not read
    negated: bool = False
    name: str = ""
    ct: str = ""  # ENTRY: the reply source address (REPLY_SOURCE)

    def test(self, packet: Packet) -> bool | None:
        if self.addresses is None:
            return None
        if packet.daddr is not None:
            return packet.daddr in self.addresses
        if not self.addresses - NOT_REMOTE:
            return False  # loopback or multicast: never a relay address a client connects to
        if packet.relay is not None:
            if not packet.relay & self.addresses:
                return False
            return True if (packet.relay & UNIVERSE[packet.version]).issubset(self.addresses) else None
        return None


@dataclass(frozen=True)
class DstLocal(Cond):
    """`-m addrtype --dst-type LOCAL` / `fib daddr type local`."""

    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        if packet.daddr is None:
            return True
        return None if packet.relay is None else packet.daddr in packet.relay


@dataclass(frozen=True)
class Iface(Cond):
    direction: str  # in | out
    pattern: str
    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        if self.direction == "out":  # the route to the target is not in a dump: only loopback is certain
            return False if self.pattern == "lo" else None
        if self.pattern.startswith(INTERNAL_PREFIXES):
            return False  # clients on the network never arrive on loopback or a container bridge
        if packet.interface is not None:
            return iface_matches(self.pattern, packet.interface)
        return True  # a named external interface is the one the rule's author meant clients to use


@dataclass(frozen=True)
class CtState(Cond):
    """Conntrack state or status names; any of them matches (`--ctstate`, `--ctstatus`, nft's
    `ct state new`), or with `exact` the whole status must equal them (nft's `ct status == dnat`).
    A state is defined for every packet (INVALID, without SNAT or DNAT, before conntrack); a status
    (`--ctstatus`, `ct status`) is read from the entry (`ct` ENTRY)."""

    states: frozenset[str]
    negated: bool = False
    exact: bool = False
    ct: str = ""

    def test(self, packet: Packet) -> bool | None:
        mine = {"new", "dnat"} if packet.dnat else {"new"}
        return bool(self.states & mine)


TCP_FLAGS = frozenset({"fin", "syn", "rst", "psh", "ack", "urg", "ecn", "cwr"})
FIRST_FLAGS = frozenset({"syn"})  # the first packet of a TCP connection carries exactly SYN


@dataclass(frozen=True)
class TcpFlags(Cond):
    """`--tcp-flags MASK COMP` / `--syn` / `tcp flags == syn`: (flags & mask) == compare; with
    compare None (`tcp flags syn`), any flag of mask is set."""

    mask: frozenset[str] = TCP_FLAGS
    compare: frozenset[str] | None = FIRST_FLAGS
    negated: bool = False

    def first(self) -> bool:
        """Does the first packet of a connection match?"""
        if self.compare is None:
            return bool(FIRST_FLAGS & self.mask)
        return (FIRST_FLAGS & self.mask) == self.compare

    def test(self, packet: Packet) -> bool | None:
        return self.first()


@dataclass(frozen=True)
class Family(Cond):
    version: int
    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        return packet.version == self.version


@dataclass(frozen=True)
class Always(Cond):
    """Matches that never decide admission (comments, counters, `-m tcp`)."""

    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        return True


@dataclass(frozen=True)
class Unknown(Cond):
    what: str
    negated: bool = False

    def test(self, packet: Packet) -> bool | None:
        return None


def describe(cond: Cond) -> str:
    """Why `cond` cannot be decided, and what would decide it."""
    bang = "! " if cond.negated else ""
    if isinstance(cond, Iface):
        if cond.direction == "out":
            return f"{bang}output interface {cond.pattern}: the route to the target is not known"
        return f"{bang}input interface {cond.pattern}: pass --interface"
    if isinstance(cond, DAddr):
        if cond.addresses is None:
            return f"{bang}destination set {cond.name!r}, whose members are not in this input"
        return f"{bang}destination address {', '.join(str(n) for n in cond.addresses.iter_cidrs()[:4])}: " \
               "pass --relay-address"
    if isinstance(cond, DstLocal):
        return f"{bang}destination type LOCAL: pass --relay-address"
    if isinstance(cond, Unknown):
        return f"{bang}{cond.what}".strip()
    if isinstance(cond, SPort):
        return f"{bang}source port {','.join(f'{a}-{b}' if a != b else str(a) for a, b in cond.ranges)}"
    if isinstance(cond, OrigDst):
        return f"{bang}conntrack original destination"
    return type(cond).__name__


@dataclass(frozen=True, slots=True)
class Source:
    """A source-address match; `addresses` is None when it names a set whose members we lack."""

    addresses: IPSet | None
    negated: bool = False
    name: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: str  # accept | drop | dnat | redirect | jump | goto | return | continue | unknown
    target: str = ""  # chain, for jump/goto; the target's name for continue/unknown (LOG, MASQUERADE)
    to_addr: IPAddress | None = None  # dnat, snat
    to_port: int | None = None  # dnat / redirect / snat / masquerade (None: unchanged)
    # The exact action where `kind` simplifies it for admission checks: reject (kind drop), snat and
    # masquerade (kind continue), notrack, ct, log, mark, ... ; '' when `kind` says it all.
    action: str = ""
    detail: str = ""  # reject's type (`tcp-reset`, `icmp-port-unreachable`); NAT's target as written


@dataclass(frozen=True, slots=True)
class Rule:
    origin: Origin
    sources: tuple[Source, ...]
    conds: tuple[Cond, ...]
    verdict: Verdict
    source_text: str  # "-s 10.0.0.0/8", "ip saddr != @allow", "any source"

    def whole(self) -> Rule:
        """This rule with every field read: itself. A lazy reader's rule (iptables_save's
        _DeferredRule) reads its line here; a walker that tests rules often takes them so."""
        return self

    def index_keys(self, max_ports: int) -> tuple[int | None, list[int] | None]:
        """Where an index of a chain may file this rule (explain's tracer does): the one destination
        address a plain (non-negated) `-d ADDR/32` / `ip daddr ADDR` limits it to, as an integer
        keyed by version (`address + (version << 128)`); else the destination ports a plain port
        match limits it to, when they are at most `max_ports`; None where any may match. A match
        the kernel may skip (BESIDE_STATE) limits nothing."""
        for cond in self.conds:
            if type(cond) is DAddr and not cond.negated and cond.ct != BESIDE_STATE and cond.addresses is not None:
                cidrs = cond.addresses.iter_cidrs()  # one /32 or /128: its first address is the host
                if len(cidrs) == 1 and cidrs[0].first == cidrs[0].last:
                    return cidrs[0].first + (cidrs[0].version << 128), None
        for cond in self.conds:
            if type(cond) is DPort and not cond.negated and cond.ct != BESIDE_STATE:
                if sum(high - low + 1 for low, high in cond.ranges) <= max_ports:
                    return None, [port for low, high in cond.ranges for port in range(low, high + 1)]
        return None, None


@dataclass
class Chain:
    name: str
    versions: frozenset[int]
    rules: list[Rule] = field(default_factory=list)
    hook: str | None = None  # prerouting | input | forward | ... for base chains
    priority: int = 0
    kind: str = "filter"  # nat | filter
    policy: str = "accept"
    origin: Origin | None = None


@dataclass
class Ruleset:
    """Chains keyed by a table-qualified name; jumps resolve within the same table."""

    chains: dict[tuple[str, str], Chain] = field(default_factory=dict)  # (table id, chain name)

    def chain(self, table: str, name: str) -> Chain | None:
        return self.chains.get((table, name))

    def reachable(self, table: str, chain: Chain, max_depth: int = 64):
        """Every rule of `chain` and, in place, of the chains it jumps or goes to (each chain once)."""
        seen: set[str] = set()

        def walk(current: Chain, depth: int):
            if current.name in seen or depth > max_depth:
                return
            seen.add(current.name)
            for rule in current.rules:
                yield rule
                if rule.verdict.kind in ("jump", "goto"):
                    sub = self.chain(table, rule.verdict.target)
                    if sub is not None:
                        yield from walk(sub, depth + 1)

        return walk(chain, 0)

    def base_chains(self, hook: str, version: int) -> list[tuple[str, Chain]]:
        found = [(table, c) for (table, _), c in self.chains.items() if c.hook == hook and version in c.versions]
        return sorted(found, key=lambda item: item[1].priority)

    @property
    def versions(self) -> set[int]:
        return {v for c in self.chains.values() for v in c.versions}
