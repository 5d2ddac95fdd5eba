"""The iptables ruleset netfwd owns, as data: shared by the iptables dialects and the live backends.

netfwd owns four chains per cluster and one jump into each from a built-in chain (kube-proxy style);
their names come from netfwd.owned (`chains(cluster)`, `jumps(cluster)`). Rules are
spelled exactly as `iptables-save` prints them, so live state can be compared line by line.
Whitelists are `-s` rules (one DNAT rule per minimal source CIDR) rather than ipsets, so the whole
owned state is a single `iptables-restore --noflush` transaction.
"""

from __future__ import annotations

import functools
import re
import shlex
from dataclasses import dataclass
from typing import Callable, NamedTuple, TypeVar

from netfwd import owned
from netfwd.model import Essence, Forward, Spec

TABLE_OF = {"PRE": "nat", "OUT": "nat", "POST": "nat", "FWD": "filter"}
BUILTIN_OF = {"PRE": "PREROUTING", "OUT": "OUTPUT", "POST": "POSTROUTING", "FWD": "FORWARD"}
REPLIES_COMMENT = "netfwd: replies"  # the unscoped replies rule of older versions: read, never written
PROTO_NUMBERS = {"tcp": "6", "udp": "17"}  # `--ctproto` as iptables-save prints it


def chains(cluster: str) -> dict[str, tuple[str, ...]]:
    """{table: owned chains} of a cluster: {"nat": (PRE, OUT, POST), "filter": (FWD,)}."""
    return {"nat": tuple(owned.chain(cluster, k) for k in ("PRE", "OUT", "POST")),
            "filter": (owned.chain(cluster, "FWD"),)}


def jumps(cluster: str) -> tuple[tuple[str, str, str], ...]:
    """(table, built-in chain, owned chain): one jump each, inserted at position 1 when missing."""
    return tuple((TABLE_OF[k], BUILTIN_OF[k], owned.chain(cluster, k)) for k in ("PRE", "OUT", "POST", "FWD"))


def kind(chain_name: str) -> str | None:
    """PRE / OUT / POST / FWD of an owned chain (per-cluster or legacy), None for any other chain."""
    if not chain_name.startswith(owned.CHAIN_PREFIX):
        return None
    last = chain_name.rsplit("-", 1)[1]
    return last if last in TABLE_OF else None


@dataclass(frozen=True, slots=True)
class Rule:
    table: str
    chain: str
    args: tuple[str, ...]  # after `-A CHAIN`, in iptables-save order

    def save_line(self) -> str:
        """The rule as `iptables-save` prints it (comments double-quoted)."""
        args = self.args
        if "--comment" not in args:
            return f"-A {self.chain} " + " ".join(args)
        at = args.index("--comment") + 1
        return (f"-A {self.chain} " + " ".join(args[:at]) + f' "{args[at]}" ' + " ".join(args[at + 1:])).rstrip()

    def shell_args(self) -> str:
        """`-t TABLE -A CHAIN ARGS...` quoted for bash (fast path: validated values need no quoting)."""
        joined = " ".join(self.args)
        if len(joined.split(" ")) == len(self.args) and not _SHELL_UNSAFE.search(joined):
            return f"-t {self.table} -A {self.chain} {joined}"
        return " ".join(shlex.quote(a) for a in ("-t", self.table, "-A", self.chain, *self.args))


T = TypeVar("T")

_SHELL_UNSAFE = re.compile(r"[^\w@%+=:,./ -]", re.ASCII)


def _port_match(protocol: str, port: int) -> tuple[str, ...]:
    return ("-p", protocol, "-m", protocol, "--dport", str(port))


def forward_rules(spec: Spec, forward: Forward) -> list[Rule]:
    """Every rule one forward needs: DNAT per source, local DNAT, scoped MASQUERADE, FORWARD accept.

    A wildcard listen DNATs only packets addressed to the relay itself (`addrtype LOCAL`), so traffic
    merely routed through the relay is never captured. The FORWARD accept matches only this forward's
    own DNATed connections, both directions (conntrack: DNAT status, original destination port and
    address, reply source = the target), so every other flow is still decided by the host's own
    FORWARD rules (DOCKER-USER, KUBE-FORWARD), established ones included.
    """
    tag = ("-m", "comment", "--comment", owned.rule_comment(spec, forward.name))
    to_address = str(forward.to.address)
    target = ("-j", "DNAT", "--to-destination", f"{to_address}:{forward.to.port}")
    listen = () if forward.listen.address is None else ("-d", f"{forward.listen.address}/32")
    local_only = ("-m", "addrtype", "--dst-type", "LOCAL") if not listen else ()
    iface = () if spec.relay.interface is None else ("-i", spec.relay.interface)
    port = _port_match(forward.protocol, forward.listen.port)
    rules = []
    pre, out, post, fwd = _chains(spec.cluster)
    dnat = (*listen, *iface, *port, *local_only, *tag, *target)
    if forward.sources is None:
        rules.append(Rule("nat", pre, dnat))
    else:
        rules += [Rule("nat", pre, ("-s", str(source), *dnat)) for source in forward.sources]
    if forward.local:
        rules.append(Rule("nat", out, (*listen, *port, *local_only, *tag, *target)))
    to = ("-d", f"{to_address}/32", *_port_match(forward.protocol, forward.to.port),
          "-m", "conntrack", "--ctstate", "DNAT", *tag)
    if forward.masquerade:
        rules.append(Rule("nat", post, (*to, "-j", "MASQUERADE")))
    rules.append(Rule("filter", fwd, own_flows(forward) + (*tag, "-j", "ACCEPT")))
    return rules


