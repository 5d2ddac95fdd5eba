"""Where a SYN dies: TTL-limited SYNs towards relay:A, and what their answers mean (facts.md §5).

At the relay's hop a SYN is either *forwarded* (DNAT matched: the kernel routes it on, the TTL
runs out, the relay sends ICMP time-exceeded) or *answered by the relay itself* (no rule
matched: RST, or SYN-ACK from a local service). Linux checks the TTL before the FORWARD hook,
so time-exceeded at the relay plus silence at full TTL means "dropped after the relay".
ICMP errors are rate-limited: a silent hop is unknown, never evidence of a drop.

Two ways to send the SYNs, one analysis: raw packets with scapy (`--trace`, root or
CAP_NET_RAW) or connect() with IP_TTL and IP_RECVERR (no privileges; used automatically when
the plain TCP stage fails).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable

from netfwd.probe.model import Stage
from netfwd.probe.tcp import Attempt

FULL_TTL = 64
UNREACH = ("net-unreach", "host-unreach", "admin-prohibited", "proto-unreach")


@dataclass(frozen=True)
class Hop:
    """The answer to the SYN sent with `ttl`: kind is time-exceeded, syn-ack, rst, an unreach
    reason, or None (silence); `sender` is who answered."""

    ttl: int
    kind: str | None
    sender: str | None = None
    rtt_ms: float | None = None

    def as_dict(self) -> dict:
        return {"ttl": self.ttl, "reply": self.kind or "none", "from": self.sender, "rtt_ms": self.rtt_ms}


@dataclass(frozen=True)
class Path:
    """The analysis. `at_relay`: forwarded, answered-itself, rejected, silent (unknown) or
    before-relay (a router before it said unreachable). `beyond` (only when forwarded): answered,
    refused, rejected or silent. `certain` is False when a silent hop leaves room for doubt."""

    at_relay: str
    relay_hop: int | None
    beyond: str | None
    certain: bool
    note: str

    def as_dict(self) -> dict:
        return {"at_relay": self.at_relay, "relay_hop": self.relay_hop, "beyond": self.beyond,
                "certain": self.certain, "note": self.note}


def _beyond(hops: list[Hop], after: int) -> str:
    for hop in hops:
        if hop.ttl <= after or hop.kind is None or hop.kind == "time-exceeded":
            continue
        if hop.kind == "syn-ack":
            return "answered"
        if hop.kind in ("rst", "port-unreach"):
            return "refused"
        return "rejected"
    return "silent"


def analyse(hops: Iterable[Hop], relay: set[str]) -> Path:
    """Locate the relay's hop and read what happened there and beyond (see the module doc)."""
    ordered = sorted(hops, key=lambda h: h.ttl)
    for index, hop in enumerate(ordered):
        if hop.kind is None:
            continue
        at_relay = hop.sender in relay
        if hop.kind in UNREACH and not at_relay:
            quiet = any(h.kind is None for h in ordered[:index])
            return Path("before-relay", None, None, not quiet,
                        f"{hop.kind} from {hop.sender} at hop {hop.ttl}, before the relay")
        if hop.kind == "time-exceeded" and not at_relay:
            continue  # a router on the way
        # the relay's hop: everything before it answered from elsewhere (or it is hop 1)
        before = ordered[:index]
        certain = hop.ttl == 1 or (bool(before) and before[-1].ttl == hop.ttl - 1
                                   and before[-1].kind == "time-exceeded")
        if hop.kind == "time-exceeded":
            beyond = _beyond(ordered, hop.ttl)
            return Path("forwarded", hop.ttl, beyond, True,
                        f"time-exceeded from the relay {hop.sender} at hop {hop.ttl}: it forwarded the SYN; "
                        f"beyond it: {beyond}")
        if hop.kind in ("syn-ack", "rst"):
            return Path("answered-itself", hop.ttl, None, certain,
                        f"{hop.kind} at hop {hop.ttl} from the relay's own stack: nothing forwarded it"
                        + ("" if certain else " (hop before it silent: the relay may hide its time-exceeded)"))
        return Path("rejected", hop.ttl, None, certain, f"{hop.kind} from the relay {hop.sender} at hop {hop.ttl}")
    return Path("silent", None, None, False,
                "no answer from the relay at any hop: unknown (ICMP may be rate-limited or filtered)")


