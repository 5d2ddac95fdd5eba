"""The one reader of `iptables-save` / `ip6tables-save` output (optionally after `ipset save`).

Both flavours (iptables-nft and iptables-legacy) print the same syntax. Each line becomes a rule of
the neutral model (`netfwd.firewall.model`); whitelist, doctor and explain walk it. Matches are read
exactly (`-s`, `! -s`, `-p`, `--dport(s)`, `-d`, `-i/-o`, conntrack state, addrtype, iprange,
`-m set` with the sets from the same input); anything else on a deciding rule is `unevaluated`.
"""

from __future__ import annotations

import gc
import re
import shlex
from typing import Any, Callable

from netaddr import IPAddress, IPSet

from netfwd.errors import InputError
from netfwd.firewall.addresses import digits, parse_token, range_set, to_cidrs
from dataclasses import replace

from netfwd.firewall.model import (BESIDE_STATE, ENTRY, PRIORITY, TCP_FLAGS, SOURCE_NAT_HOOKS, Always, Chain, CtState,
                                   DAddr, DPort, DstLocal, Iface, OrigDst, Origin, Proto, Rule, Ruleset, Source, SPort,
                                   TcpFlags, Unknown, Verdict)
from netfwd.firewall.model import Cond

HOOKS = {"PREROUTING": "prerouting", "INPUT": "input", "FORWARD": "forward", "OUTPUT": "output",
         "POSTROUTING": "postrouting"}
TERMINAL = {"ACCEPT": "accept", "DROP": "drop", "REJECT": "drop", "RETURN": "return", "DNAT": "dnat",
            "REDIRECT": "redirect"}
NON_TERMINAL = {"LOG", "NFLOG", "ULOG", "MARK", "CONNMARK", "CT", "NOTRACK", "TRACE", "CHECKSUM", "TCPMSS",
                "CLASSIFY", "DSCP", "TOS", "TTL", "HL", "SET", "AUDIT", "TEE", "MASQUERADE", "SNAT",
                "CONNSECMARK", "SECMARK", "IDLETIMER", "LED", "RATEEST"}
PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "132": "sctp", "1": "icmp", "58": "ipv6-icmp"}
_COUNTERS = re.compile(r"^\[\d+:\d+\]\s+")
_IPV6_ADDRESS = re.compile(r"\s(-s|-d|--to-destination)\s+\[?[0-9a-fA-F]*:[0-9a-fA-F:]*:")  # a table of ip6tables


def words(line: str) -> list[str]:
    """One save line split as the shell would, in one pass: `str.split` unless the line quotes
    something (iptables-save quotes only comments and log prefixes); shlex only for odd lines."""
    if '"' not in line and "\\" not in line and "'" not in line:
        return line.split()
    parts = line.split('"')
    if len(parts) % 2 and "\\" not in line and "'" not in line:
        out: list[str] = []
        for index, part in enumerate(parts):
            if index % 2:
                out.append(part)  # the quoted word: `--comment "a b"` (never glued to its neighbours)
            else:
                out += part.split()
        return out
    return shlex.split(line)


def options(words: list[str]) -> dict[str, str]:
    """`-p tcp -m tcp --dport 1` -> {'-p': 'tcp', '--dport': '1', ...} (the last value of a flag wins)."""
    opts: dict[str, str] = {}
    last = len(words) - 1
    for index, word in enumerate(words):
        if word[:1] == "-" and index < last and words[index + 1][:1] != "-":
            opts[word] = words[index + 1]
    return opts


# Options whose condition depends on their own words only (not on the match module or a
# conntrack state beside them), so equal words give one shared, immutable condition.
_PURE = frozenset({"-d", "--destination", "--dst", "-p", "--protocol", "-i", "--in-interface", "-o",
                   "--out-interface", "--dport", "--destination-port", "--dports", "--destination-ports",
                   "--sport", "--source-port", "--sports", "--source-ports", "--ctstate", "--state", "--dst-type"})

