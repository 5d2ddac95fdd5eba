"""Run the stages for many endpoints at once, with a bound, and diagnose each.

Three phases, each concurrent across endpoints, so N endpoints take about as long as the
slowest one, not the sum: resolve; every TCP handshake in one selector loop (at most
`concurrency` in flight, see :mod:`netfwd.probe.engine`); then, per endpoint that needs more,
the trace, TLS and HTTP stages (or the relay checks) in a bounded thread pool. Only the
endpoints given are ever dialled.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Callable, Sequence

from netfwd.probe.diagnose import diagnose
from netfwd.probe.model import Endpoint, Options, ProbeResult, Stage
from netfwd.probe.tcp import Attempt

Progress = Callable[[ProbeResult], None]
_RAW_LOCK = threading.Lock()  # one scapy exchange at a time: its sockets see each other's replies


def resolve_stage(host: str, port: int) -> tuple[Stage, str | None]:
    started = time.perf_counter()
    try:
        ipaddress.ip_address(host)
        return Stage("resolve", "ok", "literal", 0.0, {"address": host}), host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as problem:
        return Stage("resolve", "fail", "no-address", _ms(started), {"error": str(problem)}), None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
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
    workers = max(1, min(options.concurrency, len(endpoints)))
    _resolve_all(run, workers)
    if options.from_relay:
        parallel(lambda i: _relay(run, i), _resolved(run), workers)
        return run.results
    more = _tcp_all(run)
    parallel(lambda i: _after_tcp(run, i), more, workers)
    return run.results


def parallel(function: Callable[[int], None], items: Sequence[int], workers: int) -> None:
    """function(item) for every item, on at most `workers` threads (none for a single item);
    the first exception is re-raised once all threads stopped."""
    if len(items) <= 1 or workers <= 1:
        for item in items:
            function(item)
        return
    queue = iter(items)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        while not errors:
            with lock:
                item = next(queue, None)
            if item is None:
                return
            try:
                function(item)
            except BaseException as problem:  # noqa: BLE001 - handed to the caller below
                errors.append(problem)
                return

    threads = [threading.Thread(target=worker, name=f"probe-{n}", daemon=True)
               for n in range(min(workers, len(items)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


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


def _tcp_all(run: _Run) -> list[int]:
    """Every handshake in one selector loop; returns the endpoints that need more stages."""
    from netfwd.probe.engine import Handshake, scan
    from netfwd.probe.tcp import tcp_stage

    options, indexes = run.options, _resolved(run)
    more: list[int] = []

    def done(position: int, attempts: list, seconds: float) -> None:
        index = indexes[position]
        stage = tcp_stage(attempts, seconds * 1000)
        run.results[index].stages.append(stage)
        run.last_attempt[index] = attempts[-1]
        needs = options.trace or (options.locate and stage.status != "ok") or options.until != "tcp"
        if needs:
            more.append(index)
        else:
            finished.append(index)
            run.results[index].elapsed_ms = _ms(run.started[index])
            run.tick(index)  # the diagnosis waits until the scan is over: keep the loop fast

    finished: list[int] = []
    scan([Handshake(run.addresses[i] or "", run.endpoints[i].port) for i in indexes], count=options.count,
         timeout=options.timeout, interval=options.interval, concurrency=options.concurrency, done=done)
    for index in finished:
        run.conclude(index)
    return sorted(more)


def _after_tcp(run: _Run, index: int) -> None:
    options, endpoint, result = run.options, run.endpoints[index], run.results[index]
    address = run.addresses[index] or endpoint.host
    tcp = result.stage("tcp")
    assert tcp is not None
    if options.trace or (options.locate and tcp.status != "ok"):
        result.stages.append(_trace(endpoint, address, options, run.last_attempt.get(index)))
    _tls_and_http(result, endpoint, address, options, tcp)
    run.finish(index)


def _relay(run: _Run, index: int) -> None:
    from netfwd.probe.relay import relay_stage

    endpoint = run.endpoints[index]
    run.results[index].stages.append(relay_stage(endpoint.port, endpoint.target, run.options.timeout))
    run.finish(index)


def _later(options: Options) -> list[str]:
    if options.from_relay:
        return ["relay"]
    return ["tcp", "tls", "http"][: ("tcp", "tls", "http").index(options.until) + 1]


def _trace(endpoint: Endpoint, address: str, options: Options, last: Attempt | None) -> Stage:
    from netfwd.probe.trace import trace_stage

    relay = {address, endpoint.host, *endpoint.relay_addresses}
    if options.trace:
        with _RAW_LOCK:
            return trace_stage(address, endpoint.port, relay, options.timeout, options.max_hops, True, None)
    return trace_stage(address, endpoint.port, relay, options.timeout, options.max_hops, False, last)


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


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