# -- unprivileged: connect() with a TTL --------------------------------------------------------

def connect_hops(host: str, port: int, ttls: list[int], timeout: float, relay: set[str]) -> list[Hop]:
    """One non-blocking connect per TTL, all at once; stops as soon as the relay's hop is known."""
    from netfwd.probe.engine import Handshake, scan

    def hops_of(results: list[list[Attempt]]) -> dict[int, Hop]:
        return {ttl: hop_of(ttl, r[0], host) for ttl, r in zip(ttls, results) if r}

    results = scan([Handshake(host, port, ttl) for ttl in ttls], timeout=timeout, concurrency=len(ttls),
                   stop=lambda partial: _settled(hops_of(partial), ttls, relay))
    found = hops_of(results)
    return [found.get(ttl, Hop(ttl, None)) for ttl in ttls]


def hop_of(ttl: int, attempt: Attempt, host: str) -> Hop:
    """A connect() attempt as a trace hop (a TCP answer's sender is the dialled address)."""
    rtt = round(attempt.rtt * 1000, 3)
    if attempt.ok:
        return Hop(ttl, "syn-ack", host, rtt)
    if attempt.icmp is not None:
        return Hop(ttl, attempt.icmp.kind, attempt.icmp.sender, rtt)
    if attempt.reason == "conn-refused":
        return Hop(ttl, "rst", host, rtt)
    return Hop(ttl, None)


def _settled(results: dict[int, Hop], ttls: list[int], relay: set[str]) -> bool:
    """True once an answer from the relay (or a TCP answer) is in and every lower TTL has answered."""
    for ttl in ttls:
        hop = results.get(ttl)
        if hop is None or hop.kind is None:
            return False
        if hop.sender in relay or hop.kind in ("syn-ack", "rst") or hop.kind in UNREACH:
            return True
    return False


# -- the stage -------------------------------------------------------------------------------------

def trace_stage(host: str, port: int, relay: set[str], timeout: float, max_hops: int,
                raw: bool, full: Attempt | None) -> Stage:
    """Send the TTL-limited SYNs (raw or connect), analyse, and add the route used."""
    started = time.perf_counter()
    ttls = list(range(1, max_hops + 1))
    if raw:
        from netfwd.probe.rawtrace import raw_hops

        hops = raw_hops(host, port, ttls + [FULL_TTL], timeout)
        method = "raw"
    else:
        hops = connect_hops(host, port, ttls, timeout, relay)
        method = "connect"
        if full is not None:  # the tcp stage already sent the full-TTL SYN
            hops.append(hop_of(FULL_TTL, full, host))
    path = analyse(hops, relay)
    shown = [h.as_dict() for h in _worth_showing(hops, path)]
    detail: dict = {"method": method, "path": path.as_dict(), "hops": shown}
    if raw:
        from netfwd.probe.route import route_to

        detail["route"] = route_to(host)
    status = "ok" if path.at_relay != "silent" else "fail"
    return Stage("trace", status, path.at_relay, (time.perf_counter() - started) * 1000, detail)


def _worth_showing(hops: list[Hop], path: Path) -> list[Hop]:
    """Hops up to the relay's, then beyond it up to the first final answer, then full TTL."""
    ordered = sorted(hops, key=lambda h: h.ttl)
    limit = path.relay_hop
    if limit is None:
        answered = [h.ttl for h in ordered if h.kind is not None and h.ttl != FULL_TTL]
        limit = max(answered, default=1)
    elif path.at_relay == "forwarded":
        final = [h.ttl for h in ordered if h.ttl > limit and h.ttl != FULL_TTL
                 and h.kind not in (None, "time-exceeded")]
        routers = [h.ttl for h in ordered if h.ttl > limit and h.kind == "time-exceeded"]
        limit = min(final) if final else max(routers, default=limit)
    return [h for h in ordered if h.ttl <= limit or h.ttl == FULL_TTL]