# The shape iptables-save prints nearly every rule in (netfwd's own, and plain ACCEPT/DNAT/REJECT
# rules): `-A CHAIN [-s A] [-d A] [-i IF] [-o IF] [-p P] [-m tcp|udp --dport N] [-m conntrack
# --ctstate S] [-m comment --comment "C"] [-j T [--to-destination|--to-source|--reject-with V]]`,
# one space apart. Its words need no quoting rules (none holds a quote or backslash; only the
# comment is quoted) and no value could be taken for an option (none starts with "-" or is "!"),
# so one match finds exactly the options and values the word scan would (_RuleParser.canonical).
_WORD = r"""[^\s"'\\!-][^\s"'\\]*"""
_CANONICAL = re.compile(rf"""-A\ (?P<chain>{_WORD})
    (?:\ -s\ (?P<s>{_WORD}))? (?:\ -d\ (?P<d>{_WORD}))?
    (?:\ -i\ (?P<i>{_WORD}))? (?:\ -o\ (?P<o>{_WORD}))? (?:\ -p\ (?P<p>{_WORD}))?
    (?:\ -m\ (?:tcp|udp)\ --dport\ (?P<dport>{_WORD}))?
    (?:\ -m\ conntrack\ --ctstate\ (?P<ctstate>{_WORD}))?
    (?:\ -m\ comment\ --comment\ (?:"(?:[^"'\\!-][^"'\\]*)?"|{_WORD}))?
    (?:\ -j\ (?P<j>{_WORD})
        (?:\ (?P<option>--to-destination|--to-source|--reject-with)\ (?P<value>{_WORD}))?)?
    \Z""", re.X)
_CANONICAL_GROUPS = ("s", "d", "i", "o", "p", "dport", "ctstate", "j")
_CANONICAL_WORDS = ("-s", "-d", "-i", "-o", "-p", "--dport", "--ctstate", "-j")  # the option of each group


