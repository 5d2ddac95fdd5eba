"""Differential testing of `netfwd explain` against the kernel, in a lab relay.

A seeded generator writes random rulesets (iptables-nft, iptables-legacy, native nft, or an
iptables flavour and nft together: raw/mangle/nat/filter tables and base chains at several
priorities, user chains with jump/goto/return, address/port/interface/addrtype matches, conntrack
state, status and entry matches (`--ctorigdst`, `--ctreplsrc`, `ct original ip daddr`, ...),
sets and verdict maps, DNAT/REDIRECT/SNAT/MASQUERADE, REJECT of several kinds, policies) and random
packets. Each ruleset is loaded into the lab relay with the real tools, every packet is really sent
from the lab client (many at once), and what happened - which server answered, seeing which source
on which address and port; a reset or ICMP error; nothing - is compared with explain's answer,
read from the live relay.

Observability: every server port listens on every on-prem address and on the relay (answering
"peer local-address local-port"); the generator starts each filter-type chain a reply could cross
with a guard that lets the rest of each connection through (`ct state established,related
accept`), which a test packet (the first of its connection) never matches. An error sent for a packet whose destination was translated quotes the translated address (the
connection is unconfirmed, so conntrack cannot translate the error back): the client may ignore it,
and explain says so in its reason. ICMP rate limiting is
off in the relay (icmp_ratemask=0) so every REJECT is seen; the ICMP errors of routing failures
are limited by global sysctls (net.ipv4.route.error_cost/error_burst) the lab must not change, so
for those alone a missing error is accepted.

Used by tests/firewall/test_explain_diff.py (hundreds of cases in CI) and scripts/explain-diff (thousands).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path

PORTS = (80, 443, 8080, 8443, 9000)
REJECTS = ("tcp-reset", "icmp-port-unreachable", "icmp-host-unreachable", "icmp-net-unreachable",
           "icmp-admin-prohibited", "icmp-host-prohibited")
# What the client's socket reports for each ICMP error (TCP in SYN-SENT, UDP with IP_RECVERR):
# net/ipv4/icmp.c icmp_err_convert (docs/explain.md).
OBSERVED_REJECT = {"tcp-reset": "conn-refused", "icmp-port-unreachable": "conn-refused",
                   "icmp-host-unreachable": "host-unreach", "icmp-net-unreachable": "net-unreach",
                   "icmp-admin-prohibited": "host-unreach", "icmp-host-prohibited": "host-unreach",
                   "icmp-net-prohibited": "net-unreach", "icmpx-port-unreachable": "conn-refused",
                   "icmpx-admin-prohibited": "host-unreach", "icmpx-host-unreachable": "host-unreach",
                   "icmpx-no-route": "net-unreach"}
NFT_REJECT = {"tcp-reset": "with tcp reset", "icmp-port-unreachable": "with icmp type port-unreachable",
              "icmp-host-unreachable": "with icmp type host-unreachable",
              "icmp-net-unreachable": "with icmp type net-unreachable",
              "icmp-admin-prohibited": "with icmp type admin-prohibited",
              "icmp-host-prohibited": "with icmp type host-prohibited"}
REGRESSIONS = Path(__file__).resolve().parents[1] / "fixtures" / "explain-regressions.jsonl"


@dataclass(frozen=True)
class Env:
    """The lab's addresses the generator may name."""

    sources: tuple[str, ...]  # client addresses
    client_net: str
    allowed_cidr: str
    relay_out: str
    relay_in: str
    targets: tuple[str, ...]  # on-prem addresses (servers listen on each)
    unrouted: str  # an address the relay has no route to
    ext: str = "ext0"
    inside: str = "int0"

    @classmethod
    def of(cls, lab) -> "Env":
        a = lab.addrs
        base = a.onprem.rsplit(".", 1)[0]
        return cls((a.client_allowed, a.client_denied), a.client_net, a.allowed_cidr, a.relay_outside,
                   a.relay_inside, (a.onprem, f"{base}.3"), a.block.split(".")[0] + "." + a.block.split(".")[1]
                   + ".250.9")

    @property
    def destinations(self) -> tuple[str, ...]:
        return (self.relay_out, self.relay_in, *self.targets, self.unrouted)

    def names(self) -> dict[str, str]:
        """Placeholder -> this lab's value, for regression cases kept independent of the lab's block."""
        return {"{client_allowed}": self.sources[0], "{client_denied}": self.sources[1],
                "{client_net}": self.client_net, "{allowed_cidr}": self.allowed_cidr,
                "{relay_out}": self.relay_out, "{relay_in}": self.relay_in, "{onprem}": self.targets[0],
                "{onprem2}": self.targets[1], "{unrouted}": self.unrouted}


