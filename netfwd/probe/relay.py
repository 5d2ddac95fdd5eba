"""`--from-relay`: evidence only the relay has. Run on the relay (or in its lab namespace).

Three facts pin a silent forward down: is IP forwarding on; does the target answer the relay
directly (a direct connect to B); and what conntrack recorded for port A. A SYN the FORWARD
chain drops never gets a confirmed conntrack entry; one that was forwarded but never answered
stays `[UNREPLIED]` — and if its reply tuple points at the client rather than the relay, the
target was asked to answer a client it has no route to: masquerade is missing (the reply path).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netfwd.probe.model import Stage, Status
from netfwd.probe.tcp import connect_once, state_of

_TUPLE = re.compile(r"(src|dst|sport|dport)=(\S+)")


@dataclass(frozen=True)
class Flow:
    """One conntrack entry: original and reply tuples (src, dst, sport, dport), flags."""

    state: str
    original: tuple[str, str, int, int]
    reply: tuple[str, str, int, int]
    unreplied: bool
    assured: bool

    @property
    def masqueraded(self) -> bool:
        """The reply goes to someone other than the original client: the source was rewritten."""
        return self.reply[1] != self.original[0]

    def as_dict(self) -> dict:
        return {"state": self.state, "client": f"{self.original[0]}:{self.original[2]}",
                "dialled": f"{self.original[1]}:{self.original[3]}",
                "target": f"{self.reply[0]}:{self.reply[2]}", "reply_to": f"{self.reply[1]}:{self.reply[3]}",
                "unreplied": self.unreplied, "assured": self.assured, "masqueraded": self.masqueraded}


def parse_conntrack(text: str) -> list[Flow]:
    """Parse `conntrack -L` lines (the default output format) for TCP."""
    flows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[0] != "tcp":
            continue
        pairs = _TUPLE.findall(line)
        if len(pairs) < 8:
            continue
        values = [v for _, v in pairs]
        try:
            original = (values[0], values[1], int(values[2]), int(values[3]))
            reply = (values[4], values[5], int(values[6]), int(values[7]))
        except ValueError:
            continue
        flows.append(Flow(fields[3], original, reply, "[UNREPLIED]" in line, "[ASSURED]" in line))
    return flows


def conntrack_flows(listen_port: int, timeout: float = 10.0) -> tuple[list[Flow] | None, str | None]:
    """Entries whose original destination port is `listen_port`, or (None, why not)."""
    if shutil.which("conntrack") is None:
        return None, "the conntrack tool is not installed (apt install conntrack)"
    try:
        done = subprocess.run(["conntrack", "-L", "-p", "tcp", "--orig-port-dst", str(listen_port)],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as problem:
        return None, f"conntrack -L failed: {problem}"
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["conntrack -L failed"])[-1]
    return parse_conntrack(done.stdout), None


def ip_forward(family: int = 4) -> bool | None:
    path = Path("/proc/sys/net/ipv4/ip_forward" if family == 4 else "/proc/sys/net/ipv6/conf/all/forwarding")
    try:
        return path.read_text().strip() == "1"
    except OSError:
        return None


def relay_stage(listen_port: int, target: tuple[str, int] | None, timeout: float) -> Stage:
    """Direct connect to the target, conntrack entries for port A, ip_forward."""
    started = time.perf_counter()
    detail: dict = {"listen_port": listen_port, "ip_forward": ip_forward(6 if target and ":" in target[0] else 4)}
    if target is not None:
        attempt = connect_once(target[0], target[1], timeout)
        detail["direct"] = {"target": f"{target[0]}:{target[1]}", "reason": attempt.reason,
                            "state": state_of(attempt.reason), "rtt_ms": round(attempt.rtt * 1000, 3)}
        if attempt.icmp is not None:
            detail["direct"]["icmp"] = {"kind": attempt.icmp.kind, "from": attempt.icmp.sender}
    flows, why_not = conntrack_flows(listen_port)
    if flows is None:
        detail["conntrack_error"] = why_not
    else:
        local = []
        if target is not None:  # entries DNATed to this forward's target; the rest the relay kept
            flows = [f for f in flows if f.original[1] != target[0]]  # not our own direct connects to B
            local = [f for f in flows if (f.reply[0], f.reply[2]) != target]
            flows = [f for f in flows if (f.reply[0], f.reply[2]) == target]
        detail["conntrack"] = {"entries": len(flows), "unreplied": sum(f.unreplied for f in flows),
                               "assured": sum(f.assured for f in flows),
                               "unreplied_unmasqueraded": sum(f.unreplied and not f.masqueraded for f in flows),
                               "not_forwarded": len(local),
                               "sample": [f.as_dict() for f in flows[:5]]}
    direct_ok = detail.get("direct", {}).get("reason") == "syn-ack"
    status: Status = "ok" if direct_ok or target is None else "fail"
    reason = detail.get("direct", {}).get("reason", "no-target")
    return Stage("relay", status, reason, (time.perf_counter() - started) * 1000, detail)


EXAMPLE_CLIENT = "203.0.113.10"  # documentation space (RFC 5737): a client when the spec admits anyone


def relay_firewall(netns: str | None) -> tuple[Any, Any] | str:
    """The relay's rules, routes and addresses as explain reads them live, once for every forward a
    probe looks at (iptables rules read whole only when a traced packet meets them); or why not."""
    from netfwd.errors import NetfwdError
    from netfwd.explain import live

    try:
        ruleset, host, _ = live(netns, lazy=True)
    except NetfwdError as problem:
        return str(problem)
    return ruleset, host


def explain_forward(endpoint, firewall: tuple[Any, Any] | str) -> dict | None:
    """What the relay's firewall (`relay_firewall`) does to a new connection from a client the forward
    admits to its listen port (netfwd explain): the verdict and the rule that decided it."""
    from netfwd.explain import make_probe
    from netfwd.firewall.trace import Tracer

    if isinstance(firewall, str):
        return {"error": firewall}
    ruleset, host = firewall
    candidates = [a for a in (*endpoint.relay_addresses, endpoint.host) if a and a != "*"]
    dst = next((a for a in candidates if ":" not in a), None)
    if dst is None:  # on the relay itself: its first address on an interface that is not loopback
        dst = next((str(a) for a, dev in host.local.items() if a.version == 4 and dev and dev != "lo"), None)
    if dst is None:
        return None
    probe = make_probe(endpoint.client or EXAMPLE_CLIENT, dst, "tcp", endpoint.port,
                       in_interface=host.local.get(make_probe(dst, dst, "tcp", 1).dst))
    answer = Tracer(ruleset, host).explain(probe)
    decided = next((s for s in reversed(answer.path) if s.action == answer.verdict or
                    (answer.verdict == "reject" and s.action == "reject")), None)
    return {"src": str(probe.src), "dst": dst, "port": endpoint.port, "verdict": answer.verdict,
            "reason": answer.reason, "to": answer.as_dict()["to"],
            "rule": None if decided is None else decided.as_dict()}