class _Reader:
    def __init__(self, text: str, file: str, lazy: bool = False) -> None:
        self.text, self.file, self.lazy = text, file, lazy
        self.ruleset = Ruleset()
        self.sets: dict[str, IPSet | None] = {}
        self.address_sets: dict[str, IPSet] = {}
        self.conds: dict[tuple[str, str, bool], Cond] = {}  # see _PURE
        self.sources: dict[tuple[str, bool], tuple[Source, str]] = {}  # `-s` words -> match and text
        self.verdicts: dict[tuple, Verdict] = {}  # equal targets share one Verdict
        self.named = False  # a rule names an ipset (`-m set`): _resolve fills in what it holds

    def error(self, line: int, field: str, message: str) -> InputError:
        return InputError(message, file=self.file, line=line, field=field)

    def read(self) -> Ruleset:
        version, table, generated = 4, None, False
        tid = ""  # "ipv4:nat": the table the lines are in
        lines = self.text.splitlines()
        for number, raw in enumerate(lines, 1):
            line = raw.strip()
            if line[:3] == "-A " and table is not None:  # nearly every line: checked first
                self._rule(tid, table, version, line, number)
                continue
            if line[:1] == "[":
                line = _COUNTERS.sub("", line)
            if not line:
                continue
            if line.startswith("#"):
                if "Generated by ip6tables" in line:
                    version, generated = 6, True
                elif "Generated by iptables" in line:
                    version, generated = 4, True
                tid = f"ipv{version}:{table}"
                continue
            if line.startswith("*"):
                table = line[1:].strip()
                if table not in PRIORITY:
                    raise self.error(number, "table", f"unknown table {table!r}")
                if not generated:
                    version = self._guess_version(lines[number:])
                tid = f"ipv{version}:{table}"
                continue
            if line == "COMMIT":
                table = None
                continue
            if line.startswith(("create ", "add ", "flush ", "destroy ")) and table is None:
                self._ipset(line, number)
                continue
            if table is None:
                raise self.error(number, "line", "not inside a table (*nat, *filter, ...): "
                                                 "is this iptables-save output?")
            if line.startswith(":"):
                self._declare(tid, table, version, line, number)
            elif line.startswith(("-A ", "-I ", "--append ", "--insert ")):
                self._rule(tid, table, version, line, number)
            else:
                raise self.error(number, "line", f"unexpected line in *{table}: {line[:60]!r}")
        self._resolve()
        return self.ruleset

    @staticmethod
    def _guess_version(rest: list[str]) -> int:
        for line in rest:
            if line.strip() == "COMMIT":
                break
            if _IPV6_ADDRESS.search(line):
                return 6
        return 4

    def _declare(self, tid: str, table: str, version: int, line: str, number: int) -> Chain:
        parts = line[1:].split()
        if not parts:
            raise self.error(number, "chain", "a chain declaration names no chain")
        name, policy = parts[0], (parts[1] if len(parts) > 1 else "-")
        if policy not in ("-", "ACCEPT", "DROP"):
            raise self.error(number, name, f"{policy!r} is not a chain policy (ACCEPT, DROP or -)")
        chain = self.ruleset.chain(tid, name)
        if chain is None:
            chain = Chain(name, frozenset({version}))
            self.ruleset.chains[(tid, name)] = chain
        if policy != "-" and name in HOOKS:
            chain.hook, chain.priority = HOOKS[name], PRIORITY[table]
            if table == "nat" and chain.hook in SOURCE_NAT_HOOKS:
                chain.priority = 100
            chain.kind = "nat" if table == "nat" else "filter"
            chain.policy = "accept" if policy == "ACCEPT" else "drop"
            chain.origin = Origin(self.file, number, f":{name} {policy}")
        return chain

    def _ipset(self, line: str, number: int) -> None:
        words = line.split()
        if len(words) < 2:
            raise self.error(number, "ipset", f"incomplete ipset line {line!r}")
        name = words[1]
        if words[0] == "create":
            self.sets[name] = IPSet() if words[2:3] and words[2] in ("hash:net", "hash:ip") else None
        elif words[0] == "flush":
            self.sets[name] = IPSet() if self.sets.get(name) is not None else self.sets.get(name)
        elif words[0] == "destroy":
            self.sets.pop(name, None)
        elif self.sets.get(name) is not None and len(words) > 2:
            try:
                version, first, last = parse_token(words[2], strict=False)
            except ValueError as problem:
                raise self.error(number, f"ipset {name}", str(problem)) from None
            addresses = IPSet(to_cidrs(version, first, last))
            if "nomatch" in words[3:]:
                self.sets[name] = self.sets[name] - addresses  # an exception inside the set
            else:
                self.sets[name] = self.sets[name] | addresses

    def _rule(self, tid: str, table: str, version: int, line: str, number: int) -> None:
        canonical = _CANONICAL.match(line)
        if canonical is not None:  # nearly every rule: read without splitting and scanning its words
            name = canonical["chain"]
            chain = self.ruleset.chains.get((tid, name)) or self._declare(tid, table, version, f":{name} -", number)
            if self.lazy:
                chain.rules.append(self._deferred(tid, canonical, number, line))
            else:
                chain.rules.append(_RuleParser(self, [], 0, number, line).canonical(canonical))
            return
        try:
            split = words(line)
        except ValueError as problem:
            raise self.error(number, "rule", f"cannot split: {problem}") from None
        if len(split) < 2:
            raise self.error(number, "rule", "names no chain")
        chain = self.ruleset.chains.get((tid, split[1])) or self._declare(tid, table, version, f":{split[1]} -", number)
        if split[0] not in ("-I", "--insert"):
            chain.rules.append(_RuleParser(self, split, 2, number, line).parse())
            return
        numbered = len(split) > 2 and digits(split[2])
        position = int(split[2]) - 1 if numbered else 0
        rule = _RuleParser(self, split, 3 if numbered else 2, number, line).parse()
        chain.rules.insert(len(chain.rules) if position < 0 else position, rule)  # `-I CHAIN 0`: appended

    def _deferred(self, tid: str, match: re.Match, number: int, line: str) -> Rule:
        """A canonical line, read lazily: its values that could make it an error are checked now, in
        the order the whole read checks them (so reading it later cannot fail, and a bad dump fails
        here as it would eagerly), and its index keys taken; the rest is read on first use."""
        check = _RuleParser(self, [], 0, number, line)
        source, destination, port, option, value = match.group("s", "d", "dport", "option", "value")
        if source is not None:
            check.addresses("-s", source)
        host = check.host("-d", destination) if destination is not None else None
        ports = check.ports("--dport", port) if port is not None else None
        if option in ("--to-destination", "--to-source"):
            check.destination(value)

        def read() -> Rule:
            return self._resolved(tid, _RuleParser(self, [], 0, number, line).canonical(match))

        return _DeferredRule(check.origin(), read, (host, ports))

    def _resolve(self) -> None:
        """Now that every chain and set is declared: is `-j NAME` a jump? What do `-m set` sets hold?"""
        for (tid, _), chain in self.ruleset.chains.items():
            for index, rule in enumerate(chain.rules):
                if type(rule) is _DeferredRule:
                    continue  # resolved when it is read
                resolved = self._resolved(tid, rule)
                if resolved is not rule:
                    chain.rules[index] = resolved

    def _resolved(self, tid: str, rule: Rule) -> Rule:
        """`rule` with `-j NAME` decided (a jump, or a target that goes on) and its `-m set` sets filled
        in; the rule itself when nothing changes (nearly every rule)."""
        verdict = rule.verdict
        if verdict.kind == "unknown" and self.ruleset.chain(tid, verdict.target) is not None:
            verdict = Verdict("jump", verdict.target)
        elif verdict.kind == "unknown" and verdict.target in NON_TERMINAL:
            verdict = replace(verdict, kind="continue")
        named = self.named and (any(s.name for s in rule.sources)
                                or any(isinstance(c, DAddr) and c.name for c in rule.conds))
        if not named:
            return rule if verdict is rule.verdict else replace(rule, verdict=verdict)
        sources = tuple(Source(self.sets.get(s.name), s.negated, s.name) if s.name else s for s in rule.sources)
        conds = tuple(replace(c, addresses=self.sets.get(c.name)) if isinstance(c, DAddr) and c.name else c
                      for c in rule.conds)
        return Rule(rule.origin, sources, conds, verdict, rule.source_text)


