"""The one reader of `nft -j list ruleset` (or `nft -j list table ...`) JSON.

Builds the neutral firewall model from libnftables' JSON schema: sets with their elements, base chains
with hook, priority and policy, and each rule's expressions. The text reader (`nft_text`) turns
`nft list ruleset` output into the same JSON objects, so both go through this one converter.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from netaddr import AddrFormatError, IPAddress, IPSet

from netfwd.errors import InputError
from netfwd.firewall.addresses import digits, parse_token, to_cidrs
from dataclasses import replace

from netfwd.firewall.model import (ENTRY, TCP_FLAGS, Always, Chain, CtState, DAddr, DPort, DstLocal, Family, Iface, OrigDst, Origin,
                                   Proto, Rule, Ruleset, Source, SPort, TcpFlags, Unknown, Verdict)

VERSIONS = {"ip": frozenset({4}), "ip6": frozenset({6}), "inet": frozenset({4, 6})}
ADDRESS_FIELDS = {("ip", "saddr"), ("ip", "daddr"), ("ip6", "saddr"), ("ip6", "daddr")}
L4 = ("tcp", "udp", "sctp", "dccp", "udplite", "th")
PROTOCOL_NUMBERS = {6: "tcp", 17: "udp", 132: "sctp"}
IGNORED = ("counter", "log", "mangle", "meter", "set", "xt", "synproxy", "ct helper", "flow")
VERDICTS = ("accept", "drop", "reject", "return", "continue", "jump", "goto", "queue", "dnat", "redirect",
            "masquerade", "snat")


class Unsupported(ValueError):
    """A value this reader cannot turn into addresses or ports (the rule becomes `unevaluated`)."""


def _text(value: Any) -> str:
    if isinstance(value, dict):
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            return "-".join(_text(v) for v in value["range"])
        if "set" in value:
            return "{ " + ", ".join(_text(v) for v in value["set"]) + " }"
        if "elem" in value:
            return _text(value["elem"]["val"])
    if isinstance(value, list):
        return "{ " + ", ".join(_text(v) for v in value) + " }"
    return str(value)


def addresses(value: Any, sets: dict[str, IPSet | None]) -> IPSet | None:
    """An address, prefix, range, anonymous set or @named set -> IPSet (None: a set we lack)."""
    if isinstance(value, str) and value.startswith("@"):
        return sets.get(value[1:])
    if isinstance(value, dict) and "set" in value:
        value = value["set"]
    if isinstance(value, list):
        result = IPSet()
        for item in value:
            part = addresses(item, sets)
            if part is None:
                return None
            result |= part
        return result
    if isinstance(value, dict) and "elem" in value:
        return addresses(value["elem"]["val"], sets)
    try:
        version, first, last = parse_token(_text(value), strict=False)
    except ValueError as problem:
        raise Unsupported(str(problem)) from None
    return IPSet(to_cidrs(version, first, last))


def ports(value: Any) -> tuple[tuple[int, int], ...]:
    if isinstance(value, dict) and "set" in value:
        value = value["set"]
    if isinstance(value, list):
        return tuple(r for item in value for r in ports(item))
    if isinstance(value, dict) and "range" in value:
        low, high = value["range"]
        return ((_port(low), _port(high)),)
    if isinstance(value, dict) and "elem" in value:
        return ports(value["elem"]["val"])
    return ((_port(value), _port(value)),)


def _port(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and digits(value):
        return int(value)
    try:
        return socket.getservbyname(str(value), "tcp")
    except OSError:
        raise Unsupported(f"{value!r} is not a port") from None


def _names(value: Any) -> frozenset[str]:
    if isinstance(value, dict) and "set" in value:
        value = value["set"]
    items = value if isinstance(value, list) else [value]
    return frozenset(PROTOCOL_NUMBERS.get(v, str(v)) if isinstance(v, int) else str(v).lower() for v in items)


class _RuleBuilder:
    """One rule's expression list -> IR rule."""

    def __init__(self, sets: dict[str, IPSet | None]) -> None:
        self.sets = sets
        self.sources: list[Source] = []
        self.source_text: list[str] = []
        self.conds: list = []
        self.verdict = Verdict("continue")
        self.notrack = False

    def build(self, exprs: list[dict], origin: Origin) -> list[Rule]:
        """Usually one rule; a verdict map (`ct state vmap { ... }`) becomes one rule per element,
        each with the map key as an extra match: exact, since map keys are disjoint."""
        vmap = None
        for expr in exprs:
            if not isinstance(expr, dict) or len(expr) != 1:
                self.conds.append(Unknown(f"expression {str(expr)[:40]}"))
                continue
            (key, body), = expr.items()
            if key == "match":
                self.match(body)
            elif key == "vmap" and isinstance(body, dict):
                vmap = body
            elif key in VERDICTS:
                self.set_verdict(key, body)
            elif key == "unknown":  # from the text reader: a statement it could not read
                self.conds.append(Unknown(str(body)))
            elif key == "notrack":  # no verdict; the connection is not tracked (so never NATed)
                self.notrack = True
            elif key not in IGNORED:
                self.conds.append(Unknown(key))  # limit, quota, ...: may stop the rule from matching
        if vmap is not None:
            return self._split(vmap, origin)
        return [self._rule(origin)]

    def _rule(self, origin: Origin) -> Rule:
        verdict = replace(self.verdict, action="notrack") if self.notrack else self.verdict
        return Rule(origin, tuple(self.sources), tuple(self.conds), verdict,
                    " ".join(self.source_text) or "any source")

    def _split(self, vmap: dict, origin: Origin) -> list[Rule]:
        data = vmap.get("data", {})
        items = data.get("set", []) if isinstance(data, dict) else []
        rules = []
        base_sources, base_text, base_conds = list(self.sources), list(self.source_text), list(self.conds)
        for item in items:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict) and len(item[1]) == 1):
                self.sources, self.source_text = base_sources, base_text
                self.conds = base_conds + [Unknown("verdict map element")]
                self.verdict = Verdict("unknown", "vmap")
                return [self._rule(origin)]
            self.sources, self.source_text, self.conds = list(base_sources), list(base_text), list(base_conds)
            self.match({"op": "==", "left": vmap.get("key"), "right": item[0]})
            (verdict, body), = item[1].items()
            self.set_verdict(verdict, body)
            rules.append(self._rule(origin))
        return rules

    def match(self, body: dict) -> None:
        op, left, right = body.get("op", "=="), body.get("left"), body.get("right")
        negated = op == "!="
        if op not in ("==", "!=", "in"):
            self.conds.append(Unknown(f"{_text(left)} {op} {_text(right)}"))
            return
        try:
            self._match(left, right, negated, op)
        except Unsupported as problem:
            self.conds.append(Unknown(str(problem)))

    def _match(self, left: Any, right: Any, negated: bool, op: str) -> None:  # noqa: C901 - a flat table
        if isinstance(left, dict) and "payload" in left:
            proto, field = left["payload"].get("protocol"), left["payload"].get("field")
            if (proto, field) in ADDRESS_FIELDS:
                self.conds.append(Family(4 if proto == "ip" else 6))
                found = addresses(right, self.sets)
                if field == "saddr":
                    self.sources.append(Source(found, negated, right[1:] if isinstance(right, str)
                                               and right.startswith("@") else ""))
                    self.source_text.append(f"{proto} saddr {'!= ' if negated else ''}{_text(right)}")
                else:
                    self.conds.append(DAddr(found, negated, right[1:] if found is None else ""))
            elif proto == "tcp" and field == "flags":
                self.conds.append(Proto(frozenset({"tcp"})))
                names = _names(right)
                self.conds.append(TcpFlags(names, None, negated) if op == "in" else
                                  TcpFlags(TCP_FLAGS, names, negated))
            elif proto in L4 and field in ("dport", "sport"):
                if proto != "th":
                    self.conds.append(Proto(frozenset({proto})))
                else:
                    self.conds.append(Proto(frozenset({"tcp", "udp", "sctp", "dccp", "udplite"})))
                self.conds.append((DPort if field == "dport" else SPort)(ports(right), negated))
            elif (proto, field) in (("ip", "protocol"), ("ip6", "nexthdr")):
                self.conds.append(Proto(_names(right), negated))
            else:  # a field not modelled: only packets of its protocol can reach the question
                if proto in L4 and proto != "th":
                    self.conds.append(Proto(frozenset({proto})))
                elif proto in ("icmp", "icmpv6"):
                    self.conds.append(Proto(frozenset({"icmp"} if proto == "icmp" else {"ipv6-icmp", "icmpv6"})))
                self.conds.append(Unknown(f"{proto} {field}"))
        elif isinstance(left, dict) and "meta" in left:
            key = left["meta"].get("key")
            if key == "l4proto":
                self.conds.append(Proto(_names(right), negated))
            elif key == "nfproto":
                names = _names(right)
                self.conds.append(Family(4 if "ipv4" in names else 6) if len(names) == 1 else Always(negated))
            elif key in ("iifname", "iif", "oifname", "oif"):
                direction = "in" if key.startswith("i") else "out"
                self.conds.append(Iface(direction, str(right).strip('"'), negated))
            else:
                self.conds.append(Unknown(f"meta {key}", negated))
        elif isinstance(left, dict) and "ct" in left:
            key = str(left["ct"].get("key"))
            key = key.split(" ", 1)[1] if key.startswith(("ip ", "ip6 ")) else key  # nft -j: "ip saddr"
            if key in ("state", "status"):  # `ct status != dnat` compares the whole status, `ct status dnat` a bit
                self.conds.append(CtState(_names(right), negated, key == "status" and op in ("==", "!="),
                                          ct=ENTRY if key == "status" else ""))
            elif left["ct"].get("dir") == "original" and key == "daddr":
                self.conds.append(OrigDst(addresses(right, self.sets), (), negated))
            elif left["ct"].get("dir") == "original" and key == "proto-dst":
                self.conds.append(OrigDst(None, ports(right), negated))
            elif left["ct"].get("dir") == "reply" and key == "saddr":  # REPLY_SOURCE (netfwd/firewall/model.py)
                self.conds.append(DAddr(addresses(right, self.sets), negated, ct=ENTRY))
            elif left["ct"].get("dir") == "reply" and key == "proto-src":
                self.conds.append(DPort(ports(right), negated, ct=ENTRY))
            else:
                self.conds.append(Unknown(f"ct {key}", negated))
        elif isinstance(left, dict) and "fib" in left and left["fib"].get("result") == "type" \
                and "daddr" in left["fib"].get("flags", []) and _names(right) == {"local"}:
            self.conds.append(DstLocal(negated))
        else:
            self.conds.append(Unknown(_text(left)[:40], negated))

    def set_verdict(self, key: str, body: Any) -> None:
        if key in ("jump", "goto"):
            self.verdict = Verdict(key, body["target"])
        elif key == "dnat":
            addr = body.get("addr") if isinstance(body, dict) else None
            port = body.get("port") if isinstance(body, dict) else None
            if isinstance(addr, (dict, list)) or isinstance(port, (dict, list)):
                self.verdict = Verdict("unknown", "dnat map")
                return
            try:
                self.verdict = Verdict("dnat", "", IPAddress(addr) if addr else None,
                                       int(port) if port is not None else None)
            except (ValueError, TypeError, AddrFormatError):
                self.verdict = Verdict("unknown", f"dnat to {addr}:{port}")
        elif key == "redirect":
            port = body.get("port") if isinstance(body, dict) else None
            self.verdict = Verdict("redirect", "", None, int(port) if isinstance(port, int) else None)
        elif key in ("masquerade", "snat"):
            body = body if isinstance(body, dict) else {}
            addr, port = body.get("addr"), body.get("port")
            try:
                to_addr = IPAddress(addr) if isinstance(addr, str) else None
            except (ValueError, TypeError, AddrFormatError):
                to_addr = None
            # what explain cannot follow (an address it could not read, a port range) stays in `detail`
            self.verdict = Verdict("continue", key.upper(), to_addr, port if isinstance(port, int) else None,
                                   key, _text(body) if body else "")
        elif key == "continue":
            self.verdict = Verdict("continue")
        elif key == "reject":
            self.verdict = Verdict("drop", "", None, None, "reject", _reject_detail(body))
        elif key == "queue":
            self.verdict = Verdict("unknown", "queue")
        else:
            self.verdict = Verdict(key)


