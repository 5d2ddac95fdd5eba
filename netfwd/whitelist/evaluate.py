"""Which sources does a ruleset admit to a port? Symbolic evaluation over address sets.

Rules are walked in order, as the kernel does, but with a *set* of sources instead of one packet:
each rule takes the part of the still-undecided set that it matches (netaddr IPSet algebra), so
`! -s X`, earlier DROPs, RETURNs and jumps are all exact. Non-source matches are evaluated against
the packet (protocol, port, conntrack state, ...); a match we cannot decide makes the sources it
touches *unsure*: never counted as admitted, and reported as `unevaluated`.

A port with DNAT rules is a forward: admitted = DNATed in prerouting, then accepted at the forward
hook for the new destination. A port without DNAT is local: admitted = accepted at the input hook.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from netaddr import IPSet

from netfwd.whitelist.model import Entry, Finding, Group, Origin, entries_from_ipset
from netfwd.firewall.model import UNIVERSE, Chain, Packet, Rule, Ruleset, describe

MAX_DEPTH = 64
Piece = tuple[IPSet, Rule | None, Origin]  # sources, the rule that decided (None: a policy), where


@dataclass
class Outcome:
    accepted: list[Piece] = field(default_factory=list)
    dnat: list[tuple[Piece, tuple]] = field(default_factory=list)  # (piece, (to_addr, to_port))
    unsure: IPSet = field(default_factory=IPSet)
    returned: IPSet = field(default_factory=IPSet)
    maybe: list[tuple[IPSet, Rule, str]] = field(default_factory=list)  # maybe-ACCEPTed, still walking


class Evaluator:
    def __init__(self, ruleset: Ruleset) -> None:
        self.ruleset = ruleset
        self.notes: dict[Origin, Finding] = {}

    # -- one chain ---------------------------------------------------------------------------------
    def chain(self, table: str, chain: Chain, alive: IPSet, packet: Packet, depth: int = 0,
              kind: str | None = None) -> Outcome:
        """Walk `chain` with the sources in `alive`. `kind` is the base chain's (nat or filter)."""
        kind = kind or chain.kind
        out = Outcome()
        for rule in chain.rules:
            if not alive:
                break
            matched, why = self._match(rule, alive, packet)
            verdict = rule.verdict.kind
            if not matched or verdict == "continue":
                continue
            if why is not None:
                alive = self._maybe(table, rule, matched, alive, packet, depth, kind, out, why)
                continue
            if verdict == "accept":
                out.accepted.append((matched, rule, rule.origin))
            elif verdict in ("dnat", "redirect"):
                out.dnat.append(((matched, rule, rule.origin), (rule.verdict.to_addr, rule.verdict.to_port)))
            elif verdict == "return":
                out.returned |= matched
            elif verdict == "unknown":
                self._note(rule, matched, f"target {rule.verdict.target}")
                out.unsure |= matched
            elif verdict in ("jump", "goto"):
                inner = self._enter(table, rule, matched, packet, depth, kind, out)
                if inner is not None:
                    out.accepted += inner.accepted
                    out.dnat += inner.dnat
                    out.unsure |= inner.unsure
                    out.maybe += inner.maybe
                    if verdict == "jump":
                        alive = alive - matched | inner.returned
                        continue
                    out.returned |= inner.returned
            alive = alive - matched  # accept, dnat, drop/reject, return, goto: decided here
        out.returned |= alive
        return out

    def _enter(self, table: str, rule: Rule, matched: IPSet, packet: Packet, depth: int, kind: str,
               out: Outcome) -> Outcome | None:
        sub = self.ruleset.chain(table, rule.verdict.target)
        if sub is None or depth >= MAX_DEPTH:
            self._note(rule, matched, f"it jumps to {rule.verdict.target}, a chain not in this input")
            out.unsure |= matched
            return None
        return self.chain(table, sub, matched, packet, depth + 1, kind)

    def _maybe(self, table: str, rule: Rule, matched: IPSet, alive: IPSet, packet: Packet, depth: int,
               kind: str, out: Outcome, why: str) -> IPSet:
        """A rule that may or may not match. Sources stay countable only if both outcomes admit them:
        in a filter chain a maybe-ACCEPT changes nothing (later rules decide either way), and sources
        a maybe-jump returns or accepts carry on; everything else becomes unsure."""
        verdict = rule.verdict.kind
        if kind == "filter" and verdict == "accept":
            out.maybe.append((matched, rule, why))
            return alive
        if kind == "filter" and verdict == "jump":
            inner = self._enter(table, rule, matched, packet, depth, kind, out)
            if inner is None:
                return alive - matched
            out.maybe += inner.maybe
            carry_on = inner.returned | _union(p[0] for p in inner.accepted)
            lost = matched - carry_on
            if lost:
                self._note(rule, lost, why)
                out.unsure |= lost
            return alive - lost
        self._note(rule, matched, why)
        out.unsure |= matched
        return alive - matched

    def _match(self, rule: Rule, alive: IPSet, packet: Packet) -> tuple[IPSet, str | None]:
        """The sources in `alive` the rule matches, and why that is uncertain (None: it is certain)."""
        why = None
        for cond in rule.conds:
            result = cond.check(packet)
            if result is False:
                return IPSet(), None
            if result is None and why is None:
                why = describe(cond)
        matched = alive
        for source in rule.sources:
            if source.addresses is None:
                why = why or f"set {source.name!r}, whose members are not in this input"
                continue
            matched = matched & (UNIVERSE[packet.version] - source.addresses if source.negated
                                 else source.addresses)
        return matched, why

    def _note(self, rule: Rule, matched: IPSet, why: str) -> None:
        if rule.origin not in self.notes:
            self.notes[rule.origin] = Finding(
                "unevaluated", "warning", f"cannot tell whether this rule applies ({why}); the "
                f"{matched.size:,} source address(es) it may decide are not counted as admitted",
                rule.origin, (), matched.size)

    # -- one hook ----------------------------------------------------------------------------------
    def prerouting(self, sources: IPSet, packet: Packet) -> tuple[list[tuple[Piece, tuple]], IPSet]:
        """DNATed pieces with their destination, and the sources left un-NATed (not dropped)."""
        alive, dnat = sources, []
        for table, chain in self.ruleset.base_chains("prerouting", packet.version):
            out = self.chain(table, chain, alive, packet)
            if chain.kind == "nat":
                dnat += out.dnat
                alive = alive - _union(p[0] for p, _ in out.dnat)
            passed = _union(p[0] for p in out.accepted)
            alive = alive & (passed | (out.returned if chain.policy == "accept" else IPSet()))
        return dnat, alive

    def filter(self, hook: str, sources: IPSet, packet: Packet) -> list[Piece]:
        """Accepted pieces after every base chain of `hook` (accept ends one base chain, not the hook)."""
        alive, best, maybe = sources, None, []
        chains = self.ruleset.base_chains(hook, packet.version)
        for table, chain in chains:
            out = self.chain(table, chain, alive, packet)
            maybe += out.maybe
            pieces = list(out.accepted)
            if out.returned and chain.policy == "accept":
                policy_origin = chain.origin or Origin("", None, f"{chain.name} policy")
                pieces.append((out.returned, None, policy_origin))
            alive = _union(p[0] for p in pieces) & alive
            if best is None or out.accepted:
                best = pieces
        if best is None:  # no rules at this hook at all: nothing filters
            return [(sources, None, Origin("", None, f"no {hook} rules"))]
        for candidates, rule, why in maybe:  # a maybe-ACCEPT that later rules did not confirm: say so
            lost = candidates - alive
            if lost:
                self._note(rule, lost, why)
        return [(p & alive, rule, origin) for p, rule, origin in best if p & alive]


