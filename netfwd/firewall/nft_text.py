"""The one reader of `nft list ruleset` text: parsed into the objects `nft -j` would print,
then read by `nft_json` (one converter, two syntaxes; tests check both agree).

Covers what `nft list` prints for tables, sets (with multi-line element lists), base and regular
chains, and the statements that decide admission. Blocks it does not model (maps, flowtables,
named counters) are skipped; unknown statements make their rule `unevaluated`, never guessed.
"""

from __future__ import annotations

import re

from netfwd.errors import InputError
from netfwd.firewall.addresses import digits
from netfwd.firewall.model import Ruleset
from netfwd.firewall.nft_json import build

_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|!=|==|[{},;]|[^\s{},;]+')
PRIORITIES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100,
              "out": 100, "in": -150}  # `out`/`in`: bridge-family names, harmless here
PAYLOAD = {"ip": ("saddr", "daddr", "protocol"), "ip6": ("saddr", "daddr", "nexthdr"),
           "tcp": ("dport", "sport", "flags"), "udp": ("dport", "sport"), "sctp": ("dport", "sport"),
           "dccp": ("dport", "sport"), "udplite": ("dport", "sport"), "th": ("dport", "sport")}
META = ("l4proto", "nfproto", "iifname", "oifname", "iif", "oif", "mark", "skuid", "skgid", "pkttype")
STOP = {"counter", "log", "limit", "comment", "accept", "drop", "reject", "return", "continue", "jump", "goto",
        "queue", "dnat", "snat", "masquerade", "redirect", "ip", "ip6", "tcp", "udp", "th", "sctp", "meta", "ct",
        "fib", "iifname", "oifname", "iif", "oif", "notrack", "quota"}


def tokens(line: str) -> list[str]:
    return _TOKEN.findall(line)


def _scalar(word: str):
    word = word.strip('"')
    if digits(word):
        return int(word)
    if "/" in word and not word.startswith("@"):
        addr, _, length = word.partition("/")
        if digits(length):
            return {"prefix": {"addr": addr, "len": int(length)}}
    if "-" in word and not word.startswith(("@", "-")) and word.count("-") == 1:
        low, _, high = word.partition("-")
        return {"range": [_scalar(low), _scalar(high)]}
    return word


class _Incomplete(Exception):
    """A statement that ends before its value (a truncated line)."""


