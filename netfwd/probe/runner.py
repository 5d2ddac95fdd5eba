"""Run the stages for many endpoints at once, with a bound, and diagnose each.

Endpoints are resolved, then every TCP handshake runs in one selector loop (at most
`concurrency` in flight, see :mod:`netfwd.probe.connscan`); the moment an endpoint's handshakes
are done, its remaining stages (trace, TLS, HTTP) go to a pool of at most
min(`concurrency`, MAX_THREADS) threads while the loop carries on. So N endpoints take about as long as the slowest one, not
the sum, and only the endpoints given are ever dialled.
"""

from __future__ import annotations

import functools
import ipaddress
import queue
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from netfwd.probe.diagnose import diagnose
from netfwd.probe.model import Endpoint, Options, ProbeResult, Stage
from netfwd.probe.tcp import Attempt

if TYPE_CHECKING:
    from netfwd.probe.trace import Relays, RelayState

Progress = Callable[[ProbeResult], None]
MAX_THREADS = 128  # deeper stages (trace, TLS, HTTP) block in threads; handshakes need none
_RAW_LOCK = threading.Lock()  # one scapy exchange at a time: its sockets see each other's replies


def resolve_stage(host: str, port: int) -> tuple[Stage, str | None]:
    started = time.perf_counter()
    if _is_ip(host):
        return Stage("resolve", "ok", "literal", 0.0, {"address": host}), host
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as problem:
        return Stage("resolve", "fail", "no-address", _ms(started), {"error": str(problem)}), None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    detail = {"address": addresses[0], "all": addresses}
    if len(addresses) > 1:
        detail["note"] = "only the first address is probed"
    return Stage("resolve", "ok", "dns", _ms(started), detail), addresses[0]


class _Run:
    """The state of one probe_all call: results so far, and completion bookkeeping."""

    def __init__(self, endpoints: Sequence[Endpoint], options: Options, progress: Progress | None) -> None:
        self.endpoints, self.options, self.progress = endpoints, options, progress
        self.results = [ProbeResult(ep) for ep in endpoints]
        self.addresses: list[str | None] = [None] * len(endpoints)
        self.started = [time.perf_counter()] * len(endpoints)
        self.lock = threading.Lock()
        self.last_attempt: dict[int, Attempt] = {}  # the full-TTL handshake, reused by the trace
        self._relays: Relays | None = None  # per relay address: its hop and ICMP budget, for its traces
        self._firewall: tuple[Any, Any] | str | None = None  # --from-relay: the relay's rules, read once
        self.firewall_lock = threading.Lock()  # ... and traced one packet at a time (rules read on first use)

    def relay_state(self, address: str) -> RelayState:
        with self.lock:
            if self._relays is None:
                from netfwd.probe.trace import Relays

                self._relays = Relays()
        return self._relays(address)

    def relay_firewall(self) -> tuple[Any, Any] | str:
        """Under firewall_lock: the relay's firewall, read on first use (netfwd.probe.relay)."""
        if self._firewall is None:
            from netfwd.probe.relay import relay_firewall

            self._firewall = relay_firewall(None)  # probe runs inside --netns itself
        return self._firewall

    def finish(self, index: int) -> None:
        self.conclude(index)
        self.tick(index)

    def conclude(self, index: int) -> None:
        result = self.results[index]
        result.findings = diagnose(result, self.options)
        result.elapsed_ms = result.elapsed_ms or _ms(self.started[index])

    def tick(self, index: int) -> None:
        if self.progress is not None:
            with self.lock:
                self.progress(self.results[index])


def probe_all(endpoints: Sequence[Endpoint], options: Options, progress: Progress | None = None) -> list[ProbeResult]:
    """Probe every endpoint; results in input order (see the module doc for the phases)."""
    run = _Run(endpoints, options, progress)
    workers = max(1, min(options.concurrency, MAX_THREADS, len(endpoints)))
    if options.from_relay:  # nothing is dialled at port A: the relay checks its own state
        parallel(lambda i: _relay(run, i), range(len(endpoints)), workers)
        return run.results
    _resolve_all(run, workers)
    pool = Pool(workers)
    try:
        _tcp_all(run, lambda index: pool.submit(lambda i: _after_tcp(run, i), index))
    finally:
        pool.join()
    return run.results


class Pool:
    """At most `workers` threads, started only as work arrives, fed while the caller keeps going
    (the TCP scan hands each endpoint over the moment its handshake is done)."""

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()

    def submit(self, function: Callable[[int], None], item: int) -> None:
        self.tasks.put((function, item))
        with self.lock:
            if len(self.threads) >= self.workers:
                return
            thread = threading.Thread(target=self._work, name=f"probe-{len(self.threads)}", daemon=True)
            self.threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            task = self.tasks.get()
            if task is None:
                return
            function, item = task
            try:
                if not self.errors:
                    function(item)
            except BaseException as problem:  # noqa: BLE001 - re-raised by join()
                self.errors.append(problem)

    def join(self) -> None:
        """Wait for every task; re-raise the first failure."""
        for _ in self.threads:
            self.tasks.put(None)
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]


def parallel(function: Callable[[int], None], items: Sequence[int] | range, workers: int) -> None:
    """function(item) for every item on at most `workers` threads (inline for a single item)."""
    if len(items) <= 1 or workers <= 1:
        for item in items:
            function(item)
        return
    pool = Pool(workers)
    for item in items:
        pool.submit(function, item)
    pool.join()


