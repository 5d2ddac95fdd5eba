"""TTL-limited raw SYNs with scapy (root or CAP_NET_RAW). Imported only when `--trace` runs.

Only the layers needed are imported (`scapy.all` costs about a second). Raw SYNs see what
connect() cannot: the RST and SYN-ACK senders, and answers at every TTL in one round.
"""

from __future__ import annotations

import os
import random
import time

from netfwd.errors import EnvironmentProblem
from netfwd.probe.trace import Hop

CAP_NET_RAW = 13


def can_send_raw() -> bool:
    """Root, or CAP_NET_RAW in the effective set."""
    if os.geteuid() == 0:
        return True
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_RAW & 1)
    except OSError:
        pass
    return False


def require_raw() -> None:
    if not can_send_raw():
        raise EnvironmentProblem("--trace sends raw SYNs: run it as root or give python CAP_NET_RAW "
                                 "(without --trace, a failing probe is located with unprivileged "
                                 "TTL-limited connects)")


def raw_hops(host: str, port: int, ttls: list[int], timeout: float) -> list[Hop]:
    """Send one SYN per TTL (distinct source ports) and collect the answers within `timeout`."""
    require_raw()
    import logging

    logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
    from scapy.config import conf
    from scapy.sendrecv import sr

    if ":" in host:
        from scapy.layers.inet import TCP
        from scapy.layers.inet6 import IPv6

        def packet(ttl: int, sport: int):
            return IPv6(dst=host, hlim=ttl) / TCP(sport=sport, dport=port, flags="S",
                                                  seq=random.getrandbits(32))
    else:
        from scapy.layers.inet import IP, TCP

        def packet(ttl: int, sport: int):
            return IP(dst=host, ttl=ttl) / TCP(sport=sport, dport=port, flags="S", seq=random.getrandbits(32))

    conf.verb = 0
    base = random.randint(33000, 60000 - len(ttls))
    packets = [packet(ttl, base + i) for i, ttl in enumerate(ttls)]
    started = time.perf_counter()
    try:
        answered, _ = sr(packets, timeout=timeout, verbose=0)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot send raw packets: {problem}") from None
    found: dict[int, Hop] = {}
    for sent, reply in answered:
        ttl = ttls[sent.sport - base] if hasattr(sent, "sport") else sent.ttl
        rtt = round((float(reply.time) - float(sent.sent_time or started)) * 1000, 3) \
            if getattr(sent, "sent_time", None) else None
        found[ttl] = Hop(ttl, _kind(reply), reply.src, rtt)
    return [found.get(ttl, Hop(ttl, None)) for ttl in ttls]


def _kind(reply) -> str:
    from netfwd.probe.tcp import ICMP4_UNREACH, ICMP6_UNREACH

    layer = reply.payload
    name = layer.__class__.__name__
    if name == "TCP":
        flags = int(layer.flags)
        if flags & 0x12 == 0x12:
            return "syn-ack"
        return "rst" if flags & 0x04 else f"tcp-flags-{flags:#x}"
    if name == "ICMP":
        if layer.type == 11:
            return "time-exceeded"
        if layer.type == 3:
            return ICMP4_UNREACH.get(int(layer.code), f"unreach-{layer.code}")
        return f"icmp-{layer.type}-{layer.code}"
    if name.startswith("ICMPv6TimeExceeded"):
        return "time-exceeded"
    if name.startswith("ICMPv6DestUnreach"):
        return ICMP6_UNREACH.get(int(layer.code), f"unreach-{layer.code}")
    return name.lower()