def _union(sets) -> IPSet:
    result = IPSet()
    for item in sets:
        result |= item
    return result


def _text(first: Piece, second: Piece | None) -> tuple[str, Origin]:
    """The entry's text and origin: the rule that restricts sources, preferring the DNAT rule."""
    rule, origin = first[1], first[2]
    if second is not None and second[1] is not None and second[1].sources and (rule is None or not rule.sources):
        rule, origin = second[1], second[2]
    return (rule.source_text if rule is not None else POLICY_TEXT), origin


def admitted(ruleset: Ruleset, version: int, protocol: str, port: int, relay: IPSet | None,
             interface: str | None, evaluator: Evaluator) -> tuple[list[Entry], list[str], bool]:
    """Entries admitted to `protocol/port`, the forward destinations, and whether it is a forward."""
    base = Packet(version, protocol, port, "prerouting", None, False, relay, interface)
    dnat, rest = evaluator.prerouting(UNIVERSE[version], base)
    entries: list[Entry] = []
    targets: list[str] = []
    if not dnat:
        local = Packet(version, protocol, port, "input", None, False, relay, interface)
        for piece in evaluator.filter("input", rest, local):
            text, origin = _text(piece, None)
            entries += entries_from_ipset(piece[0], text, origin)
        return entries, targets, False
    for piece, (to_addr, to_port) in dnat:
        new_port = to_port or port
        if to_addr is None:  # REDIRECT: to the relay itself
            packet = Packet(version, protocol, new_port, "input", None, True, relay, interface, (None, port))
            hook, target = "input", f"local:{new_port}"
        else:
            packet = Packet(version, protocol, new_port, "forward", to_addr, True, relay, interface, (None, port))
            hook, target = "forward", (f"[{to_addr}]:{new_port}" if version == 6 else f"{to_addr}:{new_port}")
        if target not in targets:
            targets.append(target)
        for second in evaluator.filter(hook, piece[0], packet):
            text, origin = _text(piece, second)
            entries += entries_from_ipset(second[0], text, origin)
    return entries, targets, True


