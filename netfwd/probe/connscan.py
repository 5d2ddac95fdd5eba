"""Many TCP handshakes at once on one thread: non-blocking connect() + epoll, like nmap's connect scan.

A thread per handshake would do, but a thousand of them spend more time scheduling than
waiting; one selector loop keeps `concurrency` sockets in flight, starts the next as soon as
one finishes, and times out each on its own deadline. Each socket carries IP_RECVERR (and an
optional TTL), so an ICMP answer is read back with its type, code and sender.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import resource
import selectors
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from netfwd.probe.tcp import Attempt, classify, make_socket, read_icmp

RESERVED_FDS = 64  # left for everything else the process opens


@dataclass(frozen=True)
class Handshake:
    """What to dial: `count` attempts, `interval` seconds apart; `ttl` None = the system default."""

    host: str
    port: int
    ttl: int | None = None


def fd_budget(wanted: int) -> int:
    """`wanted`, capped so the open sockets stay within RLIMIT_NOFILE (raising the soft limit if we may)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + RESERVED_FDS:
        target = wanted + RESERVED_FDS if hard == resource.RLIM_INFINITY else min(hard, wanted + RESERVED_FDS)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(1, min(wanted, soft - RESERVED_FDS) if soft != resource.RLIM_INFINITY else wanted)


def scan(handshakes: Sequence[Handshake], *, count: int = 1, timeout: float = 3.0, interval: float = 0.0,
         concurrency: int = 256, stop: Callable[[list[list[Attempt]]], bool] | None = None,
         done: Callable[[int, list[Attempt], float], None] | None = None) -> list[list[Attempt]]:
    """Attempts per handshake, in input order. At most `concurrency` sockets are open at a time;
    `stop(results)` (checked after each answer) ends the scan early, leaving the rest unanswered;
    `done(index, attempts, seconds)` is called as each handshake finishes its last attempt."""
    limit = fd_budget(max(1, concurrency))
    results: list[list[Attempt]] = [[] for _ in handshakes]
    waiting = deque(range(len(handshakes)))  # first attempts, in order
    later: list[tuple[float, int]] = []  # (not before, index): repeat attempts
    deadlines: list[tuple[float, int]] = []  # (deadline, serial)
    flight: dict[int, tuple[int, socket.socket, float]] = {}  # serial -> (index, socket, started)
    serials = itertools.count()
    first: dict[int, float] = {}
    selector = selectors.DefaultSelector()

    def finish(serial: int, attempt: Attempt) -> None:
        index, sock, _ = flight.pop(serial)
        try:
            selector.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()
        results[index].append(attempt)
        if len(results[index]) < count:
            heapq.heappush(later, (time.perf_counter() + interval, index))
        elif done is not None:
            done(index, results[index], time.perf_counter() - first[index])

    def start(index: int) -> None:
        shake = handshakes[index]
        sock = make_socket(shake.host, shake.ttl)
        sock.setblocking(False)
        began = time.perf_counter()
        first.setdefault(index, began)
        try:
            code = sock.connect_ex((shake.host, shake.port))
        except OSError as problem:  # getaddrinfo: an IPv6 zone id that names no interface here
            code = problem.errno if isinstance(problem.errno, int) and problem.errno > 0 else errno.EADDRNOTAVAIL
        serial = next(serials)
        flight[serial] = (index, sock, began)
        if code in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            selector.register(sock, selectors.EVENT_WRITE, serial)
            heapq.heappush(deadlines, (began + timeout, serial))
        elif code == 0:
            finish(serial, Attempt("syn-ack", time.perf_counter() - began))
        else:
            icmp = read_icmp(sock)
            finish(serial, Attempt(classify(OSError(code, errno.errorcode.get(code, "")), icmp),
                                   time.perf_counter() - began, icmp))

    try:
        while waiting or later or flight:
            now = time.perf_counter()
            while len(flight) < limit and (waiting or (later and later[0][0] <= now)):
                if later and later[0][0] <= now:
                    start(heapq.heappop(later)[1])
                else:
                    start(waiting.popleft())
            if stop is not None and stop(results):
                break
            while deadlines and (deadlines[0][1] not in flight):
                heapq.heappop(deadlines)  # already answered
            wake = [d for d in (deadlines[0][0] if deadlines else None,
                                later[0][0] if later and len(flight) < limit else None) if d is not None]
            if not flight and not wake:
                continue
            wait = max(0.0, min(wake) - time.perf_counter()) if wake else None
            for key, _ in selector.select(wait):
                serial = key.data
                _, sock, began = flight[serial]
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                elapsed = time.perf_counter() - began
                if code == 0:
                    finish(serial, Attempt("syn-ack", elapsed))
                else:
                    icmp = read_icmp(sock)
                    finish(serial, Attempt(classify(OSError(code, errno.errorcode.get(code, "")), icmp),
                                           elapsed, icmp))
            now = time.perf_counter()
            while deadlines and deadlines[0][0] <= now:
                _, serial = heapq.heappop(deadlines)
                if serial in flight:
                    finish(serial, Attempt("no-response", now - flight[serial][2]))
            if stop is not None and stop(results):
                break
    finally:
        for _, sock, _ in flight.values():
            sock.close()
        selector.close()
    return results