def _reject_detail(body: Any) -> str:
    """nft's reject body in iptables' words: tcp-reset, icmp-port-unreachable, icmpx-admin-prohibited..."""
    if not isinstance(body, dict) or not body.get("type"):
        return "icmp-port-unreachable"  # nft's default (icmpx in inet tables: the same on the wire)
    kind = str(body["type"])
    if kind == "tcp reset":
        return "tcp-reset"
    return f"{kind}-{body.get('expr', 'port-unreachable')}"


def build(objects: list[dict], file: str, lines: dict[tuple, int] | None = None) -> Ruleset:
    """JSON objects (`{"set": ...}`, `{"chain": ...}`, `{"rule": ...}`) -> IR. `lines` maps an
    object's (kind, family, table, chain/name, index) to its line in a text source."""
    ruleset = Ruleset()
    sets: dict[str, dict[str, IPSet | None]] = {}
    for obj in objects:
        if "set" in obj:
            spec = obj["set"]
            table = f"{spec['family']} {spec['table']}"
            kind = spec.get("type")
            members: IPSet | None = None
            if kind in ("ipv4_addr", "ipv6_addr"):
                try:
                    members = addresses(spec.get("elem", []), {})
                except Unsupported:
                    members = None
            sets.setdefault(table, {})[spec["name"]] = members
    counters: dict[tuple[str, str], int] = {}
    for obj in objects:
        if "chain" in obj:
            spec = obj["chain"]
            if spec.get("family") not in VERSIONS:
                continue
            table = f"{spec['family']} {spec['table']}"
            chain = ruleset.chain(table, spec["name"]) or Chain(spec["name"], VERSIONS[spec["family"]])
            if "hook" in spec:
                chain.hook, chain.priority = spec["hook"], int(spec.get("prio", 0))
                chain.kind = "nat" if spec.get("type") == "nat" else "filter"
                chain.policy = spec.get("policy", "accept")
                key = ("chain", spec["family"], spec["table"], spec["name"])
                chain.origin = Origin(file, (lines or {}).get(key), f"chain {spec['name']} policy {chain.policy}")
            ruleset.chains[(table, spec["name"])] = chain
        elif "rule" in obj:
            spec = obj["rule"]
            if spec.get("family") not in VERSIONS:
                continue
            table = f"{spec['family']} {spec['table']}"
            found = ruleset.chain(table, spec["chain"])
            if found is None:
                found = ruleset.chains[(table, spec["chain"])] = Chain(spec["chain"], VERSIONS[spec["family"]])
            chain = found
            index = counters[(table, spec["chain"])] = counters.get((table, spec["chain"]), -1) + 1
            line = (lines or {}).get(("rule", spec["family"], spec["table"], spec["chain"], index))
            text = spec.get("_text") or f"{table} chain {spec['chain']} handle {spec.get('handle', '?')}"
            if spec.get("comment"):
                text += f' comment "{spec["comment"]}"'
            origin = Origin(file, line, text if len(text) <= 160 else text[:157] + "...")
            chain.rules.extend(_RuleBuilder(sets.get(table, {})).build(spec.get("expr", []), origin))
    return ruleset



def read_json(text: str, file: str) -> Ruleset:
    """`nft -j` output -> the model; one-line errors naming the file for anything else."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as problem:
        raise InputError(f"invalid JSON: {problem.msg}", file=file, line=problem.lineno) from None
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise InputError("invalid JSON: nested too deeply", file=file) from None
    except ValueError as problem:  # a number of more than 4300 digits
        raise InputError(f"invalid JSON: {str(problem).split(':')[0]}", file=file) from None
    objects = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(objects, list):
        raise InputError("not `nft -j` output: no top-level \"nftables\" list", file=file, field="nftables")
    try:
        return build([o for o in objects if isinstance(o, dict)], file)
    except (KeyError, TypeError, ValueError) as problem:
        raise InputError(f"unexpected nft JSON object ({problem})", file=file, field="nftables") from None
