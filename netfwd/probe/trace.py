"""Where a SYN dies: TTL-limited SYNs towards relay:A, and what their answers mean (docs/facts.md#probing).

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

import threading
import time
from dataclasses import dataclass
from typing import Iterable

from netfwd.probe.model import Stage, Status
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


def analyse(hops: Iterable[Hop], relay: set[str], known_hop: int | None = None) -> Path:
    """Locate the relay's hop and read what happened there and beyond (see the module doc).
    `known_hop`: the relay's hop as an earlier sweep established it (so an answer there is certain)."""
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
        certain = hop.ttl in (1, known_hop) or (bool(before) and before[-1].ttl == hop.ttl - 1
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
    from netfwd.probe.connscan import Handshake, scan

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


# -- pacing: the relay rate-limits its ICMP errors --------------------------------------------

ICMP_BURST, ICMP_PER_SECOND = 6, 1.0  # Linux: net.ipv4.icmp_ratelimit=1000 ms, burst factor 6


class RelayState:
    """What traces of one relay address share within a run: its hop once a sweep found it, and a
    token bucket mirroring the relay's ICMP rate limit, so that probing many forwards of one relay
    at once does not make its time-exceeded answers vanish (a silent hop would read as unknown)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the one sweep that looks for the relay's hop
        self.swept = False
        self.hop: int | None = None
        self.before: Path | None = None  # a router before the relay said unreachable
        self._bucket = threading.Lock()
        self._tokens, self._stamp = float(ICMP_BURST), time.monotonic()

    def take(self) -> None:
        """Wait for one ICMP answer's worth of the relay's budget."""
        with self._bucket:
            now = time.monotonic()
            self._tokens = min(ICMP_BURST, self._tokens + (now - self._stamp) * ICMP_PER_SECOND)
            self._stamp = now
            if self._tokens < 1:
                time.sleep((1 - self._tokens) / ICMP_PER_SECOND)
                self._tokens, self._stamp = 1.0, time.monotonic()
            self._tokens -= 1

    def spent(self) -> None:
        """The relay stayed silent: assume its budget is gone (other traffic may have used it),
        so the next take() waits for a refill."""
        with self._bucket:
            self._tokens, self._stamp = 0.0, time.monotonic()


class Relays:
    """RelayState per relay address, for one probe run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, RelayState] = {}

    def __call__(self, address: str) -> RelayState:
        with self._lock:
            return self._states.setdefault(address, RelayState())


def windows(max_hops: int) -> list[list[int]]:
    """TTLs in growing windows (1-2, 3-6, 7-14, ...): few SYNs when the relay is near, and no
    more time-exceeded or reject answers from beyond it than needed."""
    out, low, size = [], 1, 2
    while low <= max_hops:
        out.append(list(range(low, min(max_hops, low + size - 1) + 1)))
        low, size = low + size, size * 2
    return out


# -- the stage -------------------------------------------------------------------------------------

def trace_stage(host: str, port: int, relay: set[str], timeout: float, max_hops: int,
                raw: bool, full: Attempt | None, state: RelayState | None = None) -> Stage:
    """Send TTL-limited SYNs (raw or connect), analyse, and (raw) add the route used.

    The first trace of a relay sweeps the TTLs to find its hop; later traces of the same relay
    (other forwards) send one SYN at that hop. A silent relay hop is retried once, after the
    relay's ICMP budget allows it."""
    started = time.perf_counter()
    state = state or RelayState()
    if raw:
        from netfwd.probe.rawtrace import raw_hops

        def send(ttls: list[int]) -> list[Hop]:
            return raw_hops(host, port, ttls, timeout)
    else:
        def send(ttls: list[int]) -> list[Hop]:
            return connect_hops(host, port, ttls, timeout, relay)

    hops: list[Hop] = []
    retried = swept = False
    with state.lock:
        if not state.swept:
            swept = True
            hops = _sweep(send, max_hops, relay, state, first_extra=[FULL_TTL] if raw else [])
            if analyse(hops, relay).at_relay == "silent":
                retried = True
                state.spent()
                hops = _merge(hops, _sweep(send, max_hops, relay, state, []))
            path = analyse(hops, relay)
            state.swept, state.hop = True, path.relay_hop
            state.before = path if path.at_relay == "before-relay" else None
    if not swept:
        if state.hop is not None:
            extra = [FULL_TTL] if raw else []
            state.take()
            hops = send([state.hop] + extra)
            if hops[0].kind is None:
                retried = True
                state.spent()
                state.take()
                hops = _merge(hops, send([state.hop]))
        elif state.before is not None:
            hops = []
    if full is not None and not raw:  # the tcp stage already sent the full-TTL SYN
        hops = [h for h in hops if h.ttl != FULL_TTL] + [hop_of(FULL_TTL, full, host)]
    path = analyse(hops, relay, known_hop=state.hop if not swept else None)
    if not swept and state.hop is None:
        path = state.before or Path("silent", None, None, False,
                                    "no answer from the relay at any hop in an earlier trace of it: unknown")
    detail: dict = {"method": "raw" if raw else "connect", "path": path.as_dict(),
                    "hops": [h.as_dict() for h in _worth_showing(hops, path)]}
    if retried:
        detail["retried"] = True
    if raw:
        from netfwd.probe.route import route_to

        detail["route"] = route_to(host)
    status: Status = "ok" if path.at_relay != "silent" else "fail"
    return Stage("trace", status, path.at_relay, (time.perf_counter() - started) * 1000, detail)


def _sweep(send, max_hops: int, relay: set[str], state: RelayState, first_extra: list[int]) -> list[Hop]:
    """Windows of TTLs until the relay's hop is known; a wholly silent first window means the
    rest is sent at once (nothing answers: one more timeout, not one per window)."""
    hops: list[Hop] = []
    plan = windows(max_hops)
    index = 0
    while index < len(plan):
        window = plan[index]
        state.take()
        hops += send(window + (first_extra if index == 0 else []))
        if analyse(hops, relay).at_relay != "silent":
            break
        if index == 0 and all(h.kind is None for h in hops):
            rest = [ttl for later in plan[1:] for ttl in later]
            if rest:
                state.take()
                hops += send(rest)
            break
        index += 1
    return hops


def _merge(first: list[Hop], second: list[Hop]) -> list[Hop]:
    """Per TTL, the answer if either round got one."""
    merged = {h.ttl: h for h in first}
    for hop in second:
        if hop.kind is not None or hop.ttl not in merged:
            merged[hop.ttl] = hop
    return sorted(merged.values(), key=lambda h: h.ttl)


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
