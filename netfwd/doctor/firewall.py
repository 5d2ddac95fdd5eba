"""What the relay's firewall does to one forward's packets, from the live dumps of every backend.

The kernel runs every base chain at a hook, whatever wrote it: iptables-nft's tables, iptables-legacy's
tables and native nftables tables (netfwd's own `inet netfwd`, firewalld's, anyone's). So the dumps
of all three are read into one IR (`netfwd.firewall.model`, the whitelist verifier's) and the
same symbolic evaluator answers, per forward and over its whole source set:

* prerouting: is relay:A DNATed to B:port?
* forward: is the new, DNATed connection to B:port accepted by *every* base chain at the hook?
  (an accept ends one base chain only; a drop anywhere is final)
* postrouting: is it masqueraded / SNATed before it leaves?

Matches on the output interface are decided with the route to the target (`ip route get`). Each
forward is walked through a *view*: per chain, only the rules its packet can meet (indexed by
destination port and host), so N forwards cost O(N), not O(N^2).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from typing import TYPE_CHECKING

from netaddr import IPAddress, IPSet

from netfwd.model import Forward
if TYPE_CHECKING:
    from netfwd.relayfacts import LinuxRelay

from netfwd.firewall.model import UNIVERSE, Always, Chain, Iface, Packet, Rule, Ruleset, iface_matches

MAX_DEPTH = 64


@dataclass
class Firewall:
    """The merged IR plus what was read (for the reports)."""

    ruleset: Ruleset = field(default_factory=Ruleset)
    read: list[str] = field(default_factory=list)  # "iptables-nft (IPv4)", "nft table inet netfwd", ...
    _indexes: dict = field(default_factory=dict, repr=False)
    _views: dict = field(default_factory=dict, repr=False)

    @property
    def empty(self) -> bool:
        return not self.ruleset.chains

    def view(self, port: int, address: IPAddress | None, egress: str | None) -> "View":
        """The rules a packet to `address`:`port` can meet (address None: one of the relay's own)."""
        key = (port, None if address is None else int(address), egress)
        if key not in self._views:
            self._views[key] = View(self, port, address, egress)
        return self._views[key]

    def index(self, key: tuple[str, str]) -> "_ChainIndex":
        if key not in self._indexes:
            self._indexes[key] = _ChainIndex(self.ruleset.chains[key])
        return self._indexes[key]


SLICE_MAX_PORTS = 4096  # a --dport range wider than this counts as "any port" in the index
SLICE_MAX_HOSTS = 16  # a -d set larger than this counts as "any destination"


class _ChainIndex:
    """A chain's rules indexed by destination port and host, so that one forward's packet is walked
    through the few rules that can match it instead of all of them: with one DNAT, masquerade and
    accept rule per forward, checking N forwards is O(N), not O(N^2)."""

    def __init__(self, chain: Chain) -> None:
        self.any: list[int] = []
        self.by_port: dict[int, list[int]] = {}
        self.by_host: dict[int, list[int]] = {}
        self.by_both: dict[tuple[int, int], list[int]] = {}
        for position, rule in enumerate(chain.rules):
            ports, hosts = _rule_ports(rule), _rule_hosts(rule)
            if ports is None and hosts is None:
                self.any.append(position)
            elif hosts is None and ports is not None:
                for port in ports:
                    self.by_port.setdefault(port, []).append(position)
            elif ports is None and hosts is not None:
                for host in hosts:
                    self.by_host.setdefault(host, []).append(position)
            elif ports is not None and hosts is not None:
                for port in ports:
                    for host in hosts:
                        self.by_both.setdefault((port, host), []).append(position)

    def positions(self, port: int, host: int | None) -> list[int]:
        found = self.any + self.by_port.get(port, [])
        if host is None:  # the relay's own address: rules on any destination host may match
            found += [i for items in self.by_host.values() for i in items]
            found += [i for (p, _), items in self.by_both.items() if p == port for i in items]
        else:
            found += self.by_host.get(host, []) + self.by_both.get((port, host), [])
        return sorted(set(found))


# A conntrack reply source (--ctreplsrc[port], netfwd's own FORWARD accepts) is read as DAddr/DPort
# (REPLY_SOURCE in netfwd/firewall/model.py), so those accepts slice by port and host like -d/--dport.
def _rule_ports(rule: Rule) -> set[int] | None:
    from netfwd.firewall.model import DPort

    for cond in rule.conds:
        if isinstance(cond, DPort) and not cond.negated:
            if sum(high - low + 1 for low, high in cond.ranges) <= SLICE_MAX_PORTS:
                return {p for low, high in cond.ranges for p in range(low, high + 1)}
    return None


def _rule_hosts(rule: Rule) -> set[int] | None:
    from netfwd.firewall.model import DAddr

    for cond in rule.conds:
        if isinstance(cond, DAddr) and not cond.negated and cond.addresses is not None \
                and cond.addresses.size <= SLICE_MAX_HOSTS:
            return {int(address) for cidr in cond.addresses.iter_cidrs() for address in cidr}
    return None


class View(Ruleset):
    """A Ruleset facade: each chain holds only the rules one packet can meet, output-interface
    matches decided for `egress`. Chains are sliced on first use, so a view costs what it reads."""

    def __init__(self, fw: Firewall, port: int, address: IPAddress | None, egress: str | None) -> None:
        super().__init__()
        self.fw, self.port, self.egress = fw, port, egress
        self.host = None if address is None else int(address)

    def chain(self, table: str, name: str) -> Chain | None:
        key = (table, name)
        if key not in self.chains:
            original = self.fw.ruleset.chains.get(key)
            if original is None:
                return None
            rules = [original.rules[i] for i in self.fw.index(key).positions(self.port, self.host)]
            if self.egress is not None:
                rules = [_resolve_out(rule, self.egress) for rule in rules]
            self.chains[key] = Chain(original.name, original.versions, rules, original.hook, original.priority,
                                     original.kind, original.policy, original.origin)
        return self.chains[key]

    def base_chains(self, hook: str, version: int) -> list[tuple[str, Chain]]:
        return [(table, self.chain(table, chain.name))  # type: ignore[misc]  # a base chain is in the ruleset
                for table, chain in self.fw.ruleset.base_chains(hook, version)]


def read_firewall(relay: LinuxRelay) -> Firewall:
    """Every backend's rules in `relay`, as one IR (read by netfwd.firewall.live)."""
    from netfwd.firewall.live import read_live

    ruleset, read = read_live(relay)
    return Firewall(ruleset, read)


def is_snat(rule: Rule) -> bool:
    """SNAT or MASQUERADE, from iptables or nft alike: the model keeps the exact action."""
    return rule.verdict.action in ("snat", "masquerade")


def _resolve_out(rule: Rule, egress: str) -> Rule:
    if not any(isinstance(c, Iface) and c.direction == "out" for c in rule.conds):
        return rule
    conds = tuple(Always(negated=not (iface_matches(c.pattern, egress) != c.negated))
                  if isinstance(c, Iface) and c.direction == "out" else c for c in rule.conds)
    return replace(rule, conds=conds)


def sources_of(forward: Forward) -> IPSet:
    return IPSet(forward.sources) if forward.sources is not None else UNIVERSE[forward.family]


# -- prerouting: DNAT ---------------------------------------------------------------------------------

@dataclass
class DnatResult:
    to_target: IPSet  # sources DNATed to the spec's target
    elsewhere: list[tuple[str, IPSet]]  # (other target, sources)
    notes: list[str]


def dnat(fw: Firewall, forward: Forward, relay_addresses: IPSet | None, ingress: str | None) -> DnatResult:
    from netfwd.whitelist.evaluate import Evaluator

    evaluator = Evaluator(fw.view(forward.listen.port, forward.listen.address, None))
    packet = Packet(forward.family, forward.protocol, forward.listen.port, "prerouting",
                    forward.listen.address, False, relay_addresses, ingress)
    pieces, _rest = evaluator.prerouting(sources_of(forward), packet)
    hit, other = IPSet(), []
    for (addresses, _rule, _origin), (to_addr, to_port) in pieces:
        port = to_port or forward.listen.port
        if to_addr == forward.to.address and port == forward.to.port:
            hit |= addresses
        else:
            where = "the relay itself (REDIRECT)" if to_addr is None else f"{to_addr}:{port}"
            other.append((where, addresses))
    return DnatResult(hit, other, [f"{n.origin}: {n.message}" for n in evaluator.notes.values()])


# -- forward: accepted? ---------------------------------------------------------------------------------

@dataclass
class ForwardResult:
    accepted: IPSet
    total: IPSet
    blockers: list[str]
    notes: list[str]


def forward_packet(forward: Forward, relay_addresses: IPSet | None, ingress: str | None) -> Packet:
    return Packet(forward.family, forward.protocol, forward.to.port, "forward", forward.to.address, True,
                  relay_addresses, ingress, (forward.listen.address, forward.listen.port))


def forward_hook(fw: Firewall, forward: Forward, relay_addresses: IPSet | None, ingress: str | None,
                 egress: str | None) -> ForwardResult:
    from netfwd.whitelist.evaluate import Evaluator

    ruleset = fw.view(forward.to.port, forward.to.address, egress)
    evaluator = Evaluator(ruleset)
    packet = forward_packet(forward, relay_addresses, ingress)
    total = sources_of(forward)
    accepted = IPSet()
    for addresses, _rule, _origin in evaluator.filter("forward", total, packet):
        accepted |= addresses
    blockers = [] if accepted == total else _blockers(ruleset, packet)
    return ForwardResult(accepted, total, blockers, [f"{n.origin}: {n.message}" for n in evaluator.notes.values()])


def _blockers(ruleset: Ruleset, packet: Packet) -> list[str]:
    """Policies and unconditional DROP/REJECT rules at the forward hook that this packet can meet."""
    found = []
    for table, chain in ruleset.base_chains("forward", packet.version):
        for rule in ruleset.reachable(table, chain, MAX_DEPTH):
            if rule.verdict.kind == "drop" and not rule.sources and all(c.check(packet) for c in rule.conds):
                found.append(f"{rule.origin.file}: {rule.origin.text}")
        if chain.policy == "drop":
            text = chain.origin.text if chain.origin else f"{chain.name} policy drop"
            file = chain.origin.file if chain.origin else table
            found.append(f"{file}: {text}")
    return found


# -- postrouting: masquerade -------------------------------------------------------------------------

@dataclass
class SnatResult:
    covered: IPSet  # sources whose forwarded connection is masqueraded / SNATed
    unsure: IPSet  # maybe (a match we cannot decide)
    total: IPSet


def masquerade(fw: Firewall, forward: Forward, relay_addresses: IPSet | None, ingress: str | None,
               egress: str | None) -> SnatResult:
    ruleset = fw.view(forward.to.port, forward.to.address, egress)
    packet = Packet(forward.family, forward.protocol, forward.to.port, "postrouting", forward.to.address, True,
                    relay_addresses, ingress, (forward.listen.address, forward.listen.port))
    total = sources_of(forward)
    covered, unsure, alive = IPSet(), IPSet(), total
    for table, chain in ruleset.base_chains("postrouting", forward.family):
        if chain.kind != "nat" or not alive:
            continue
        snat, maybe, _returned = _walk_nat(ruleset, table, chain, alive, packet, 0)
        covered |= snat
        unsure |= maybe
        alive = alive - snat  # NAT is decided by the first nat chain that translates
    return SnatResult(covered, unsure - covered, total)


def _walk_nat(ruleset: Ruleset, table: str, chain: Chain, alive: IPSet, packet: Packet,
              depth: int) -> tuple[IPSet, IPSet, IPSet]:
    """(masqueraded, maybe masqueraded, returned) for the sources in `alive`."""
    snat, unsure, returned = IPSet(), IPSet(), IPSet()
    for rule in chain.rules:
        if not alive:
            break
        matched, certain = _match(rule, alive, packet)
        if not matched:
            continue
        kind = rule.verdict.kind
        sub = ruleset.chain(table, rule.verdict.target) if kind in ("jump", "goto") else None
        if not certain:
            if is_snat(rule):
                unsure |= matched
            elif sub is not None and depth < MAX_DEPTH:
                inner = _walk_nat(ruleset, table, sub, matched, packet, depth + 1)
                unsure |= inner[0] | inner[1]
            continue
        if is_snat(rule):
            snat |= matched
            alive = alive - matched
        elif sub is not None and depth < MAX_DEPTH:
            inner_snat, inner_unsure, inner_returned = _walk_nat(ruleset, table, sub, matched, packet, depth + 1)
            snat |= inner_snat
            unsure |= inner_unsure
            alive = alive - matched
            if kind == "jump":
                alive = alive | inner_returned
            else:
                returned |= inner_returned
        elif kind in ("accept", "drop", "dnat", "redirect"):
            alive = alive - matched  # NAT decided here without a source translation
        elif kind == "return":
            returned |= matched
            alive = alive - matched
    return snat, unsure, returned | alive


def _match(rule: Rule, alive: IPSet, packet: Packet) -> tuple[IPSet, bool]:
    certain = True
    for cond in rule.conds:
        result = cond.check(packet)
        if result is False:
            return IPSet(), True
        if result is None:
            certain = False
    matched = alive
    for source in rule.sources:
        if source.addresses is None:
            certain = False
            continue
        matched = matched & (UNIVERSE[packet.version] - source.addresses if source.negated else source.addresses)
    return matched, certain


def describe(addresses: IPSet, total: IPSet) -> str:
    """'every source', or 'N of M addresses (10.0.0.0/8, ...)'."""
    if addresses == total:
        return "every source" if total in (UNIVERSE[4], UNIVERSE[6]) else "every allowed source"
    cidrs = [str(c) for c in addresses.iter_cidrs()[:3]]
    more = ", ..." if len(addresses.iter_cidrs()) > 3 else ""
    return f"{addresses.size:,} of {total.size:,} source address(es) ({', '.join(cidrs)}{more})"


def addresses_set(addresses: list[IPAddress]) -> IPSet:
    return IPSet([str(a) for a in addresses])