class _Rule:
    """One rule line -> the `expr` list `nft -j` would print."""

    def __init__(self, words: list[str]) -> None:
        self.words, self.i = words, 0
        self.expr: list[dict] = []
        self.comment = ""

    def peek(self, offset: int = 0) -> str | None:
        index = self.i + offset
        return self.words[index] if index < len(self.words) else None

    def take(self) -> str:
        if self.i >= len(self.words):
            raise _Incomplete
        word = self.words[self.i]
        self.i += 1
        return word

    def value(self):
        """A right-hand side: a word, or `{ a, b, ... }` (an anonymous set)."""
        if self.peek() == "{":
            self.take()
            items = []
            while self.peek() not in (None, "}"):
                word = self.take()
                if word != ",":
                    items.append(_scalar(word))
            if self.peek() == "}":
                self.take()
            return {"set": items}
        return _scalar(self.take())

    def verdict_map(self) -> list:
        items: list = []
        if self.peek() != "{":
            return items
        self.take()
        while self.peek() not in (None, "}"):
            key = self.take()
            if key == ",":
                continue
            if self.peek() == ":":
                self.take()
            verdict = self.take() if self.peek() not in (None, "}") else "continue"
            body = {"target": self.take()} if verdict in ("jump", "goto") and self.peek() else None
            items.append([_scalar(key), {verdict: body}])
        if self.peek() == "}":
            self.take()
        return items

    def values(self):
        """A comma list without braces (`ct state established,related`: the tokenizer splits the commas)."""
        if self.peek() == "{":
            return self.value()
        items = [_scalar(self.take())]
        while self.peek() == "," and self.peek(1) not in (None, "{", "}"):
            self.take()
            items.append(_scalar(self.take()))
        return items if len(items) > 1 else items[0]

    def match(self, left: dict, *, multi: bool = False) -> None:
        if self.peek() == "vmap":  # KEY vmap { k : verdict, ... }
            self.take()
            self.expr.append({"vmap": {"key": left, "data": {"set": self.verdict_map()}}})
            return
        op = "=="
        if self.peek() in ("!=", "=="):
            op = self.take()
        right = self.values() if multi else self.value()
        if op == "==" and multi:
            op = "in"
        self.expr.append({"match": {"op": op, "left": left, "right": right}})

    def parse(self) -> tuple[list[dict], str]:
        try:
            self._statements()
        except _Incomplete:
            self.expr.append({"unknown": "an incomplete statement"})
        return self.expr, self.comment

    def _statements(self) -> None:  # noqa: C901 - one branch per statement keyword
        while self.peek() is not None:
            word = self.take()
            nxt = self.peek()
            if word in ("meta", "ct") and self.peek(1) == "set":  # a statement (meta mark set ...)
                self.i += 3
                self.expr.append({"mangle": None})
            elif word in PAYLOAD and nxt in PAYLOAD[word]:
                self.match({"payload": {"protocol": word, "field": self.take()}})
            elif word == "meta" and nxt in META:
                self.match({"meta": {"key": self.take()}})
            elif word in ("iifname", "oifname", "iif", "oif"):
                self.match({"meta": {"key": word}})
            elif word == "ct" and nxt in ("state", "status"):
                self.match({"ct": {"key": self.take()}}, multi=True)
            elif word == "ct" and nxt in ("original", "reply"):  # ct original|reply [ip|ip6] KEY
                direction = self.take()
                family = self.take() if self.peek() in ("ip", "ip6") else None
                self.match({"ct": {"key": self.take(), "dir": direction, **({"family": family} if family else {})}})
            elif word == "fib":
                flags = []
                while self.peek() not in (None, "type", "oif", "oifname"):
                    part = self.take()
                    if part != ".":
                        flags.append(part)
                result = self.take() if self.peek() else "type"
                self.match({"fib": {"result": result, "flags": flags}})
            elif word == "counter":
                while self.peek() in ("packets", "bytes"):
                    self.i += 2
                self.expr.append({"counter": None})
            elif word == "log":
                while self.peek() not in (None,) and self.peek() not in STOP:
                    self.take()
                self.expr.append({"log": None})
            elif word == "comment":
                self.comment = self.take().strip('"')
            elif word in ("accept", "drop", "return", "continue"):
                self.expr.append({word: None})
            elif word == "reject":
                how = []
                if self.peek() == "with":  # with tcp reset | with icmp[x|v6] [type|code] NAME
                    how.append(self.take())
                    kind = self.take()
                    how.append(kind)
                    if kind == "tcp" and self.peek() == "reset":
                        how.append(self.take())
                    elif self.peek() is not None:
                        if self.peek() in ("type", "code"):
                            self.take()
                        if self.peek() is not None and self.peek() not in STOP:
                            how.append(self.take())
                self.expr.append({"reject": _reject(how)})
            elif word in ("jump", "goto"):
                self.expr.append({word: {"target": self.take()}})
            elif word in ("dnat", "snat"):
                family = self.take() if self.peek() in ("ip", "ip6") else None
                if self.peek() == "to":
                    self.take()
                body = _nat_target(self.take() if self.peek() else "")
                if family:
                    body["family"] = family
                self.expr.append({word: body})
            elif word == "redirect":
                body = {}
                if self.peek() == "to":
                    self.take()
                    target = self.take()
                    body = {"port": int(target.lstrip(":"))} if digits(target.lstrip(":")) else {"port": target}
                self.expr.append({"redirect": body or None})
            elif word == "masquerade":
                body = {}
                if self.peek() == "to":
                    self.take()
                    target = self.take().lstrip(":")
                    body = {"port": int(target) if digits(target) else target}
                self.expr.append({"masquerade": body or None})
            elif word == "notrack":
                self.expr.append({"notrack": None})
            else:  # limit, quota, meta mark set, maps...: record what could not be read, keep the verdict
                what = [word]
                while self.peek() is not None and self.peek() not in STOP:
                    what.append(self.take())
                self.expr.append({"unknown": " ".join(what)[:60]})


def _reject(words: list[str]) -> dict | None:
    """`with tcp reset` / `with icmp type host-unreachable` / `with icmpx admin-prohibited` -> nft -j's body."""
    words = [w for w in words if w not in ("with", "type", "code")]
    if not words:
        return None
    if words[0] == "tcp":
        return {"type": "tcp reset"}
    return {"type": words[0], **({"expr": words[1]} if len(words) > 1 else {})}


def _nat_target(text: str) -> dict:
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        return {"addr": addr, **({"port": int(rest[1:])} if digits(rest[1:]) else {})}
    if text.startswith(":"):
        return {"port": int(text[1:])} if digits(text[1:]) else {"port": text[1:]}
    if text.count(":") == 1:
        addr, _, port = text.partition(":")
        return {"addr": addr, **({"port": int(port)} if digits(port) else {"port": port})}
    return {"addr": text} if text else {}


def _priority(words: list[str]) -> int:
    total, sign = 0, 1
    for word in words:
        if word in ("+", "-"):
            sign = 1 if word == "+" else -1
        elif digits(word.lstrip("-")):
            total += sign * int(word)
        elif word in PRIORITIES:
            total += sign * PRIORITIES[word]
    return total


