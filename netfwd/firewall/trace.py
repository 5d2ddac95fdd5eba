"""Follow the first packet of a new connection through the model as the kernel does (explain).

Hooks in order: prerouting (every base chain by priority, across tables and families; the nat
chains as one group at the NAT core's place, -100, the first chain that maps wins), the routing
decision (local delivery or forward, output interface; ip_forward, rp_filter), then input or
forward, then postrouting (source NAT at 100). ACCEPT ends one base chain, DROP and REJECT end the
packet. Any match or target the model cannot decide exactly ends the trace with verdict
`unknown`, naming it: never a guess. docs/explain.md lists what is modelled.
"""

from __future__ import annotations

import copy
from bisect import bisect_right
from dataclasses import dataclass, field

from netaddr import IPAddress

from netfwd.firewall.routing import Host
from netfwd.firewall.model import (ENTRY, Always, Chain, CtState, DAddr, DPort, DstLocal, Family, Iface, OrigDst, Proto,
                                   Rule, Ruleset, SPort, TcpFlags, Unknown, describe, iface_matches)

NAT_CORE = {"prerouting": -100, "output": -100, "postrouting": 100, "input": 100}
MAX_DEPTH = 64  # nested jumps; the kernel refuses loops when rules are loaded
PORTED = ("tcp", "udp", "sctp", "dccp", "udplite")
CONNTRACK_PRIORITY = -200  # chains before it (raw, priority < -200) see no conntrack entry yet
_NEVER = object()  # a match that cannot apply at all, negated or not
_SKIPPED = object()  # a match the kernel does not look at for this packet: the rule goes on
INDEXED_PORTS = 64  # a rule whose destination ports span at most this many is indexed by port


@dataclass(frozen=True, slots=True)
class Probe:
    """The packet to explain: the first one of a new connection arriving on the relay."""

    src: IPAddress
    dst: IPAddress
    protocol: str = "tcp"
    dport: int | None = None
    sport: int | None = None
    in_interface: str | None = None

    @property
    def version(self) -> int:
        return self.dst.version


@dataclass(frozen=True, slots=True)
class Step:
    hook: str
    table: str
    chain: str
    rule: int | None  # 1-based position in its chain; None for a policy or the routing decision
    text: str
    action: str

    def as_dict(self) -> dict:
        return {"hook": self.hook, "table": self.table, "chain": self.chain, "rule": self.rule,
                "text": self.text, "action": self.action}


@dataclass
class Answer:
    verdict: str  # forward | local | drop | reject | unknown
    to_address: IPAddress | None = None
    to_port: int | None = None
    source_seen: IPAddress | None = None
    out_interface: str | None = None
    reject_with: str | None = None
    reason: str = ""  # why: the unmodelled match/target, the missing route, ...
    path: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"verdict": self.verdict,
                "to": None if self.to_address is None and self.to_port is None else
                {"address": None if self.to_address is None else str(self.to_address), "port": self.to_port},
                "source_seen": None if self.source_seen is None else str(self.source_seen),
                "out_interface": self.out_interface, "reject_with": self.reject_with,
                "reason": self.reason, "path": [s.as_dict() for s in self.path]}

    def summary(self) -> str:
        if self.verdict == "forward":
            return (f"forward to {_hostport(self.to_address, self.to_port)} out of {self.out_interface}, "
                    f"source seen {self.source_seen if self.source_seen is not None else 'unknown'}")
        if self.verdict == "local":
            return f"local delivery to {_hostport(self.to_address, self.to_port)} on the relay"
        if self.verdict == "reject":
            return f"reject with {self.reject_with}" + (f" ({self.reason})" if self.reason else "")
        return f"{self.verdict}" + (f": {self.reason}" if self.reason else "")


def _hostport(address: IPAddress | None, port: int | None) -> str:
    host = "?" if address is None else (f"[{address}]" if address.version == 6 else str(address))
    return host if port is None else f"{host}:{port}"


class _Unknown(Exception):
    pass


class _State:
    """The packet as it is now (addresses change with NAT) and what conntrack knows of it."""

    def __init__(self, probe: Probe) -> None:
        self.src, self.dst = probe.src, probe.dst
        self.sport, self.dport = probe.sport, probe.dport
        self.orig_dst, self.orig_dport = probe.dst, probe.dport
        self.protocol, self.version = probe.protocol, probe.version
        self.iif = probe.in_interface
        self.oif: str | None = None
        self.dnat = self.snat = False
        self.status: set[str] = set()  # conntrack status bits set so far (dnat, dnat-done, snat, ...)
        self.hook = ""
        self.tracked = True  # False in chains that run before conntrack


