"""`netsh advfirewall firewall show rule name=... verbose` output (one or more rules).

Windows Firewall semantics: a block rule beats any allow rule; otherwise a connection is
admitted when an enabled inbound allow rule matches it. So admitted = union(allow) - union(block),
per local port. Keyword addresses (LocalSubnet, DefaultGateway, ...) depend on the host and are
reported as `unevaluated` instead of guessed. Only the English field names are read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from netaddr import IPSet

from netfwd.errors import InputError
from netfwd.firewall.addresses import parse_token, to_cidrs
from netfwd.whitelist.model import Finding, Group, Origin, Parsed, entries_from_ipset
from netfwd.firewall.model import UNIVERSE

EVERYONE = UNIVERSE[4] | UNIVERSE[6]
_FIELD = re.compile(r"^([A-Za-z][A-Za-z ]*?):\s*(.*)$")


@dataclass
class NetshRule:
    name: str
    line: int
    fields: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.fields.get(key.lower(), default)


def split_rules(text: str, file: str) -> list[NetshRule]:
    rules: list[NetshRule] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or set(line) == {"-"} or line.lower().rstrip(".") == "ok":
            continue
        match = _FIELD.match(line)
        if not match:
            if line.lower().startswith("no rules match"):
                continue
            raise InputError(f"not a `netsh advfirewall firewall show rule` line: {line[:60]!r}", file=file,
                             line=number, field="rule")
        key, value = match.group(1).strip().lower(), match.group(2).strip()
        if key == "rule name":
            rules.append(NetshRule(value, number))
        elif rules:
            rules[-1].fields[key] = value
    return rules


def addresses(value: str, rule: NetshRule, file: str) -> IPSet | str:
    """The RemoteIP field -> IPSet, or the keyword that cannot be evaluated."""
    if value.lower() == "any":
        return EVERYONE
    nets = []
    for token in filter(None, (t.strip() for t in value.split(","))):
        if token[0].isalpha() and ":" not in token:
            return token  # LocalSubnet, DNS, DHCP, WINS, DefaultGateway, Intranet, Internet, ...
        try:
            version, first, last = parse_token(token, strict=False)
        except ValueError as problem:
            raise InputError(str(problem), file=file, line=rule.line, field=f"{rule.name}: RemoteIP") from None
        nets += to_cidrs(version, first, last)
    return IPSet(nets)


def local_ports(value: str) -> list[tuple[int, int]] | None:
    """None means any port; RPC and other keywords match nothing we verify."""
    if value.lower() == "any":
        return None
    out = []
    for part in value.split(","):
        low, _, high = part.strip().partition("-")
        if low.isascii() and low.isdigit():  # not '²', which isdigit() but int() refuses
            out.append((int(low), int(high) if high.isascii() and high.isdigit() else int(low)))
    return out


def parse(text: str, file: str, context) -> Parsed:
    rules = split_rules(text, file)
    if not rules:
        raise InputError("no `Rule Name:` found", file=file, field="rule")
    live: list[tuple[NetshRule, str, IPSet | str, list | None, Origin]] = []
    for rule in rules:
        if rule.get("enabled").lower() != "yes" or rule.get("direction").lower() != "in":
            continue
        if rule.get("protocol", "any").lower() not in ("any", context.protocol):
            continue
        action = rule.get("action").lower()
        if action in ("allow", "block"):
            live.append((rule, action, addresses(rule.get("remoteip", "Any"), rule, file),
                         local_ports(rule.get("localport", "Any")), Origin(file, rule.line, f"Rule Name: {rule.name}")))
    wanted = [context.port] if context.port else sorted(
        {low for _, action, _, ports, _ in live if action == "allow" for low, _ in ports or []})
    groups, notes = [], {}
    for port in wanted:
        hits = [item for item in live if _hits(item[3], port)]
        block = IPSet()
        for rule, action, remote, _, origin in hits:
            if isinstance(remote, str):
                notes[origin] = Finding("unevaluated", "warning", f"RemoteIP keyword {remote!r} depends on the "
                                        f"host; this {action} rule is not counted", origin)
            elif action == "block":
                block |= remote
        entries = [e for rule, action, remote, _, origin in hits if action == "allow" and not isinstance(remote, str)
                   for e in entries_from_ipset(remote - block, f"RemoteIP {rule.get('remoteip')}", origin)]
        groups.append(Group(f"{context.protocol}/{port}", tuple(entries), context.protocol, port))
    return Parsed("netsh", file, tuple(groups), tuple(notes.values()))


def _hits(ports: list[tuple[int, int]] | None, port: int | None) -> bool:
    return ports is None or port is None or any(low <= port <= high for low, high in ports)
