"""TCP connect probes classified like nmap's connect scan, without privileges.

The socket has IP_RECVERR set, so when an ICMP error ends the handshake the kernel also queues
the ICMP type, code and sender on the socket's error queue: that turns a bare EHOSTUNREACH into
`admin-prohibited from 10.0.0.1` or `time-exceeded from the relay`. The same call with a small
TTL is the unprivileged way to find out where a SYN dies (see :mod:`netfwd.probe.trace`); :mod:`netfwd.probe.connscan` runs many at once.
"""

from __future__ import annotations

import errno
import socket
import math
import struct
from dataclasses import dataclass
from typing import NamedTuple

from netfwd.probe.model import Stage

IP_RECVERR = getattr(socket, "IP_RECVERR", 11)
IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
_EE = struct.Struct("=IBBBBII")  # struct sock_extended_err

# state follows nmap: open (syn-ack), closed (conn-refused), filtered (everything else)
ERRNO_REASONS = {errno.ECONNREFUSED: "conn-refused", errno.EHOSTUNREACH: "host-unreach",
                 errno.ENETUNREACH: "net-unreach", errno.EACCES: "admin-prohibited",
                 errno.EPERM: "admin-prohibited", errno.ETIMEDOUT: "no-response",
                 errno.EHOSTDOWN: "host-unreach", errno.ENONET: "host-unreach"}
ICMP4_UNREACH = {0: "net-unreach", 1: "host-unreach", 2: "proto-unreach", 3: "port-unreach",
                 6: "net-unreach", 7: "host-unreach", 9: "admin-prohibited", 10: "admin-prohibited",
                 11: "net-unreach", 12: "host-unreach", 13: "admin-prohibited"}
ICMP6_UNREACH = {0: "net-unreach", 1: "admin-prohibited", 3: "host-unreach", 4: "port-unreach",
                 5: "admin-prohibited", 6: "admin-prohibited"}


class _IcmpKind(NamedTuple):
    """How ICMP (IPv4) and ICMPv6 errors differ: where the sender's address sits in the offending
    packet's header, and the type numbers of time-exceeded and destination-unreachable."""

    family: int
    sender: tuple[int, int]  # slice of the offending header holding the sender's address
    exceeded: int
    unreachable: int
    unreach_codes: dict[int, str]
    prefix: str


_ICMP_KINDS = {SO_EE_ORIGIN_ICMP: _IcmpKind(socket.AF_INET, (4, 8), 11, 3, ICMP4_UNREACH, "icmp"),
               SO_EE_ORIGIN_ICMP6: _IcmpKind(socket.AF_INET6, (8, 24), 3, 1, ICMP6_UNREACH, "icmp6")}


@dataclass(frozen=True)
class Icmp:
    """An ICMP error the kernel matched to our SYN."""

    kind: str  # time-exceeded, net-unreach, host-unreach, admin-prohibited, port-unreach, ...
    sender: str
    type: int
    code: int


@dataclass(frozen=True)
class Attempt:
    """One connect(): `reason` is nmap's word for what came back; `rtt` is seconds to the answer."""

    reason: str
    rtt: float
    icmp: Icmp | None = None

    @property
    def state(self) -> str:
        return state_of(self.reason)

    @property
    def ok(self) -> bool:
        return self.reason == "syn-ack"


def state_of(reason: str) -> str:
    """nmap's port state for a connect-scan reason."""
    if reason == "syn-ack":
        return "open"
    if reason == "conn-refused":
        return "closed"
    return "filtered"


def make_socket(host: str, ttl: int | None = None) -> socket.socket:
    v6 = ":" in host
    sock = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        if v6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
            if ttl is not None:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
            if ttl is not None:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        # no lingering TIME_WAIT or FIN exchange for a probe: close with RST once connected
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        sock.close()
        raise
    return sock


def read_icmp(sock: socket.socket) -> Icmp | None:
    """The ICMP error queued on `sock` (IP_RECVERR), if any; never blocks."""
    try:
        sock.setblocking(False)  # with a timeout set, CPython would poll for readability first
        _, ancillary, _, _ = sock.recvmsg(1, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except OSError:  # nothing queued, or the socket is already closed
        return None
    for _level, _type, data in ancillary:
        if len(data) < _EE.size:
            continue
        _err, origin, icmp_type, code, _pad, _info, _data = _EE.unpack_from(data)
        offender = data[_EE.size:]
        kind = _ICMP_KINDS.get(origin)
        if kind is None or len(offender) < kind.sender[1]:
            continue
        sender = socket.inet_ntop(kind.family, offender[kind.sender[0]:kind.sender[1]])
        if icmp_type == kind.exceeded:
            return Icmp("time-exceeded", sender, icmp_type, code)
        if icmp_type == kind.unreachable:
            return Icmp(kind.unreach_codes.get(code, f"unreach-{code}"), sender, icmp_type, code)
        return Icmp(f"{kind.prefix}-{icmp_type}-{code}", sender, icmp_type, code)
    return None


def classify(problem: OSError, icmp: Icmp | None) -> str:
    """nmap's reason for a failed connect; an ICMP error refines EHOSTUNREACH (not ECONNREFUSED,
    so closed/filtered stays exactly what `nmap -sT` says)."""
    if isinstance(problem, TimeoutError) or problem.errno in (errno.EAGAIN, errno.ETIMEDOUT):
        return "no-response"
    reason = ERRNO_REASONS.get(problem.errno or -1, f"error-{errno.errorcode.get(problem.errno or 0, '?')}")
    if icmp is not None and reason != "conn-refused":
        return "ttl-exceeded" if icmp.kind == "time-exceeded" else icmp.kind
    return reason


def connect_once(host: str, port: int, timeout: float, ttl: int | None = None) -> Attempt:
    """One TCP handshake attempt; never raises for network outcomes."""
    from netfwd.probe.connscan import Handshake, scan

    return scan([Handshake(host, port, ttl)], timeout=timeout, concurrency=1)[0][0]


def rtt_stats(samples: list[float]) -> dict[str, float]:
    """min/avg/max/stddev in ms (population stddev, as ping reports mdev)."""
    ms = [s * 1000 for s in samples]
    mean = sum(ms) / len(ms)
    spread = math.sqrt(sum((m - mean) ** 2 for m in ms) / len(ms))
    return {"min": round(min(ms), 3), "avg": round(mean, 3), "max": round(max(ms), 3), "stddev": round(spread, 3)}


def tcp_stage(attempts: list[Attempt], elapsed_ms: float) -> Stage:
    """The tcp stage from `count` handshakes: nmap's reason, RTT statistics and loss."""
    count = len(attempts)
    answered = [a for a in attempts if a.ok]
    if answered:
        reason = "syn-ack"
    else:
        reasons = [a.reason for a in attempts]
        reason = max(set(reasons), key=lambda r: (reasons.count(r), -reasons.index(r)))
    detail: dict = {"state": state_of(reason), "sent": count, "received": len(answered),
                    "loss_pct": round(100.0 * (count - len(answered)) / count, 1)}
    if answered:
        detail["rtt_ms"] = rtt_stats([a.rtt for a in answered])
    icmp = next((a.icmp for a in attempts if a.icmp is not None), None)
    if icmp is not None:
        detail["icmp"] = {"kind": icmp.kind, "from": icmp.sender, "type": icmp.type, "code": icmp.code}
    if not answered and reason != "no-response":
        detail["reply_ms"] = round(min(a.rtt for a in attempts) * 1000, 3)
    return Stage("tcp", "ok" if answered else "fail", reason, elapsed_ms, detail)