class Tracer:
    """Explains packets against one ruleset and host; build once, call :meth:`explain` per packet."""

    def __init__(self, ruleset: Ruleset, host: Host) -> None:
        self.ruleset, self.host = ruleset, host
        self._hooks: dict[tuple[str, int], list[tuple[str, Chain]]] = {}
        self._numbers: dict[int, list[int]] = {}
        self._spans: dict[int, tuple[object, int, list[int], list[int]]] = {}  # id(IPSet) -> its ranges
        self._index: dict[int, tuple[Chain, dict[int, list[int]], dict[int, list[int]], list[int]]] = {}
        self._candidates: dict[tuple[int, int | None, int], list[int]] = {}

    # -- speed: address sets as sorted integer ranges, rules indexed by destination port -----------
    def _contains(self, addresses, address: IPAddress) -> bool:
        """`address in addresses` for an IPSet, by bisection (netaddr's test costs ~0.1 ms)."""
        span = self._spans.get(id(addresses))
        if span is None or span[0] is not addresses:
            ranges = sorted((r.first, r.last, r.version) for r in addresses.iter_ipranges())
            span = self._spans[id(addresses)] = (addresses, 0, [r[0] + (r[2] << 128) for r in ranges],
                                                  [r[1] + (r[2] << 128) for r in ranges])
        value = int(address) + (address.version << 128)
        at = bisect_right(span[2], value) - 1
        return at >= 0 and value <= span[3][at]

    def _rules_for(self, chain: Chain, port: int | None, address: IPAddress) -> list[int]:
        """Positions of the rules of `chain` a packet to `address`:`port` can match, in order: rules
        with a plain match on another single destination address, or on other destination ports,
        are skipped without testing them (netfwd's own 10,000-rule chains are one rule per forward)."""
        where = int(address) + (address.version << 128)
        key = (id(chain), port, where)
        found = self._candidates.get(key)
        if found is not None and self._index[id(chain)][0] is chain:
            return found
        entry = self._index.get(id(chain))
        if entry is None or entry[0] is not chain:
            by_address: dict[int, list[int]] = {}
            by_port: dict[int, list[int]] = {}
            wild: list[int] = []
            for index, rule in enumerate(chain.rules):
                host, ports = rule.index_keys(INDEXED_PORTS)
                if host is not None:
                    by_address.setdefault(host, []).append(index)
                elif ports is not None:
                    for value in ports:
                        by_port.setdefault(value, []).append(index)
                else:
                    wild.append(index)
            entry = self._index[id(chain)] = (chain, by_address, by_port, wild)
        chosen = entry[1].get(where, []) + (entry[2].get(port, []) if port is not None else [])
        found = sorted(chosen + entry[3]) if chosen else entry[3]
        if len(self._candidates) > 100_000:
            self._candidates.clear()
        self._candidates[key] = found
        return found

    def base_chains(self, hook: str, version: int) -> list[tuple[str, Chain]]:
        key = (hook, version)
        if key not in self._hooks:
            found = self.ruleset.base_chains(hook, version)
            core = NAT_CORE.get(hook, 0)
            self._hooks[key] = sorted(found, key=lambda item: (core if item[1].kind == "nat" else item[1].priority,
                                                               item[1].kind == "nat", item[1].priority))
        return self._hooks[key]

    def number(self, chain: Chain, index: int) -> int:
        """The rule's position as its author counts it (a verdict map split into rules is one rule)."""
        numbers = self._numbers.get(id(chain))
        if numbers is None or len(numbers) != len(chain.rules):
            numbers, count, last = [], 0, None
            for rule in chain.rules:
                if rule.origin is not last:
                    count += 1
                    last = rule.origin
                numbers.append(count)
            self._numbers[id(chain)] = numbers
        return numbers[index]

    # -- the walk ---------------------------------------------------------------------------------
    def explain(self, probe: Probe) -> Answer:
        state = _State(probe)
        path: list[Step] = []
        try:
            return self._explain(state, path)
        except _Unknown as problem:
            return Answer("unknown", reason=str(problem), path=path)

    def _explain(self, st: _State, path: list[Step]) -> Answer:
        if st.iif is None:
            back = self.host.route(st.src)
            if back is not None and back.kind == "unicast" and back.dev:
                st.iif = back.dev  # a packet from src arrives where the route back to src leaves
        end = self._hook("prerouting", st, path)
        if end is not None:
            return end
        local = self.host.is_local(st.dst)
        if st.iif is not None and self.host.rp_mode(st.iif):
            back = self.host.route(st.src)
            mode = self.host.rp_mode(st.iif)
            if back is None or back.kind != "unicast" or (mode == 1 and back.dev != st.iif):
                path.append(Step("routing", "", "", None, f"rp_filter={mode} on {st.iif}: no route back to "
                                 f"{st.src} via {st.iif}", "drop"))
                return Answer("drop", reason=f"reverse-path filter (rp_filter={mode}) on {st.iif}", path=path)
        if local:
            path.append(Step("routing", "", "", None, f"{st.dst} is an address of the relay", "local"))
            end = self._hook("input", st, path)
            if end is not None:
                return end
            return Answer("local", st.dst, st.dport, st.src, None, path=path)
        if not self.host.forwarding.get(st.version, True):
            path.append(Step("routing", "", "", None, f"IPv{st.version} forwarding is off", "drop"))
            return Answer("drop", reason=f"IPv{st.version} forwarding is off on the relay", path=path)
        route = self.host.route(st.dst)
        if route is None or route.kind != "unicast":
            what = {None: "icmp-net-unreachable", "unreachable": "icmp-host-unreachable",
                    "prohibit": "icmp-admin-prohibited"}.get(None if route is None else route.kind)
            text = f"no route to {st.dst}" if route is None else f"{route}"
            path.append(Step("routing", "", "", None, text, "reject" if what else "drop"))
            if what is None:
                return Answer("drop", reason=text, path=path)
            return Answer("reject", reject_with=what, reason=text, path=path)
        st.oif = route.dev
        path.append(Step("routing", "", "", None, f"forward: {st.dst} via {route}", "forward"))
        for hook in ("forward", "postrouting"):
            end = self._hook(hook, st, path)
            if end is not None:
                return end
        return Answer("forward", st.dst, st.dport, st.src, st.oif, path=path)

    def _hook(self, hook: str, st: _State, path: list[Step]) -> Answer | None:
        st.hook = hook
        mapped = False
        chains = self.base_chains(hook, st.version)
        natted = any(chain.kind == "nat" for _, chain in chains)
        for position, (table, chain) in enumerate(chains):
            if chain.kind == "nat":
                if mapped:  # the NAT core runs no nat chain after the first mapping
                    continue
                unmapped = copy.copy(st)
                outcome = self._chain(table, chain, st, path)
                if outcome != "accept":
                    self._nat_ties(table, chain, chains[position + 1:], outcome, unmapped)
                if outcome in ("dnat", "snat"):
                    mapped = True
                elif outcome != "accept":
                    return self._final(outcome, path, st)
                continue
            st.tracked = not (hook in ("prerouting", "output") and chain.priority < CONNTRACK_PRIORITY)
            if natted and chain.priority > NAT_CORE.get(hook, 0):
                self._nat_done(hook, st)
            before = copy.copy(st)
            outcome = self._chain(table, chain, st, path)
            st.tracked = True
            if outcome != "accept":
                for other_table, other in chains:
                    if other is not chain and other.kind != "nat" and other.priority == chain.priority:
                        try:
                            differs = self._chain(other_table, other, copy.copy(before), []) not in ("accept", outcome)
                        except _Unknown:
                            differs = True
                        if differs:
                            raise _Unknown(f"base chains {chain.name} and {other.name} share priority {chain.priority} "
                                           f"at {hook} and decide this packet differently: the kernel runs the one "
                                           "created last first, which a dump does not tell")
                return self._final(outcome, path, st)
        if natted:
            self._nat_done(hook, st)
        return None

    @staticmethod
    def _nat_done(hook: str, st: _State) -> None:
        """Once the NAT core ran at a hook (a mapping or the null binding), conntrack says so."""
        st.status.add("dnat-done" if hook in ("prerouting", "output") else "snat-done")

    def _nat_ties(self, table: str, chain: Chain, later: list[tuple[str, Chain]], outcome: str,
                  unmapped: _State) -> None:
        """`chain` decided the packet (a mapping, a drop): a later nat chain at the same priority may run
        first in the kernel (the one created last does, which no dump tells). Unknown when one would
        decide it otherwise, from the packet as `chain` got it; two mappings always count as different."""
        for other_table, other in later:
            if other.kind != "nat" or other.priority != chain.priority:
                continue
            try:
                theirs = self._chain(other_table, other, copy.copy(unmapped), [])
            except _Unknown:
                theirs = "unknown"
            if theirs != "accept" and (theirs != outcome or theirs in ("dnat", "snat")):
                raise _Unknown(f"nat chains {table} {chain.name} and {other_table} {other.name} share priority "
                               f"{chain.priority} at {unmapped.hook} and decide this packet differently ({outcome}, "
                               f"{theirs}): the kernel runs the one created last first, which a dump does not tell")

    def _final(self, outcome: str, path: list[Step], st: _State) -> Answer:
        if outcome.startswith("reject:"):
            note = ""
            if st.dnat:  # the connection is not confirmed, so conntrack cannot translate the error back
                note = (f"the error quotes the translated destination {_hostport(st.dst, st.dport)}, "
                        "which the client does not recognise")
            return Answer("reject", reject_with=outcome[7:], reason=note, path=path)
        return Answer("drop", path=path)

    def _chain(self, table: str, base: Chain, st: _State, path: list[Step]) -> str:
        """Walk one base chain: 'accept', 'drop', 'reject:WITH', or 'dnat'/'snat' (a NAT mapping made)."""
        port = st.dport if st.protocol in PORTED else None
        frames: list[list] = [[base, 0, self._rules_for(base, port, st.dst)]]
        while frames:
            frame = frames[-1]
            chain, position, positions = frame
            if position >= len(positions):
                frames.pop()
                if not frames:
                    policy = base.policy
                    path.append(Step(st.hook, table, base.name, None, f"policy {policy}", policy))
                    return "accept" if policy == "accept" else "drop"
                continue
            frame[1] = position + 1
            index = positions[position]
            rule = chain.rules[index].whole()
            if not self._matches(rule, st, table, chain, index):
                continue
            verdict = rule.verdict
            action = verdict.action or verdict.kind
            if verdict.action in ("notrack", "ct", "unknown") or verdict.kind == "unknown":
                raise _Unknown(f"target {verdict.target or verdict.action} in {table} {chain.name} rule "
                               f"{self.number(chain, index)} is not modelled ({rule.origin.text})")
            step = Step(st.hook, table, chain.name, self.number(chain, index), rule.origin.text, action)
            kind = verdict.kind
            if kind == "continue" and verdict.action in ("snat", "masquerade"):
                path.append(step)
                return self._source_nat(verdict, st, step, path)
            if kind == "continue":
                path.append(step)
                continue
            if kind in ("jump", "goto"):
                target = self.ruleset.chain(table, verdict.target)
                if target is None:
                    raise _Unknown(f"{kind} to chain {verdict.target}, which is not in the ruleset")
                path.append(step)
                if len(frames) > MAX_DEPTH:
                    raise _Unknown(f"jumps nested deeper than {MAX_DEPTH}")
                if kind == "goto":
                    frames[-1] = [target, 0, self._rules_for(target, port, st.dst)]
                else:
                    frames.append([target, 0, self._rules_for(target, port, st.dst)])
                continue
            if kind == "return":
                path.append(step)
                frames.pop()
                if not frames:
                    path.append(Step(st.hook, table, base.name, None, f"policy {base.policy}", base.policy))
                    return "accept" if base.policy == "accept" else "drop"
                continue
            path.append(step)
            if kind == "accept":
                return "accept"
            if kind == "drop":
                return f"reject:{verdict.detail}" if verdict.action == "reject" else "drop"
            if kind in ("dnat", "redirect"):
                return self._destination_nat(verdict, st, step, path)
            raise _Unknown(f"verdict {kind} in {table} {chain.name} is not modelled")
        return "accept"

    def _destination_nat(self, verdict, st: _State, step: Step, path: list[Step]) -> str:
        if st.hook not in ("prerouting", "output"):
            raise _Unknown(f"{verdict.kind} at {st.hook} is not modelled")
        if "-" in verdict.detail.rpartition("]")[2] and verdict.kind == "dnat":
            raise _Unknown(f"DNAT to a range ({verdict.detail}): the kernel picks by hash")
        before = (st.dst, st.dport)
        if verdict.kind == "redirect":
            address = self.host.address_of(st.iif or "") if st.iif else None
            if address is None:
                raise _Unknown(f"REDIRECT: the address of the input interface {st.iif} is not known")
            st.dst = address
        elif verdict.to_addr is not None:
            st.dst = verdict.to_addr
        if verdict.to_port is not None:
            if "-" in verdict.detail.rpartition(":")[2]:
                raise _Unknown(f"NAT to a port range ({verdict.detail})")
            st.dport = verdict.to_port
        # conntrack marks the connection DNAT only when the mapping changes its tuple
        st.dnat = st.dnat or (st.dst, st.dport) != before
        return "dnat"

    def _source_nat(self, verdict, st: _State, step: Step, path: list[Step]) -> str:
        if st.hook not in ("postrouting", "input"):
            raise _Unknown(f"{verdict.action} at {st.hook} is not modelled")
        before = st.src
        if verdict.detail and verdict.to_port is None and (verdict.action == "masquerade" or verdict.to_addr is None):
            raise _Unknown(f"{verdict.action} to {verdict.detail} is not modelled")
        if verdict.action == "masquerade":
            route = self.host.route(st.dst)
            source = self.host.source_for(route) if route is not None else None
            if source is None:
                raise _Unknown(f"MASQUERADE: the address of {st.oif} is not known (pass --routes with prefsrc)")
            st.src = source
        else:
            if verdict.to_addr is None or "-" in verdict.detail.split(":")[0]:
                raise _Unknown(f"SNAT to {verdict.detail or 'an unknown address'} is not modelled")
            st.src = verdict.to_addr
        if verdict.to_port is not None:
            raise _Unknown(f"source NAT to ports ({verdict.detail}) is not modelled")
        st.snat = st.snat or st.src != before
        return "snat"

    # -- matches ----------------------------------------------------------------------------------
    def _matches(self, rule: Rule, st: _State, table: str, chain: Chain, index: int) -> bool:
        for source in rule.sources:
            if source.addresses is None:
                raise _Unknown(f"source set {source.name!r} in {table} {chain.name} rule "
                               f"{self.number(chain, index)}: its members are not in the input")
            if self._contains(source.addresses, st.src) == source.negated:
                return False
        for cond in rule.conds:
            result = self._test(cond, st)
            if result is _NEVER:
                return False
            if result is _SKIPPED:
                continue
            if result is None:
                raise _Unknown(f"{describe(cond)} in {table} {chain.name} rule {self.number(chain, index)} "
                               f"is not modelled ({rule.origin.text})")
            if result == cond.negated:
                return False
        return True

    def _test(self, cond, st: _State) -> bool | None | object:  # object: _NEVER, _SKIPPED  # noqa: C901 - one branch per match kind
        if cond.ct and not st.tracked:  # read from a conntrack entry the packet does not have yet
            return _NEVER if cond.ct == ENTRY else _SKIPPED
        kind = type(cond)
        if kind is Proto:
            return st.protocol in cond.names or "all" in cond.names
        if kind is DPort or kind is SPort:
            port = st.dport if kind is DPort else st.sport
            if port is None or st.protocol not in PORTED:
                return cond.negated  # a packet without ports never matches a port match, negated or not
            return any(low <= port <= high for low, high in cond.ranges)
        if kind is DAddr:
            if cond.addresses is None:
                return None
            return self._contains(cond.addresses, st.dst)
        if kind is DstLocal:
            return self.host.is_local(st.dst)
        if kind is Iface:
            if cond.direction == "in":
                if st.iif is None:
                    return None
                return iface_matches(cond.pattern, st.iif)
            if st.oif is None:
                return False if st.hook in ("prerouting", "input") else None
            return iface_matches(cond.pattern, st.oif)
        if kind is CtState:
            if not st.tracked:  # no entry yet: the state is INVALID, without SNAT or DNAT
                return "invalid" in cond.states
            status = st.status | ({"dnat"} if st.dnat else set()) | ({"snat"} if st.snat else set())
            if cond.exact:
                return cond.states == status
            return bool(cond.states & (status | {"new"}))
        if kind is TcpFlags:
            if st.protocol != "tcp":
                return _NEVER
            return cond.first()
        if kind is Family:
            return st.version == cond.version
        if kind is Always:
            return True
        if kind is OrigDst:
            if cond.addresses is not None and not self._contains(cond.addresses, st.orig_dst):
                return False
            if cond.ports:
                if st.orig_dport is None:
                    return False
                return any(low <= st.orig_dport <= high for low, high in cond.ports)
            return cond.addresses is not None
        if kind is Unknown:
            return None
        return None