def candidate_ports(ruleset: Ruleset, protocol: str) -> list[tuple[str, int]]:
    """(protocol, port) pairs named by any rule at prerouting/input, reachable from a base chain."""
    from netfwd.firewall.model import DPort, Proto

    found: dict[tuple[str, int], None] = {}
    for (table, _), chain in ruleset.chains.items():
        if chain.hook not in ("prerouting", "input"):
            continue
        for rule in ruleset.reachable(table, chain, MAX_DEPTH):
            protos = [c for c in rule.conds if isinstance(c, Proto) and not c.negated]
            proto = next(iter(protos[0].names)) if protos and len(protos[0].names) == 1 else protocol
            for cond in rule.conds:
                if isinstance(cond, DPort) and not cond.negated:
                    for low, _high in cond.ranges:
                        found[(proto, low)] = None
    return sorted(found)


POLICY_TEXT = "any source (policy)"


def groups(ruleset: Ruleset, context, label_prefix: str = "") -> tuple[list[Group], list[Finding]]:
    """One group per forwarded port; accepted local ports only when nothing is forwarded (or --port)."""
    evaluator = Evaluator(ruleset)
    wanted = [(context.protocol, context.port)] if context.port else [
        pair for pair in candidate_ports(ruleset, context.protocol) if pair[0] == context.protocol]
    forwards: list[Group] = []
    locals_: list[Group] = []
    for protocol, port in wanted:
        results = [admitted(ruleset, version, protocol, port, context.relay_addresses, context.interface,
                            evaluator) for version in sorted(ruleset.versions)]
        forward = any(is_forward for _, _, is_forward in results)
        entries = [e for found, _, is_forward in results if is_forward == forward for e in found]
        targets = list(dict.fromkeys(t for _, where, _ in results for t in where))
        label = f"{protocol}/{port}" + (f" -> {', '.join(targets)}" if targets else " (local)")
        (forwards if forward else locals_).append(Group(label_prefix + label, tuple(entries), protocol, port))
    if context.port:
        chosen = forwards + locals_
    else:  # without --port, a local port counts only when a rule (not a policy) accepts it
        chosen = forwards or [g for g in locals_ if any(e.text != POLICY_TEXT for e in g.entries)]
    return chosen, list(evaluator.notes.values())
