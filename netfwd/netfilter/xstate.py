"""netfwd's owned iptables state as data, shared by the `iptables` (restore) and `libiptc` backends.

Owned = the cluster's chains (``NETFWD-<tag>-*``, netfwd.owned) in the nat and filter tables, their
rules, and the plain jumps (``-A <built-in> -j NETFWD-<tag>-*``) into them; nothing else. The global
chains of earlier versions (``NETFWD-PRE`` ...) count as the cluster's while no other cluster's
rule is in them, so the next transaction of that cluster removes them. Other clusters' chains are
read only to find listen-port clashes (:func:`split`). The canonical text is restore-payload
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
from typing import NamedTuple

from netfwd import owned as names
from netfwd import xtables
from netfwd.model import Spec

TABLES = ("nat", "filter")
PREFIX = names.CHAIN_PREFIX  # every cluster's chains (and the global ones of earlier versions)
_JUMP_RE = re.compile(r"^-A ([A-Z]+) -j (NETFWD-[A-Za-z0-9_-]+)$")
_COUNTED_RE = re.compile(r"^\[(\d+):(\d+)\] (.*)$")
JUMP_ORDER = {(xtables.TABLE_OF[k], xtables.BUILTIN_OF[k]): i for i, k in enumerate(xtables.TABLE_OF)}
LEGACY = frozenset(names.LEGACY_CHAINS.values())


class Claim(NamedTuple):
    """A listen socket another cluster's DNAT rule takes (for clash checks)."""

    cluster: str
    forward: str
    listen_address: str | None
    port: int
    protocol: str


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


def parse(text: str, cluster: str | None = None) -> tuple[Owned, dict[str, tuple[int, int]]]:
    """The cluster's owned state (and its per-tag DNAT counters) from `iptables-save [-c]` output or
    canonical text; `cluster` None = every NETFWD-* chain (what :func:`split` divides)."""
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
            if chain.endswith("-PRE"):
                tag = _comment(line)
                if tag:
                    old = counters.get(tag, (0, 0))
                    counters[tag] = (old[0] + packets, old[1] + octets)
        elif _JUMP_RE.match(line):
            table.jumps.append(line)
    for part in owned.values():  # rules of a chain that is not declared cannot exist; keep it tidy
        for chain in list(part.rules):
            if chain not in part.chains:
                del part.rules[chain]
    if cluster is None:
        return owned, counters
    mine, _ = split(owned, cluster)
    prefix = names.comment_prefix(cluster)
    return mine, {tag: value for tag, value in counters.items() if tag.startswith(prefix)}


def split(every: Owned, cluster: str) -> tuple[Owned, list[Claim]]:
    """Every NETFWD-* chain -> (the cluster's owned state, the listen sockets of other clusters).

    The global chains of earlier versions are the cluster's unless another cluster's rule is in
    them (then they are that cluster's, and only read)."""
    prefix = names.chain_prefix(cluster)
    comments = names.comment_prefix(cluster)
    legacy_foreign = any(
        (tag := _comment(line)) and names.cluster_of_comment(tag) not in (None, cluster)
        for part in every.values() for chain in part.chains if chain in LEGACY for line in part.rules.get(chain, ()))
    mine: Owned = {}
    claims: list[Claim] = []

    def ours(chain: str) -> bool:
        return chain.startswith(prefix) or (chain in LEGACY and not legacy_foreign)

    for table, part in every.items():
        kept = mine.setdefault(table, Table())
        for chain in part.chains:
            if ours(chain):
                kept.chains.append(chain)
                kept.rules[chain] = part.rules.get(chain, [])
            elif xtables.kind(chain) == "PRE":
                claims += _claims(part.rules.get(chain, ()), comments)
        kept.jumps = [line for line in part.jumps if ours(line.rsplit(" ", 1)[1])]
    return mine, claims


def _claims(lines, mine: str) -> list[Claim]:
    found = []
    for line in lines:
        tag = _comment(line)
        cluster = names.cluster_of_comment(tag or "")
        if cluster is None or tag.startswith(mine):  # type: ignore[union-attr]
            continue
        from netfwd.firewall.iptables_save import options, words

        opts = options(words(line)[2:])
        if "--dport" in opts and "-p" in opts:
            listen = opts.get("-d")
            found.append(Claim(cluster, tag.split("/", 1)[1], None if listen is None else listen.removesuffix("/32"),  # type: ignore[union-attr]
                               int(opts["--dport"]), opts["-p"]))
    return found


def _comment(line: str) -> str | None:
    at = line.find('--comment "')
    if at < 0:
        return None
    end = line.find('"', at + 11)
    return line[at + 11:end] if end > 0 else None


def desired(spec: Spec) -> Owned:
    owned: Owned = {table: Table(chains=list(chains), rules={c: [] for c in chains})
                    for table, chains in xtables.chains(spec.cluster).items()}
    for table, builtin, chain in xtables.jumps(spec.cluster):
        owned[table].jumps.append(f"-A {builtin} -j {chain}")
    lines = xtables.spelled(spec).chains
    for part in owned.values():
        for chain in part.chains:
            part.rules[chain] = list(lines[chain])
    return owned


def transaction(live: Owned, target: Owned) -> list[tuple[str, list[str]]]:
    """[(table, payload lines)] that turn `live` into `target`; tables already equal are left out.
    The table slowest to parse comes first: a restore commits table by table, and a failure in the
    first table commits nothing, so only the tables after it need the `--test` that runs while the
    restore parses the first one (netfwd/backends/iptables.py) - hidden if it is the quicker one."""
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
    parts.sort(key=lambda part: -parse_cost(part[1]))
    return parts


# conntrack's port options (--ctorigdstport, --ctreplsrcport, ...) are parsed by xtables'
# option parser with getaddrinfo(NULL, port) - a service lookup with its sockets and netlink
# round trips - where other matches parse numbers directly (docs/facts.md#iptables-backends,
# "iptables-restore parse cost"): such a line costs about as much as ten plain ones.
_PORT_LOOKUPS = tuple(f" --ct{way}{end}port " for way in ("orig", "repl") for end in ("src", "dst"))


def parse_cost(lines: list[str]) -> int:
    """A restore's parse time of `lines`, in plain lines."""
    text = "\n".join(lines)
    return len(lines) + 9 * sum(text.count(option) for option in _PORT_LOOKUPS)


def payload(parts: list[tuple[str, list[str]]]) -> str:
    out: list[str] = []
    for table, lines in parts:
        out.append(f"*{table}")
        out += lines
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


def boot_payload(target: Owned) -> str:
    """What the cluster's boot unit feeds `iptables-restore --noflush`: its chains, rules and jumps
    (inserted first, as apply does), built from nothing - never another chain, never a flush."""
    return payload(transaction({}, target))


@xtables.per_spec
def spec_boot_payload(spec: Spec) -> str:
    """boot_payload of the spec's desired state (both iptables dialects embed it)."""
    return boot_payload(desired(spec))


def tag(line: str) -> str | None:
    """The forward a line belongs to (its netfwd comment), None for shared objects (jumps, replies)."""
    at = line.find('--comment "')  # _comment(line), inline: a plan asks this of every line that differs
    if at < 0:
        return None
    end = line.find('"', at + 11)
    found = line[at + 11:end] if end > 0 else None
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