@dataclass
class Case:
    seed: int
    kind: str  # iptables-nft | iptables-legacy | nft | mixed-nft | mixed-legacy
    iptables: str = ""
    nft: str = ""
    packets: list[dict] = field(default_factory=list)

    expect_unknown: bool = False  # a regression case whose right answer is `unknown`

    def as_dict(self) -> dict:
        return {"seed": self.seed, "kind": self.kind, "iptables": self.iptables, "nft": self.nft,
                "packets": self.packets}

    def templated(self, env: Env) -> dict:
        """The case with the lab's addresses as placeholders (to keep it as a regression case)."""
        text = json.dumps(self.as_dict())
        for name, value in sorted(env.names().items(), key=lambda item: -len(item[1])):
            text = text.replace(value, name)
        return json.loads(text)

    @classmethod
    def from_template(cls, doc: dict, env: Env) -> "Case":
        text = json.dumps(doc)
        for name, value in env.names().items():
            text = text.replace(name, value)
        data = json.loads(text)
        return cls(data.get("seed", -1), data["kind"], data.get("iptables", ""), data.get("nft", ""),
                   data["packets"], data.get("expect_unknown", False))


# -- the generator ------------------------------------------------------------------------------------

class _Gen:
    def __init__(self, seed: int, env: Env) -> None:
        self.r, self.env = random.Random(seed), env
        self.used: set[int] = set()
        self.shifts: set[int] = set()

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def pick(self, items):
        return self.r.choice(list(items))

    def ports(self) -> tuple[str, str]:
        """(iptables, nft) spelling of a destination-port match."""
        shape = self.r.randrange(3)
        if shape == 0:
            port = self.pick(PORTS)
            return f"--dport {port}", f"{port}"
        if shape == 1:
            low = self.pick(PORTS)
            high = low + self.r.randrange(1, 700)
            return f"--dport {low}:{high}", f"{low}-{high}"
        chosen = sorted(self.r.sample(PORTS, 2))
        return f"-m multiport --dports {chosen[0]},{chosen[1]}", "{ " + f"{chosen[0]}, {chosen[1]}" + " }"

    def source_cidr(self) -> str:
        return self.pick((f"{self.env.sources[0]}/32", f"{self.env.sources[1]}/32", self.env.allowed_cidr,
                          self.env.client_net))

    # iptables ---------------------------------------------------------------------------------------
    def ipt_matches(self, hook: str) -> str:
        parts = []
        e = self.env
        if self.chance(0.3):
            parts.append(f"{'! ' if self.chance(0.3) else ''}-s {self.source_cidr()}")
        if self.chance(0.3):
            parts.append(f"{'! ' if self.chance(0.2) else ''}-d {self.pick(e.destinations)}/32")
        if self.chance(0.6):
            proto = self.pick(("tcp", "udp"))
            parts.append(f"-p {proto}")
            if self.chance(0.7):
                ipt, _ = self.ports()
                parts.append(ipt if ipt.startswith("-m") else f"-m {proto} {ipt}")
            if self.chance(0.15):
                parts.append(f"-m {proto} --sport 30000:{self.pick((40000, 50000, 65535))}")
        if hook in ("prerouting", "input", "forward") and self.chance(0.2):
            parts.append(f"{'! ' if self.chance(0.3) else ''}-i {self.pick((e.ext, e.inside, 'ext+'))}")
        if hook in ("forward", "postrouting") and self.chance(0.2):
            parts.append(f"-o {self.pick((e.ext, e.inside))}")
        if self.chance(0.15):
            parts.append(self.ipt_conntrack())
        if self.chance(0.1):
            parts.append(f"-m addrtype {'! ' if self.chance(0.3) else ''}--dst-type LOCAL")
        if self.chance(0.1):
            parts.append('-m comment --comment "generated rule"')
        return " ".join(parts)

    def ipt_conntrack(self) -> str:
        """-m conntrack: a state, and now and then an option read from the entry (which a packet before
        conntrack lacks: beside a state the kernel does not look at it there, alone it never matches)."""
        e, options = self.env, []
        if self.chance(0.8):
            options.append(f"{'! ' if self.chance(0.3) else ''}--ctstate "
                           f"{self.pick(('NEW', 'DNAT', 'ESTABLISHED', 'NEW,ESTABLISHED', 'INVALID'))}")
        if not options or self.chance(0.3):
            bang = "! " if self.chance(0.3) else ""
            options.append(self.pick((f"{bang}--ctstatus {self.pick(('CONFIRMED', 'SEEN_REPLY', 'ASSURED'))}",
                                      f"{bang}--ctproto {self.pick(('tcp', 'udp'))}",
                                      f"{bang}--ctorigdst {self.pick(e.destinations)}/32",
                                      f"{bang}--ctorigdstport {self.pick(PORTS)}",
                                      f"{bang}--ctreplsrc {self.pick(e.destinations)}/32")))
        return "-m conntrack " + " ".join(options)

    def ipt_target(self, table: str, hook: str, users: list[str], matches: str) -> str:
        e = self.env
        jump = [f"-j {u}" for u in users] + [f"-g {u}" for u in users]
        tcp = "-p tcp" in matches
        if table == "nat" and hook == "prerouting":
            port = self.pick(PORTS)
            options = [f"-j DNAT --to-destination {self.pick(e.targets)}", "-j ACCEPT", "-j RETURN"]
            if "-p " in matches:  # a port mapping needs a protocol
                options += [f"-j DNAT --to-destination {self.pick(e.targets)}:{port}",
                            f"-j DNAT --to-destination {e.relay_in}:{port}", f"-j REDIRECT --to-ports {port}"]
            return self.pick(options + jump)
        if table == "nat":
            return self.pick([f"-j SNAT --to-source {self.pick((e.relay_in, e.relay_out))}", "-j MASQUERADE",
                              "-j ACCEPT", "-j RETURN", *jump])
        if table in ("raw", "mangle"):
            return self.pick(["-j ACCEPT", "-j DROP", "-j RETURN", "-j MARK --set-xmark 0x1/0xffffffff", *jump])
        rejects = [r for r in REJECTS if tcp or r != "tcp-reset"]
        return self.pick(["-j ACCEPT", "-j DROP", f"-j REJECT --reject-with {self.pick(rejects)}", "-j RETURN",
                          "-j LOG --log-prefix \"gen \"", *jump, *jump])

    def iptables(self) -> str:
        layout = {"raw": ["prerouting"], "mangle": ["prerouting", "forward", "postrouting"],
                  "nat": ["prerouting", "postrouting"], "filter": ["input", "forward"]}
        builtin = {"raw": ("PREROUTING", "OUTPUT"), "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
                   "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"), "filter": ("INPUT", "FORWARD", "OUTPUT")}
        out = []
        for table, hooks in layout.items():
            if table not in ("nat", "filter") and not self.chance(0.4):
                continue
            lines, declared = [], []
            for hook in hooks:
                if not self.chance(0.85):
                    continue
                name = hook.upper()
                users = [f"U{table[:2].upper()}{hook[:3].upper()}{n}" for n in range(self.r.randrange(3))]
                declared += users
                chains = [name, *users]
                for index, chain in enumerate(chains):
                    later = chains[index + 1:] if index else users
                    later = [u for u in later if u != chain]
                    if chain == name and table != "nat":
                        lines += [f"-A {chain} {guard}" for guard in self.guards_ipt(table, hook)]
                    for _ in range(self.r.randrange(1, 6)):
                        matches = self.ipt_matches(hook)
                        lines.append(f"-A {chain} {matches} {self.ipt_target(table, hook, later, matches)}".replace(
                            "  ", " "))
            policies = {}
            for chain in builtin[table]:
                drop = table in ("filter",) and chain != "OUTPUT" and self.chance(0.4)
                policies[chain] = "DROP" if drop else "ACCEPT"
            out.append(f"*{table}")
            out += [f":{c} {p} [0:0]" for c, p in policies.items()]
            out += [f":{u} - [0:0]" for u in declared]
            out += lines + ["COMMIT"]
        return "\n".join(out) + "\n"

    def guards_ipt(self, table: str, hook: str) -> list[str]:
        if table == "raw":  # before conntrack: tell the rest of a connection by interface and flags
            return [f"-i {self.env.inside} -j ACCEPT", "-p tcp ! --syn -j ACCEPT"]
        if hook == "postrouting":  # also resets and ICMP errors the relay sends (maybe untracked)
            return ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", f"-o {self.env.ext} -j ACCEPT"]
        return ["-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]

    # nft --------------------------------------------------------------------------------------------
    def nft_matches(self, hook: str) -> str:
        e, parts = self.env, []
        if self.chance(0.3):
            what = self.pick((self.source_cidr(), "@clients", "{ " + f"{e.sources[0]}, {e.sources[1]}" + " }"))
            parts.append(f"ip saddr {'!= ' if self.chance(0.3) and not what.startswith('{') else ''}{what}")
        if self.chance(0.3):
            parts.append(f"ip daddr {'!= ' if self.chance(0.2) else ''}{self.pick(e.destinations)}")
        if self.chance(0.6):
            proto = self.pick(("tcp", "udp", "th"))
            if proto == "th":
                parts.append(f"meta l4proto {self.pick(('tcp', 'udp'))}")
            _, ports = self.ports()
            parts.append(f"{proto} dport {ports}")
            if self.chance(0.1) and proto != "th":
                parts.append(f"{proto} sport 30000-{self.pick((40000, 65535))}")
        if hook in ("prerouting", "input", "forward") and self.chance(0.2):
            parts.append(f'iifname {"!= " if self.chance(0.3) else ""}"{self.pick((e.ext, e.inside))}"')
        if hook in ("forward", "postrouting") and self.chance(0.2):
            parts.append(f'oifname "{self.pick((e.ext, e.inside))}"')
        if self.chance(0.15):
            parts.append(self.pick(("ct state new", "ct state established", "ct status dnat", "ct status != dnat")))
        if self.chance(0.06):  # read from the entry: never matches before conntrack
            parts.append(f"ct {self.pick(('original ip daddr', 'reply ip saddr'))} "
                         f"{'!= ' if self.chance(0.3) else ''}{self.pick(e.destinations)}")
        if self.chance(0.1):
            parts.append("fib daddr type local")
        return " ".join(parts)

    def nft_verdict(self, kind: str, hook: str, users: list[str], matches: str) -> str:
        e = self.env
        jumps = [f"jump {u}" for u in users] + [f"goto {u}" for u in users]
        if kind == "nat" and hook == "prerouting":
            port = self.pick(PORTS)
            options = [f"dnat to {self.pick(e.targets)}", "accept", "return"]
            if "dport" in matches:  # nft maps ports only after a transport protocol match
                options += [f"dnat to {self.pick(e.targets)}:{port}", f"dnat to {e.relay_in}:{port}",
                            f"redirect to :{port}"]
            return self.pick(options + jumps)
        if kind == "nat":
            return self.pick([f"snat to {self.pick((e.relay_in, e.relay_out))}", "masquerade", "accept", "return",
                              *jumps])
        tcp = "tcp dport" in matches or "l4proto tcp" in matches
        rejects = [r for r in REJECTS if tcp or r != "tcp-reset"]
        reject = [f"reject {NFT_REJECT[self.pick(rejects)]}"] if hook in ("input", "forward", "prerouting") else []
        if self.chance(0.1) and "dport" not in matches:
            a, b = self.r.sample(PORTS, 2)
            return "tcp dport vmap { " + f"{a} : accept, {b} : drop" + " }"
        return self.pick(["accept", "drop", *reject, "return", "counter", *jumps, *jumps])

    def nft(self, name: str) -> str:
        used = self.used  # distinct across tables too: chains that share a priority run in creation order

        def priority(base: int) -> int:
            while True:
                value = base + self.r.randrange(-40, 41)
                if value not in used and value not in (-100, 100, 0, -150, -300, 50):
                    used.add(value)
                    return value

        lines = [f"table ip {name} {{",
                 f"    set clients {{ type ipv4_addr; flags interval; elements = {{ {self.source_cidr()} }} }}"]
        # never the priority of iptables' nat nor of another table's nat chain: ties run in order of creation
        shift = self.pick([n for n in (-5, -3, -1, 1, 3, 5) if n not in self.shifts])
        self.shifts.add(shift)
        chains = [("filter", "prerouting", priority(-200)), ("nat", "prerouting", -100 + shift),
                  ("filter", "input", priority(20)), ("filter", "forward", priority(-20)),
                  ("nat", "postrouting", 100 + shift), ("filter", "postrouting", priority(200))]
        for kind, hook, prio in chains:
            if not self.chance(0.75):
                continue
            base = f"{kind[0]}_{hook}"
            users = [f"{base}_u{n}" for n in range(self.r.randrange(3))]
            names = [base, *users]
            policy = "drop" if kind == "filter" and hook in ("input", "forward") and self.chance(0.3) else "accept"
            for index, chain in enumerate(names):
                later = [u for u in (names[index + 1:] if index else users) if u != chain]
                body = []
                if index == 0:
                    body.append(f"type {kind} hook {hook} priority {prio}; policy {policy};")
                    if kind != "nat":
                        body += self.guards_nft(prio, hook)
                for _ in range(self.r.randrange(1, 6)):
                    matches = self.nft_matches(hook)
                    body.append(f"{matches} {self.nft_verdict(kind, hook, later, matches)}".strip())
                lines.append(f"    chain {chain} {{")
                lines += [f"        {line}" for line in body]
                lines.append("    }")
        lines.append("}")
        return "\n".join(lines) + "\n"

    def guards_nft(self, priority: int, hook: str) -> list[str]:
        if priority < -200:  # before conntrack
            return [f'iifname "{self.env.inside}" accept', "tcp flags != syn accept"]
        if hook == "postrouting":  # also resets and ICMP errors the relay sends (maybe untracked)
            return ["ct state established,related accept", f'oifname "{self.env.ext}" accept']
        return ["ct state established,related accept"]

    def packets(self, count: int, first_sport: int) -> list[dict]:
        out = []
        for index in range(count):
            proto = self.pick(("tcp", "tcp", "udp"))
            out.append({"src": self.pick(self.env.sources), "dst": self.pick(self.env.destinations),
                        "proto": proto, "dport": self.pick(PORTS), "sport": first_sport + index})
        return out


def generate(seed: int, env: Env, packets: int = 24, first_sport: int = 20000) -> Case:
    gen = _Gen(seed, env)
    kind = gen.pick(("iptables-nft", "iptables-legacy", "nft", "mixed-nft", "mixed-legacy"))
    case = Case(seed, kind)
    if kind != "nft":
        case.iptables = gen.iptables()
    if kind == "nft" or kind.startswith("mixed"):
        case.nft = gen.nft("gen") + (gen.nft("gen2") if gen.chance(0.3) else "")
    case.packets = gen.packets(packets, first_sport)
    return case


# -- running a case in the lab ------------------------------------------------------------------------

RESET_LEGACY = "".join(f"*{table}\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in chains) + "COMMIT\n" for table, chains in (
    ("raw", ("PREROUTING", "OUTPUT")), ("mangle", ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING")),
    ("nat", ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")), ("filter", ("INPUT", "FORWARD", "OUTPUT"))))


class Bench:
    """A lab prepared for differential runs: servers everywhere, forwarding on, ICMP unlimited."""

    def __init__(self, lab) -> None:
        self.lab, self.env = lab, Env.of(lab)
        a = lab.addrs
        lab.run("onprem", ["ip", "addr", "add", f"{self.env.targets[1]}/24", "dev", a.onprem_if])
        lab.enable_forwarding()
        lab.run("relay", ["sysctl", "-qw", "net.ipv4.icmp_ratemask=0"])
        for node in ("relay", "onprem"):
            for port in PORTS:
                lab.start_server(node, port, udp=True, where=True)
        self.next_sport = 20000

    def reset(self) -> None:
        self.lab.run("relay", ["nft", "flush", "ruleset"])
        self.lab.run("relay", ["iptables-legacy-restore"], input=RESET_LEGACY)
        self.lab.run("relay", ["conntrack", "-F"], check=False)

    def load(self, case: Case) -> None:
        self.reset()
        if case.iptables:
            tool = "iptables-legacy-restore" if case.kind.endswith("legacy") else "iptables-nft-restore"
            self.lab.run("relay", [tool], input=case.iptables)
        if case.nft:
            self.lab.run("relay", ["nft", "-f", "-"], input=case.nft)

    def send(self, packets: list[dict], timeout: float = 0.6) -> list[dict]:
        items = [dict(p, id=i) for i, p in enumerate(packets)]
        done = self.lab.run("client", [__import__("sys").executable, "-m", "netfwd.lab.servers", "connect-many",
                                       "--timeout", str(timeout)], input=json.dumps(items), timeout=120)
        return sorted(json.loads(done.stdout), key=lambda r: r["id"])

    def explain(self, packets: list[dict]) -> list:
        from netfwd.explain import live, make_probe
        from netfwd.firewall.trace import Tracer

        ruleset, host, _ = live(self.lab.ns("relay"), lazy=True)  # as one-packet explain reads (rules read on use)
        tracer = Tracer(ruleset, host)
        return [tracer.explain(make_probe(p["src"], p["dst"], p["proto"], p["dport"], p["sport"])) for p in packets]

    def run(self, case: Case) -> list[dict]:
        """Load, send, explain, compare: the disagreements (empty when explain matched the kernel)."""
        self.load(case)
        observed = self.send(case.packets)
        answers = self.explain(case.packets)
        wrong = []
        for packet, seen, answer in zip(case.packets, observed, answers):
            want, got = expectation(answer), observation(seen)
            if case.expect_unknown and answer.verdict == "unknown":
                continue
            if got not in want:
                wrong.append({"packet": packet, "explain": answer.as_dict(), "expected": want, "observed": got})
        return wrong


def expectation(answer) -> tuple[str, ...]:
    """What the client may see for explain's answer (more than one only for routing failures)."""
    if answer.verdict in ("forward", "local"):
        return (f"ok {answer.source_seen} {answer.to_address} {answer.to_port}",)
    if answer.verdict == "drop":
        return ("no-response",)
    if answer.verdict == "reject":
        seen = OBSERVED_REJECT.get(answer.reject_with or "", f"reject {answer.reject_with}")
        routing = answer.path and answer.path[-1].hook == "routing"
        quoted = "quotes the translated destination" in answer.reason  # the client cannot match that error
        return (seen, "no-response") if routing or quoted else (seen,)
    return (f"unknown: {answer.reason}",)


def observation(result: dict) -> str:
    if result["ok"]:
        return f"ok {result['data']}"
    return result["reason"]


def regressions() -> list[dict]:
    """Cases that once disagreed, with the lab's addresses as placeholders (JSON lines; `why` says
    what was wrong)."""
    if not REGRESSIONS.exists():
        return []
    return [json.loads(line) for line in REGRESSIONS.read_text().splitlines() if line.strip()]