@functools.lru_cache(maxsize=16)
def _chains(cluster: str) -> tuple[str, ...]:
    return tuple(owned.chain(cluster, k) for k in ("PRE", "OUT", "POST", "FWD"))


def own_flows(forward: Forward) -> tuple[str, ...]:
    """conntrack match for this forward's DNATed connections only (both directions, related ICMP too),
    spelled in `iptables-save` order."""
    orig_dst = () if forward.listen.address is None else ("--ctorigdst", str(forward.listen.address))
    return ("-m", "conntrack", "--ctstate", "DNAT", "--ctproto", PROTO_NUMBERS[forward.protocol], *orig_dst,
            "--ctreplsrc", str(forward.to.address), "--ctorigdstport", str(forward.listen.port),
            "--ctreplsrcport", str(forward.to.port))


def per_spec(build: Callable[[Spec], T]) -> Callable[[Spec], T]:
    """Keep the last result of `build` (specs are immutable): both iptables dialects, the live
    backends and `render --dialect all` ask for the same spec's rules, lines and payloads in a row."""
    last: list = [None, None]

    @functools.wraps(build)
    def cached(spec: Spec) -> T:
        if last[0] is not spec:
            last[:] = [spec, build(spec)]
        return last[1]
    return cached


@per_spec
def ruleset(spec: Spec) -> list[Rule]:
    """The whole owned ruleset, in order: each forward's rules (no shared, unscoped accept)."""
    rules: list[Rule] = []
    for forward in spec.forwards:
        rules.extend(forward_rules(spec, forward))
    return rules


def save_lines(spec: Spec) -> list[str]:
    """`rule.save_line()` of each rule of `ruleset(spec)`, in the same order (the reference
    spelling; the payloads and the desired state take :func:`spelled`'s, which equals it)."""
    return [rule.save_line() for rule in ruleset(spec)]


class Spelled(NamedTuple):
    """Every owned rule's `iptables-save` line: per table in ruleset order (the restore payload),
    and per chain in chain order (the canonical state)."""

    tables: dict[str, list[str]]
    chains: dict[str, list[str]]


@per_spec
def spelled(spec: Spec) -> Spelled:
    """The save lines of `ruleset(spec)`, spelled straight from the forwards (the restore
    payload, the boot payload and the desired state all spell every rule): no Rule objects, no
    argument tuples joined back into text. Equal to `save_lines` (tests/backends/test_backends_unit.py)."""
    nat: list[str] = []
    filt: list[str] = []
    pre, out, post, fwd = _spell(spec, [f"-A {c} " for c in _chains(spec.cluster)], '"', nat, filt)
    return Spelled({"nat": nat, "filter": filt}, dict(zip(_chains(spec.cluster), (pre, out, post, fwd))))


@per_spec
def shell_lines(spec: Spec) -> list[str]:
    """`ipt <rule.shell_args()>` for each rule of `ruleset(spec)`, in order (the iptables
    dialect's install step). Spelled straight from the forwards when every word a spec puts in
    a rule is shell-safe (what the model's names and addresses are), else rule by rule."""
    words = [spec.cluster, spec.relay.interface or ""]
    words += [f"{f.name}\n{f.to.address}\n{f.listen.address}" for f in spec.forwards]
    text = "\n".join(words)  # one line per word, unless a word holds a newline itself
    if not _SHELL_SAFE_WORDS.fullmatch(text) or text.count("\n") != 1 + 3 * len(spec.forwards):
        return [f"ipt {rule.shell_args()}" for rule in ruleset(spec)]
    lines: list[str] = []
    tables = ("nat", "nat", "nat", "filter")
    _spell(spec, [f"ipt -t {t} -A {c} " for t, c in zip(tables, _chains(spec.cluster))], "", lines, lines)
    return lines


_SHELL_SAFE_WORDS = re.compile(r"[\w@%+=:,./\n-]*", re.ASCII)