def probe_endpoint(endpoint: Endpoint, options: Options) -> ProbeResult:
    """Every stage for one endpoint, then the diagnosis."""
    return probe_all([endpoint], options)[0]


def _resolve_all(run: _Run, workers: int) -> None:
    def one(index: int) -> None:
        ep = run.endpoints[index]
        run.started[index] = time.perf_counter()
        stage, address = resolve_stage(ep.host, ep.port)
        run.results[index].stages.append(stage)
        run.addresses[index] = address
        if address is None:
            run.results[index].stages += [Stage(n, "skipped", "not-resolved") for n in _later(run.options)]
            run.finish(index)

    literal = [i for i, ep in enumerate(run.endpoints) if _is_ip(ep.host)]
    for index in literal:
        one(index)
    parallel(one, [i for i, ep in enumerate(run.endpoints) if not _is_ip(ep.host)], workers)


def _resolved(run: _Run) -> list[int]:
    return [i for i, a in enumerate(run.addresses) if a is not None]


def _tcp_all(run: _Run, more: Callable[[int], None]) -> None:
    """Every handshake in one selector loop; endpoints that need more stages go to `more` at once."""
    from netfwd.probe.connscan import Handshake, scan
    from netfwd.probe.tcp import tcp_stage

    options, indexes = run.options, _resolved(run)

    def done(position: int, attempts: list, seconds: float) -> None:
        index = indexes[position]
        stage = tcp_stage(attempts, seconds * 1000)
        run.results[index].stages.append(stage)
        run.last_attempt[index] = attempts[-1]
        needs = options.trace or (options.locate and stage.status != "ok") or options.until != "tcp"
        if needs:
            more(index)
        else:
            finished.append(index)
            run.results[index].elapsed_ms = _ms(run.started[index])
            run.tick(index)  # the diagnosis waits until the scan is over: keep the loop fast

    finished: list[int] = []
    scan([Handshake(run.addresses[i] or "", run.endpoints[i].port) for i in indexes], count=options.count,
         timeout=options.timeout, interval=options.interval, concurrency=options.concurrency, done=done)
    for index in finished:
        run.conclude(index)


def _after_tcp(run: _Run, index: int) -> None:
    options, endpoint, result = run.options, run.endpoints[index], run.results[index]
    address = run.addresses[index] or endpoint.host
    tcp = result.stage("tcp")
    assert tcp is not None
    if options.trace or (options.locate and tcp.status != "ok"):
        result.stages.append(_trace(endpoint, address, options, run.last_attempt.get(index),
                                    run.relay_state(address)))
    _tls_and_http(result, endpoint, address, options, tcp)
    run.finish(index)


def _relay(run: _Run, index: int) -> None:
    from netfwd.probe.relay import relay_stage

    endpoint = run.endpoints[index]
    run.started[index] = time.perf_counter()
    stage = relay_stage(endpoint.port, endpoint.target, run.options.timeout)
    if endpoint.target is not None:
        from netfwd.probe.relay import explain_forward

        with run.firewall_lock:
            stage.detail["explain"] = explain_forward(endpoint, run.relay_firewall())
    run.results[index].stages.append(stage)
    run.finish(index)


def _later(options: Options) -> list[str]:
    if options.from_relay:
        return ["relay"]
    return ["tcp", "tls", "http"][: ("tcp", "tls", "http").index(options.until) + 1]


def _trace(endpoint: Endpoint, address: str, options: Options, last: Attempt | None, state: RelayState) -> Stage:
    from netfwd.probe.trace import trace_stage

    relay = {address, endpoint.host, *endpoint.relay_addresses}
    if options.trace:
        with _RAW_LOCK:
            return trace_stage(address, endpoint.port, relay, options.timeout, options.max_hops, True, None, state)
    return trace_stage(address, endpoint.port, relay, options.timeout, options.max_hops, False, last, state)


def _tls_and_http(result: ProbeResult, endpoint: Endpoint, address: str, options: Options, tcp: Stage) -> None:
    if options.until == "tcp":
        return
    if tcp.status != "ok":
        result.stages.append(Stage("tls", "skipped", "tcp-failed"))
        if options.until == "http":
            result.stages.append(Stage("http", "skipped", "tcp-failed"))
        return
    from netfwd.probe.tls import in_sans, tls_stage

    sni_default = None if _is_ip(endpoint.host) else endpoint.host
    outcome = tls_stage(address, endpoint.port, options.timeout, options.server_name, options.ca, sni_default)
    if "sans" in outcome.stage.detail and address != endpoint.host:  # dialled by name: the name must match
        outcome.stage.detail["dialled_in_sans"] = in_sans(endpoint.host, outcome.stage.detail["sans"])
    result.stages.append(outcome.stage)
    if options.until != "http":
        if outcome.conn is not None:
            outcome.conn.close()
        return
    if outcome.conn is None:
        result.stages.append(Stage("http", "skipped", "tls-failed"))
        return
    from netfwd.probe.http import http_stage

    sni = outcome.stage.detail.get("sni") or endpoint.host
    result.stages.append(http_stage(address, endpoint.port, options.timeout, sni, outcome.conn))


@functools.lru_cache(maxsize=4096)  # a thousand endpoints usually share one relay address
def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