def _logical_lines(text: str):
    """(first line number, text) with multi-line element lists joined into one."""
    buffer: list[str] = []
    start, depth = 0, 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0] if not raw.lstrip().startswith("comment") else raw
        if not buffer:
            start = number
        buffer.append(line.strip())
        if "elements" in buffer[0] and "=" in buffer[0]:
            depth = " ".join(buffer).count("{") - " ".join(buffer).count("}")
            if depth > 0:
                continue
        yield start, " ".join(buffer)
        buffer = []
    if buffer:
        yield start, " ".join(buffer)


def to_objects(text: str, file: str) -> tuple[list[dict], dict[tuple, int]]:
    """Text -> (`nft -j` objects, line of each chain and rule)."""
    objects: list[dict] = []
    lines: dict[tuple, int] = {}
    table: tuple[str, str] | None = None
    block: tuple[str, str] | None = None  # ("chain"|"set"|"skip", name)
    skip_depth = 0
    current: dict = {}
    for number, line in _logical_lines(text):
        if not line:
            continue
        words = tokens(line)
        if skip_depth:
            skip_depth += words.count("{") - words.count("}")
            continue
        if table is None:
            if words[:1] in (["delete"], ["flush"]) or (words[:1] == ["table"] and words[-2:] == ["{", "}"]):
                continue  # the create-delete-recreate preamble of an `nft -f` file (netfwd renders one)
            if words[:1] == ["table"] and len(words) >= 4 and words[-1] == "{":
                table = (words[1], words[2])
                continue
            raise InputError(f"expected `table FAMILY NAME {{`, found {line[:60]!r}", file=file, line=number,
                             field="table")
        if block is None:
            if words == ["}"]:
                table = None
            elif words[0] in ("chain", "set") and words[-1] == "{":
                block = (words[0], words[1])
                current = {"family": table[0], "table": table[1], "name": words[1]}
                if words[0] == "chain":
                    lines[("chain", table[0], table[1], words[1])] = number
                    current["_rules"] = []
            elif words[-1] == "{":
                skip_depth = 1  # map, flowtable, counter, quota, ct helper, ...
            continue
        if words == ["}"]:
            if block[0] == "set":
                objects.append({"set": {k: v for k, v in current.items()}})
            else:
                rules = current.pop("_rules")
                objects.append({"chain": current})
                for index, (rule_line, expr, comment, raw) in enumerate(rules):
                    lines[("rule", table[0], table[1], current["name"], index)] = rule_line
                    rule = {"family": table[0], "table": table[1], "chain": current["name"], "expr": expr,
                            "_text": raw}
                    if comment:
                        rule["comment"] = comment
                    objects.append({"rule": rule})
            block = None
            continue
        if block[0] == "set" or (words[0] in ("type", "policy") and not current.get("_rules")):
            try:
                _set_line(current, words) if block[0] == "set" else _chain_header(current, words)
            except (IndexError, ValueError):
                raise InputError(f"cannot read {line[:60]!r}", file=file, line=number, field=block[0]) from None
        else:
            expr, comment = _Rule(words).parse()
            current["_rules"].append((number, expr, comment, line))
    if table is not None or block is not None:
        raise InputError("ends inside a table or chain (missing `}`)", file=file, field="table")
    return objects, lines


def _set_line(current: dict, words: list[str]) -> None:
    if words[0] == "type":
        current["type"] = words[1]
    elif words[0] == "flags":
        current["flags"] = [w for w in words[1:] if w != ","]
    elif words[0] == "elements":
        inner = words[words.index("{") + 1:] if "{" in words else []
        current["elem"] = [_scalar(w) for w in inner if w not in (",", "}", "{")]


def _chain_header(current: dict, words: list[str]) -> None:
    """`type nat hook prerouting priority dstnat; policy accept;` (or just `policy drop;`)."""
    if words[0] == "policy":
        current["policy"] = words[1].rstrip(";")
        return
    current["type"] = words[1]
    current["hook"] = words[words.index("hook") + 1]
    if "priority" in words:
        start = words.index("priority") + 1
        end = words.index(";", start) if ";" in words[start:] else len(words)
        current["prio"] = _priority(words[start:end])
    if "policy" in words:
        current["policy"] = words[words.index("policy") + 1]
    current.setdefault("policy", "accept")



def read_text(text: str, file: str) -> Ruleset:
    """`nft list ruleset` text -> the model."""
    objects, lines = to_objects(text, file)
    try:
        return build(objects, file, lines)
    except (KeyError, TypeError, ValueError) as problem:
        raise InputError(f"cannot read this ruleset ({problem})", file=file, field="table") from None
