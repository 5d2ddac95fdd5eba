"""netfwd's owned iptables state as data, shared by the `iptables` (restore) and `libiptc` backends.

Owned = every chain named ``NETFWD-*`` in the nat and filter tables, its rules, and the plain jumps
(``-A <built-in> -j NETFWD-*``) into them; nothing else. The canonical text is restore-payload
shaped and spelled as `iptables-save` prints it (netfwd.xtables guarantees the spelling), so the
desired state, the live state and a snapshot compare line by line:

    *nat
    :NETFWD-OUT - [0:0]            owned chains, sorted
    -A PREROUTING -j NETFWD-PRE    jumps (one line per jump found: duplicates show)
    -A NETFWD-PRE ...              owned rules, chain by chain, in chain order
    COMMIT

:func:`transaction` turns (live, target) into ONE `iptables-restore --noflush` payload that touches
only what differs: declaring a chain flushes it, jumps are deleted or inserted individually, and
built-in chains are never flushed, so foreign rules stay exactly where they are.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from netfwd import xtables
from netfwd.model import Essence, Spec

TABLES = ("nat", "filter")
PREFIX = "NETFWD-"
_JUMP_RE = re.compile(r"^-A ([A-Z]+) -j (NETFWD-[A-Za-z0-9_-]+)$")
_COUNTED_RE = re.compile(r"^\[(\d+):(\d+)\] (.*)$")
JUMP_ORDER = {(t, b): i for i, (t, b, _) in enumerate(xtables.JUMPS)}


@dataclass
class Table:
    chains: list[str] = field(default_factory=list)  # owned chains present
    jumps: list[str] = field(default_factory=list)  # "-A PREROUTING -j NETFWD-PRE" lines
    rules: dict[str, list[str]] = field(default_factory=dict)  # owned chain -> "-A CHAIN ..." lines

    def empty(self) -> bool:
        return not (self.chains or self.jumps or any(self.rules.values()))

    def lines(self, table: str) -> list[str]:
        out = [f":{chain} - [0:0]" for chain in sorted(self.chains)]
        out += sorted(self.jumps, key=lambda line: _jump_key(table, line))
        for chain in sorted(self.chains):
            out += self.rules.get(chain, [])
        return out


def _jump_key(table: str, line: str) -> tuple[int, str]:
    match = _JUMP_RE.match(line)
    return (JUMP_ORDER.get((table, match[1]), 99) if match else 99, line)


Owned = dict[str, Table]


def canonical(owned: Owned) -> str:
    out: list[str] = []
    for table in TABLES:
        part = owned.get(table)
        if part is None or part.empty():
            continue
        out += [f"*{table}", *part.lines(table), "COMMIT"]
    return "\n".join(out) + "\n" if out else ""


def parse(text: str) -> tuple[Owned, dict[str, tuple[int, int]]]:
    """Owned state (and per-tag DNAT counters) from `iptables-save [-c]` output or canonical text."""
    owned: Owned = {}
    counters: dict[str, tuple[int, int]] = {}
    table: Table | None = None
    for raw in text.splitlines():
        if not raw or raw[0] == "#":
            continue
        if raw[0] == "*":
            name = raw[1:].strip()
            table = owned.setdefault(name, Table()) if name in TABLES else None
            continue
        if table is None:
            continue
        if raw[0] == ":":
            chain = raw[1:].split(" ", 1)[0]
            if chain.startswith(PREFIX):
                table.chains.append(chain)
                table.rules.setdefault(chain, [])
            continue
        line, packets, octets = raw, 0, 0
        if raw[0] == "[":
            match = _COUNTED_RE.match(raw)
            if match is None:
                continue
            packets, octets, line = int(match[1]), int(match[2]), match[3]
        if not line.startswith("-A "):
            continue
        chain = line[3:].split(" ", 1)[0]
        if chain.startswith(PREFIX):
            table.rules.setdefault(chain, []).append(line)
            if packets or octets or chain == xtables.PRE:
                tag = _comment(line)
                if tag and chain == xtables.PRE:
                    old = counters.get(tag, (0, 0))
                    counters[tag] = (old[0] + packets, old[1] + octets)
        elif _JUMP_RE.match(line):
            table.jumps.append(line)
    for part in owned.values():  # rules of a chain that is not declared cannot exist; keep it tidy
        for chain in list(part.rules):
            if chain not in part.chains:
                del part.rules[chain]
    return owned, counters


def _comment(line: str) -> str | None:
    at = line.find('--comment "')
    if at < 0:
        return None
    end = line.find('"', at + 11)
    return line[at + 11:end] if end > 0 else None


def desired(spec: Spec) -> Owned:
    owned: Owned = {table: Table(chains=list(chains), rules={c: [] for c in chains})
                    for table, chains in xtables.CHAINS.items()}
    for table, builtin, chain in xtables.JUMPS:
        owned[table].jumps.append(f"-A {builtin} -j {chain}")
    for rule in xtables.ruleset(spec):
        owned[rule.table].rules[rule.chain].append(rule.save_line())
    return owned


def transaction(live: Owned, target: Owned) -> list[tuple[str, list[str]]]:
    """[(table, payload lines)] that turn `live` into `target`; tables already equal are left out.
    Larger tables come first: a restore commits table by table, and a failure in the first table
    commits nothing, so only the tables after it need a `--test` run beforehand."""
    parts: list[tuple[str, list[str]]] = []
    for table in TABLES:
        old, new = live.get(table, Table()), target.get(table, Table())
        if old.lines(table) == new.lines(table):
            continue
        lines: list[str] = []
        have, want = Counter(old.jumps), Counter(new.jumps)
        for jump, count in (have - want).items():  # jumps first, so their chains can go
            lines += [jump.replace("-A ", "-D ", 1)] * count
        gone = [c for c in old.chains if c not in new.chains]
        changed = [c for c in new.chains if c not in old.chains or old.rules.get(c, []) != new.rules.get(c, [])]
        lines += [f":{chain} - [0:0]" for chain in sorted(changed + gone)]  # declare = create or flush
        for jump, count in (want - have).items():
            builtin, chain = _JUMP_RE.match(jump).groups()  # type: ignore[union-attr]
            lines += [f"-I {builtin} 1 -j {chain}"] * count
        for chain in sorted(changed):
            lines += new.rules.get(chain, [])
        lines += [f"-X {chain}" for chain in sorted(gone)]
        parts.append((table, lines))
    parts.sort(key=lambda part: -len(part[1]))
    return parts


def payload(parts: list[tuple[str, list[str]]]) -> str:
    return "".join(f"*{table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n" for table, lines in parts)


def tag(line: str) -> str | None:
    """The forward a line belongs to (its netfwd comment), None for shared objects (jumps, replies)."""
    found = _comment(line)
    return found if found and found != xtables.REPLIES_COMMENT else None


def focus(text: str, tags: set[str]) -> str:
    """Only the lines of the forwards tagged `tags`: explaining one changed forward out of 10,000
    then parses a handful of lines, not 35,000."""
    return "\n".join(line for line in text.splitlines() if _comment(line) in tags)


def args_of(line: str) -> tuple[str, list[str]]:
    """`-A CHAIN ARGS...` -> (CHAIN, ARGS) with the comment unquoted (for libiptc)."""
    from netfwd.firewall.iptables_save import words

    split = words(line)
    return split[1], split[2:]