def _spell(spec: Spec, heads: list[str], quote: str, nat: list[str],
           filt: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Append each forward's rules (as `forward_rules` makes them) to `nat` and `filt`, each line
    `heads[chain kind] + its arguments` with the comment between `quote`s; also returns the
    lines of each chain (PRE, OUT, POST, FWD)."""
    h_pre, h_out, h_post, h_fwd = heads
    pre: list[str] = []
    out: list[str] = []
    post: list[str] = []
    fwd: list[str] = []
    iface = "" if spec.relay.interface is None else f"-i {spec.relay.interface} "
    comment = f"-m comment --comment {quote}{owned.comment_prefix(spec.cluster)}"
    for forward in spec.forwards:
        to, listen_port, to_port, protocol = forward.to.address, forward.listen.port, forward.to.port, forward.protocol
        tag = f"{comment}{forward.name}{quote}"
        if forward.listen.address is None:
            listen, local_only, orig_dst = "", "-m addrtype --dst-type LOCAL ", ""
        else:
            listen, local_only, orig_dst = f"-d {forward.listen.address}/32 ", "", f"--ctorigdst {forward.listen.address} "
        port = f"-p {protocol} -m {protocol} --dport {listen_port} "
        dnat = f"{port}{local_only}{tag} -j DNAT --to-destination {to}:{to_port}"
        if forward.allow is None:
            line = f"{h_pre}{listen}{iface}{dnat}"
            nat.append(line)
            pre.append(line)
        else:
            head = f"{listen}{iface}{dnat}"
            for source in forward.allow.sources:
                line = f"{h_pre}-s {source} {head}"
                nat.append(line)
                pre.append(line)
        if forward.local:
            line = f"{h_out}{listen}{dnat}"
            nat.append(line)
            out.append(line)
        if forward.masquerade:
            line = (f"{h_post}-d {to}/32 -p {protocol} -m {protocol} --dport {to_port} "
                    f"-m conntrack --ctstate DNAT {tag} -j MASQUERADE")
            nat.append(line)
            post.append(line)
        line = (f"{h_fwd}-m conntrack --ctstate DNAT --ctproto {PROTO_NUMBERS[protocol]} {orig_dst}--ctreplsrc {to} "
                f"--ctorigdstport {listen_port} --ctreplsrcport {to_port} {tag} -j ACCEPT")
        filt.append(line)
        fwd.append(line)
    return pre, out, post, fwd


@per_spec
def restore_payload(spec: Spec) -> str:
    """One `iptables-restore --noflush` transaction: declaring each owned chain flushes and refills it.
    Both iptables dialects embed it, one of them twice."""
    by_table = spelled(spec).tables
    out: list[str] = []
    for table, names in chains(spec.cluster).items():
        out.append(f"*{table}")
        out.extend(f":{chain} - [0:0]" for chain in names)
        out.extend(by_table[table])
        out.append("COMMIT")
    return "\n".join(out) + "\n"


def parse_save(text: str) -> list[Essence]:
    """Read netfwd's forwards back from `iptables-save` output, a restore payload or canonical state.

    Only rules in NETFWD-* chains (any cluster's, or the global ones of earlier versions) that carry
    a `netfwd:` comment count; everything else is someone else's and ignored. Lines are split by
    the iptables-save reader's one-pass `words` (no shlex per line: doctor and the backends read
    35,000-line dumps).
    """
    from netfwd.firewall.iptables_save import options, words

    found: dict[str, dict] = {}
    for line in text.splitlines():
        if not line.startswith("-A NETFWD-"):
            continue
        split = words(line)
        chain, opts = kind(split[1]), options(split[2:])
        name = opts.get("--comment", "")
        if not name.startswith("netfwd:") or name == REPLIES_COMMENT:
            continue
        entry = found.get(name)
        if entry is None:
            entry = found[name] = {"sources": [], "masquerade": False, "local": False}
        if chain == "PRE":
            host, _, port = opts["--to-destination"].rpartition(":")
            entry.update(listen_address=_host(opts.get("-d")), listen_port=int(opts["--dport"]),
                         protocol=opts["-p"], to_address=host, to_port=int(port))
            if "-s" in opts:
                entry["sources"].append(opts["-s"])
            else:
                entry["any"] = True
        elif chain == "OUT":
            entry["local"] = True
        elif chain == "POST" and opts.get("-j") == "MASQUERADE":
            entry["masquerade"] = True
    return [Essence(e["listen_address"], e["listen_port"], e["protocol"], e["to_address"], e["to_port"],
                    e["masquerade"], e["local"], None if e.get("any") else tuple(e["sources"]))
            for e in found.values() if "to_address" in e]


def _host(cidr: str | None) -> str | None:
    return None if cidr is None else cidr.removesuffix("/32")