_LATE = ("sources", "conds", "verdict", "source_text")  # the fields a _DeferredRule reads on first use


class _DeferredRule(Rule):
    """A rule read when it is first used (`read_ruleset(lazy=True)`: explain of one packet, which
    meets a handful of a 10,000-rule dump's rules; reading every rule whole was over half its run). Its
    origin and index keys come from the quick pass (_Reader._deferred); :meth:`whole`, or the first
    access to another field, reads the line with the parser an eager read uses. It equals the Rule an
    eager read makes. Its fields are slower to reach than a Rule's (`__getattr__` keeps Python from
    specialising attribute access), so a walker takes :meth:`whole` once."""

    __slots__ = ("_read", "_keys", "_whole")

    def __init__(self, origin: Origin, read: Callable[[], Rule],
                 keys: tuple[int | None, tuple[tuple[int, int], ...] | None]) -> None:
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "_read", read)
        object.__setattr__(self, "_keys", keys)  # (the one destination host, the destination ports)
        object.__setattr__(self, "_whole", None)

    def whole(self) -> Rule:
        if self._whole is None:
            rule = self._read()
            for late in _LATE:
                object.__setattr__(self, late, getattr(rule, late))
            object.__setattr__(self, "_whole", rule)
            object.__setattr__(self, "_read", None)  # the line's match is no longer needed
        return self._whole

    def __getattr__(self, name: str) -> Any:
        """Called only for a field not read yet."""
        if name not in _LATE:
            raise AttributeError(name)
        return getattr(self.whole(), name)

    def index_keys(self, max_ports: int) -> tuple[int | None, list[int] | None]:
        """Rule.index_keys without reading the rule: its only destination match is `-d`, its only
        port match `--dport`, neither negated."""
        host, ranges = self._keys
        if host is not None or ranges is None or sum(high - low + 1 for low, high in ranges) > max_ports:
            return host, None
        return None, [port for low, high in ranges for port in range(low, high + 1)]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Rule):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in ("origin", *_LATE))

    __hash__ = Rule.__hash__


