"""firewalld's zone model, and which sources it admits to a port.

Shared by the zone-XML and `firewall-cmd --list-all` readers. Semantics (firewalld >= 0.9, nftables
backend; documented in docs/whitelist.md):
- a zone applies to the sources bound to it, or (bound to interfaces) to every source no
  source-bound zone claims;
- a plain forward-port admits every source reaching the zone, and rich rules cannot narrow it
  (DNAT happens before filtering: docs/facts.md#firewalld);
- a rich rule admits its source (or everyone, without one) to its port, service or forward-port;
  deny rich rules (drop/reject) take precedence over allow rules and plain ports/services;
- target ACCEPT admits everything; a source `ipset` is read from a sibling `ipsets/NAME.xml` when
  there is one, otherwise the rule is `unevaluated`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netaddr import IPSet

from netfwd.whitelist.model import Entry, Finding, Group, Origin, entries_from_ipset
from netfwd.firewall.model import UNIVERSE

EVERYONE = UNIVERSE[4] | UNIVERSE[6]
# firewalld's service definitions for the ports a relay forwards (others are not resolved).
SERVICES = {"ssh": [(22, "tcp")], "http": [(80, "tcp")], "https": [(443, "tcp")],
            "kube-apiserver": [(6443, "tcp")], "kube-api": [(6443, "tcp")], "etcd-client": [(2379, "tcp")]}


@dataclass
class RichRule:
    origin: Origin
    family: str | None = None  # ipv4 | ipv6 | None (both)
    source: IPSet | None = None  # None: no source (everyone)
    source_text: str = "any source"
    source_unknown: str = ""  # an ipset we could not read
    kind: str = ""  # port | forward-port | service | "" (source-only rule) | other
    ports: list[tuple[int, int, str]] = field(default_factory=list)  # (low, high, protocol)
    to: str = ""  # forward-port target, for labels
    action: str = ""  # accept | drop | reject | "" (forward-port: implicit accept)


@dataclass
class Zone:
    name: str
    origin: Origin
    target: str = "default"
    interfaces: list[str] = field(default_factory=list)
    sources: IPSet = field(default_factory=IPSet)
    ports: list[tuple[int, int, str, Origin]] = field(default_factory=list)
    forward_ports: list[tuple[int, int, str, str, Origin]] = field(default_factory=list)  # ..., target
    services: list[tuple[str, Origin]] = field(default_factory=list)
    rules: list[RichRule] = field(default_factory=list)
    active: bool = True


def _hits(ports, port: int, protocol: str) -> bool:
    return any(low <= port <= high and proto == protocol for low, high, proto, *_ in ports)


def _family(rule: RichRule) -> IPSet:
    return {"ipv4": UNIVERSE[4], "ipv6": UNIVERSE[6]}.get(rule.family or "", EVERYONE)


def _rule_sources(rule: RichRule) -> IPSet:
    return _family(rule) & (EVERYONE if rule.source is None else rule.source)


def _rule_hits(rule: RichRule, port: int, protocol: str) -> bool:
    if rule.kind == "service":
        return False  # resolved into ports by the readers when known
    return rule.kind == "" or _hits(rule.ports, port, protocol)


def reach(zone: Zone, zones: list[Zone]) -> IPSet:
    if zone.sources:
        return zone.sources
    claimed = IPSet()
    for other in zones:
        if other is not zone and other.active:
            claimed |= other.sources
    return EVERYONE - claimed


def admitted(zone: Zone, zones: list[Zone], port: int, protocol: str,
             notes: list[Finding]) -> tuple[list[Entry], bool, list[str]]:
    """Entries admitted to port/protocol in `zone`, whether it is a forward, and its targets."""
    base = reach(zone, zones)
    pieces: list[tuple[IPSet, str, Origin]] = []
    targets: list[str] = []
    plain_forward = [fp for fp in zone.forward_ports if fp[0] <= port <= fp[1] and fp[2] == protocol]
    rich_forward = [r for r in zone.rules if r.kind == "forward-port" and _hits(r.ports, port, protocol)]
    forward = bool(plain_forward or rich_forward)
    for *_, to, origin in plain_forward:  # a forward to an IPv4 address forwards IPv4 only
        to_v6 = to.startswith("[") or to.count(":") > 1
        family = EVERYONE if to.startswith("local") else UNIVERSE[6 if to_v6 else 4]
        pieces.append((base & family, "any source (forward-port)", origin))
        targets.append(to)
    deny = IPSet()
    for rule in zone.rules:
        if rule.source_unknown and _rule_hits(rule, port, protocol):
            notes.append(Finding("unevaluated", "warning", f"rich rule uses {rule.source_unknown}, whose entries "
                                 "are not in this input; its sources are not counted", rule.origin))
            continue
        if rule.action in ("drop", "reject") and (rule.kind == "" or (not forward and _rule_hits(rule, port, protocol))):
            deny |= _rule_sources(rule)
    for rule in rich_forward:
        if not rule.source_unknown:
            pieces.append((_rule_sources(rule), rule.source_text, rule.origin))
            targets.append(rule.to)
    if not forward:
        if zone.target == "ACCEPT":
            pieces.append((base, "any source (zone target ACCEPT)", zone.origin))
        for *_, origin in (p for p in zone.ports if p[0] <= port <= p[1] and p[2] == protocol):
            pieces.append((base, "any source (port)", origin))
        for name, origin in zone.services:
            if (port, protocol) in [(p, proto) for p, proto in SERVICES.get(name, [])]:
                pieces.append((base, f"any source (service {name})", origin))
        for rule in zone.rules:
            if rule.action == "accept" and rule.kind != "forward-port" and not rule.source_unknown \
                    and _rule_hits(rule, port, protocol):
                pieces.append((_rule_sources(rule), rule.source_text, rule.origin))
    entries = []
    for addresses, text, origin in pieces:
        effective = addresses & base
        if not forward or text != "any source (forward-port)":
            effective = effective - deny
        entries += entries_from_ipset(effective, text, origin)
    return entries, forward, targets


def ports_named(zone: Zone) -> list[tuple[str, int, bool]]:
    """(protocol, port, is_forward) for every port the zone names (range starts for ranges)."""
    found = [(p[2], p[0], True) for p in zone.forward_ports]
    found += [(proto, low, True) for r in zone.rules if r.kind == "forward-port" for low, _, proto in r.ports]
    found += [(p[2], p[0], False) for p in zone.ports]
    found += [(proto, low, False) for r in zone.rules if r.kind == "port" and r.action == "accept"
              for low, _, proto in r.ports]
    found += [(proto, port, False) for name, _ in zone.services for port, proto in SERVICES.get(name, [])]
    return found


def zone_groups(zones: list[Zone], context) -> tuple[list[Group], list[Finding]]:
    notes: list[Finding] = []
    active = [z for z in zones if z.active]
    named: dict[tuple[str, int], bool] = {}
    for zone in active:
        for proto, port, fwd in ports_named(zone):
            named[(proto, port)] = named.get((proto, port), False) or fwd
    if context.port:
        wanted = [(context.protocol, context.port)]
    else:
        forwards = [key for key, fwd in named.items() if fwd and key[0] == context.protocol]
        wanted = sorted(forwards) or sorted(k for k in named if k[0] == context.protocol)
    result = []
    for protocol, port in wanted:
        entries: list[Entry] = []
        targets: list[str] = []
        forward = False
        for zone in active:
            found, is_forward, where = admitted(zone, zones, port, protocol, notes)
            entries += found
            forward |= is_forward
            targets = list(dict.fromkeys(targets + [t for t in where if t]))
        label = f"{protocol}/{port}" + (f" -> {', '.join(targets)}" if targets else " (local)")
        result.append(Group(label, tuple(entries), protocol, port))
    return result, notes