class _RuleParser:
    """The words of one `-A CHAIN ...` line -> IR rule (source matches, conditions, verdict)."""

    def __init__(self, reader: _Reader, words: list[str], start: int, number: int, line: str) -> None:
        self.reader, self.words, self.start, self.number, self.line = reader, words, start, number, line
        self.sources: list[Source] = []
        self.source_text: list[str] = []
        self.conds: list = []
        self.target, self.goto = "", False
        self.to_addr: IPAddress | None = None
        self.to_port: int | None = None
        self.module = ""
        self.detail = ""  # --reject-with, or the NAT target as written
        self.entry_options: list[int] = []  # positions in conds of this `-m conntrack`'s entry options
        self.with_state = False  # this `-m conntrack` has a --ctstate

    def error(self, field: str, message: str) -> InputError:
        return self.reader.error(self.number, field, message)

    def addresses(self, option: str, value: str) -> IPSet:
        known = self.reader.address_sets.get(value)
        if known is None:  # rules repeat the same few -s/-d values: parse each text once per dump
            known = self.reader.address_sets[value] = self._addresses(option, value)
        return known  # shared between rules: the model never changes an IPSet in place

    def _ranges(self, option: str, value: str) -> list[tuple[int, int, int]]:
        """(version, first, last) of each address, network or range of `a,b,...`."""
        ranges = []
        for token in value.split(","):
            try:
                ranges.append(parse_token(token, strict=False))
            except ValueError as problem:
                raise self.error(option, str(problem)) from None
        return ranges

    def host(self, option: str, value: str) -> int | None:
        """The one address `value` names, as Rule.index_keys keys it, or None; an error as
        :meth:`addresses` would raise it (without building the set)."""
        ranges = self._ranges(option, value)
        version, first, _ = ranges[0]
        return first + (version << 128) if all(r == (version, first, first) for r in ranges) else None

    def _addresses(self, option: str, value: str) -> IPSet:
        ranges = self._ranges(option, value)
        if len(ranges) == 1:  # nearly always: one address or network needs no merge
            return range_set(*ranges[0])
        return IPSet([net for version, first, last in ranges for net in to_cidrs(version, first, last)])

    def ports(self, option: str, value: str) -> tuple[tuple[int, int], ...]:
        """`80`, `80:90`, `:1024`, `80,443,8000:8080` -> ((low, high), ...)."""
        if value.isascii() and value.isdigit() and int(value) <= 65535:
            return ((int(value), int(value)),)  # one port, as nearly every rule has
        ranges = []
        for part in value.split(","):
            low, sep, high = part.partition(":")
            if not all(p.isascii() and p.isdigit() and int(p) <= 65535 for p in (low, high) if p) or not (low or sep):
                raise self.error(option, f"{value!r} is not a port list")  # not '-5', '99999999999', '٥', '1_0'
            ranges.append((int(low or 0), int(high or (65535 if sep else low))))
        return tuple(ranges)

    def parse(self) -> Rule:
        """One pass over the words: the options nearly every rule has (conditions of their own
        words, comments, `-m`, `-s`) are handled in the loop itself, the rest by :meth:`option`;
        inlined because the loop runs ~9 times a rule, and reading 10,000 rules is most of an
        explain run."""
        words, count = self.words, len(self.words)
        conds = self.conds
        index, negate = self.start, False
        while index < count:
            word = words[index]
            index += 1
            if word == "!":
                negate = True
                continue
            start = index  # the option's arguments: up to the next option word (not "-1", not "-")
            while index < count:
                arg = words[index]
                if arg == "!" or (arg[:1] == "-" and len(arg) > 1 and not arg[1].isdigit()):
                    break
                index += 1
            value = words[start] if index > start else ""
            if word in _PURE:
                conds.append(self.shared(word, value, negate))
            elif word == "--comment":
                pass
            elif word == "-m" or word == "--match":
                if self.with_state or self.entry_options:
                    self.end_match()
                self.module = value
            elif word == "-s" or word == "--source" or word == "--src":
                self.source(word, value, negate)
            else:
                self.option(word, words[start:index], negate)
            negate = False
        return self.rule()

    def canonical(self, match: re.Match) -> Rule:
        """A line of the canonical shape (_CANONICAL): the options :meth:`parse` would find, in the
        same order, given to the same handlers, without splitting and scanning the words."""
        for word, value in zip(_CANONICAL_WORDS, match.group(*_CANONICAL_GROUPS)):
            if value is None:
                continue
            if word in _PURE:
                self.conds.append(self.shared(word, value, False))
            elif word == "-s":
                self.source(word, value, False)
            else:
                self.option(word, [value], False)
        if match["option"] is not None:
            self.option(match["option"], [match["value"]], False)
        return self.rule()

    def shared(self, word: str, value: str, negate: bool) -> Cond:
        """The condition of an option of its words alone (_PURE): made once per dump, then shared."""
        if word == "--ctstate":
            self.with_state = True
        key = (word, value, negate)
        cond = self.reader.conds.get(key)
        if cond is None:
            cond = self.reader.conds[key] = self.pure(word, value, negate)
        return cond

    def rule(self) -> Rule:
        self.end_match()
        return Rule(self.origin(), tuple(self.sources), tuple(self.conds), self.verdict(),
                    " ".join(self.source_text) or "any source")

    def origin(self) -> Origin:
        line = self.line
        return Origin(self.reader.file, self.number, line if len(line) <= 160 else line[:157] + "...")

    def verdict(self) -> Verdict:
        """The rule's verdict; equal verdicts are one shared (immutable) object per dump (a NAT
        target's address is nearly always its rule's own: not worth hashing)."""
        if self.to_addr is not None:
            return self._verdict()
        key = (self.target, self.goto, self.to_port, self.detail)
        verdict = self.reader.verdicts.get(key)
        if verdict is None:
            verdict = self.reader.verdicts[key] = self._verdict()
        return verdict

    def _verdict(self) -> Verdict:
        if self.goto:
            return Verdict("goto", self.target)
        if not self.target:
            return Verdict("continue")
        if self.target in TERMINAL:
            kind = TERMINAL[self.target]
            action = "reject" if self.target == "REJECT" else ""
            detail = self.detail or ("icmp-port-unreachable" if action else "")
            return Verdict(kind, "", self.to_addr, self.to_port, action, detail)
        # a user chain or another target: decided in _Reader._resolve
        return Verdict("unknown", self.target, self.to_addr, self.to_port, self.target.lower(), self.detail)

    def source(self, word: str, value: str, negate: bool) -> None:
        """`[!] -s ADDRESSES`: the match and its text, shared by the rules with the same words."""
        key = (value, negate)
        known = self.reader.sources.get(key)
        if known is None:
            known = self.reader.sources[key] = (Source(self.addresses(word, value), negate),
                                                f"{'! ' if negate else ''}-s {value}")
        self.sources.append(known[0])
        self.source_text.append(known[1])

    def option(self, word: str, args: list[str], negate: bool) -> None:  # noqa: C901 - a flat table
        """Every option but those :meth:`parse` handles itself."""
        value = args[0] if args else ""
        bang = "! " if negate else ""
        if word in ("-j", "--jump", "-g", "--goto"):
            self.target, self.goto = value, word in ("-g", "--goto")
        elif word == "--ctorigdst":
            self.entry_option(OrigDst(self.addresses(word, value), (), negate))
        elif word == "--ctorigdstport":
            self.entry_option(OrigDst(None, self.ports(word, value), negate))
        elif word == "--ctreplsrc":  # REPLY_SOURCE: where a first packet is headed now, DNAT applied
            self.entry_option(DAddr(self.addresses(word, value), negate, ct=ENTRY))
        elif word == "--ctreplsrcport":
            self.entry_option(DPort(self.ports(word, value), negate, ct=ENTRY))
        elif word == "--ctproto":
            self.entry_option(Proto(frozenset({PROTOCOL_NUMBERS.get(value, value.lower())}), negate, ct=ENTRY))
        elif word == "--ctstatus":
            self.entry_option(CtState(frozenset(s.lower() for s in value.split(",")), negate, ct=ENTRY))
        elif word == "--src-range":
            self.sources.append(Source(self.addresses(word, value), negate))
            self.source_text.append(f"{bang}--src-range {value}")
        elif word == "--dst-range":
            self.conds.append(DAddr(self.addresses(word, value), negate))
        elif word == "--match-set":
            self.match_set(value, args[1] if len(args) > 1 else "", negate)
        elif word == "--syn":  # --tcp-flags FIN,SYN,RST,ACK SYN
            self.conds.append(TcpFlags(frozenset({"fin", "syn", "rst", "ack"}), frozenset({"syn"}), negate))
        elif word == "--tcp-flags" and len(args) == 2:
            names = [frozenset() if a == "NONE" else TCP_FLAGS if a == "ALL" else frozenset(a.lower().split(","))
                     for a in args]
            self.conds.append(TcpFlags(names[0], names[1], negate))
        elif word in ("-f", "--fragment"):  # never the first packet of a connection
            self.conds.append(Always(not negate))
        elif word in ("--to-destination", "--to-source"):
            self.to_addr, self.to_port = self.destination(value)
            self.detail = value
        elif word == "--to-ports":
            self.to_port = self.port(word, value.split("-")[0])
            self.detail = value
        elif word == "--reject-with":
            self.detail = value
        elif self.target:
            return  # an option of the target (--log-prefix, --reject-with, --set-xmark, ...)
        elif word.startswith("-"):
            self.conds.append(Unknown(f"{'-m ' + self.module + ' ' if self.module else ''}{bang}{word} "
                                      f"{' '.join(args)}".strip()))
        else:
            raise self.error("rule", f"unexpected word {word!r}")

    def pure(self, word: str, value: str, negate: bool) -> Cond:
        """The condition of an option whose meaning lies in its words alone (see _PURE)."""
        if word in ("-d", "--destination", "--dst"):
            return DAddr(self.addresses(word, value), negate)
        if word in ("-p", "--protocol"):
            return Proto(frozenset({PROTOCOL_NUMBERS.get(value, value.lower())}), negate)
        if word in ("-i", "--in-interface", "-o", "--out-interface"):
            return Iface("in" if word in ("-i", "--in-interface") else "out", value, negate)
        if word in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            return DPort(self.ports(word, value), negate)
        if word in ("--sport", "--source-port", "--sports", "--source-ports"):
            return SPort(self.ports(word, value), negate)
        if word in ("--ctstate", "--state"):
            return CtState(frozenset(s.lower() for s in value.split(",")), negate)
        return DstLocal(negate) if value == "LOCAL" else Unknown(f"--dst-type {value}", negate)  # --dst-type

    def entry_option(self, cond) -> None:
        """An option of `-m conntrack` read from the connection's entry."""
        self.entry_options.append(len(self.conds))
        self.conds.append(cond)

    def end_match(self) -> None:
        """Without an entry (before conntrack), xt_conntrack decides on its state option alone when it
        has one, not looking at the others: those become BESIDE_STATE (docs/facts.md#packet-tracing-explain)."""
        if self.with_state:
            for position in self.entry_options:
                self.conds[position] = replace(self.conds[position], ct=BESIDE_STATE)
        self.entry_options, self.with_state = [], False

    def match_set(self, name: str, flags: str, negate: bool) -> None:
        direction = flags.split(",")[0] if flags else ""
        bang = "! " if negate else ""
        self.reader.named = self.reader.named or direction in ("src", "dst")
        if direction == "src" and "," not in flags:
            self.sources.append(Source(None, negate, name))
            self.source_text.append(f"{bang}--match-set {name} src")
        elif direction == "dst" and "," not in flags:
            self.conds.append(DAddr(None, negate, name))
        else:
            self.conds.append(Unknown(f"--match-set {name} {flags}", negate))

    def port(self, option: str, value: str) -> int:
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 65536:
            raise self.error(option, f"{value!r} is not a port")
        return int(value)

    def destination(self, value: str) -> tuple[IPAddress | None, int | None]:
        host, port = value, None
        if value.startswith("["):
            host, _, rest = value[1:].partition("]")
            port = self.port("--to-destination", rest[1:].split("-")[0]) if rest.startswith(":") else None
        elif value.count(":") == 1:
            host, _, raw = value.partition(":")
            port = self.port("--to-destination", raw.split("-")[0]) if raw else None
        host = host.split("-")[0]
        if not host:
            return None, port
        try:
            version, first, last = parse_token(host, strict=False)
        except ValueError:
            raise self.error("--to-destination", f"{value!r} is not an address[:port]") from None
        if first != last:  # a network is not an address
            raise self.error("--to-destination", f"{value!r} is not an address[:port]")
        return IPAddress(first, version), port


def read_ruleset(text: str, file: str, lazy: bool = False) -> Ruleset:
    """The model of one dump. `lazy`: rules of the canonical shape are read whole when first used
    (_DeferredRule; errors are still found here; until then such a rule keeps the reader, a cycle
    the collector frees with the model). Reading allocates ~10 objects a rule and makes no other
    cycles, so the cyclic garbage collector is paused meanwhile: its passes would find nothing."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Reader(text, file, lazy).read()
    finally:
        if enabled:
            gc.enable()

