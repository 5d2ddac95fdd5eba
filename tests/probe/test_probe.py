"""`netfwd probe` without namespaces: input handling, the trace analysis, the diagnosis rules,
the reports, and real probes on loopback (a TLS API-server stand-in on 127.0.0.1). Nothing here
sends a packet anywhere but 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netfwd.cli import main
from netfwd.errors import InputError
from netfwd.probe import Endpoint, Options, ProbeResult, Stage, probe_all
from netfwd.probe.diagnose import CODES, diagnose
from netfwd.probe.model import parse_version
from netfwd.probe.relay import parse_conntrack
from netfwd.probe.report import document, render_junit
from netfwd.probe.targets import collect, from_list_file, parse_hostport
from netfwd.probe.tls import in_sans
from netfwd.probe.trace import Hop, analyse, windows

LO = "127.0.0.1"


def run_cli(*args: str) -> tuple[int, str, str]:
    done = subprocess.run([sys.executable, "-m", "netfwd", "probe", *args], capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout, done.stderr


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LO, 0))
        return sock.getsockname()[1]


# -- input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("10.0.0.1:16443", ("10.0.0.1", 16443)), ("relay.example:443", ("relay.example", 443)),
    ("[fd00::1]:6443", ("fd00::1", 6443)), ("fd00::1", ("fd00::1", None)), ("10.0.0.1", ("10.0.0.1", None)),
])
def test_hostport_forms(text, expected):
    assert parse_hostport(text, "--via", need_port=False) == expected


@pytest.mark.parametrize("text,message", [
    ("10.0.0.1", "has no port"), ("10.0.0.1:0", "not a port"), ("10.0.0.1:70000", "not a port"),
    ("a:b:c", "not HOST:PORT"), ("[fd00::1", "missing ']'"), ("", "is empty"), ("ht tp:1", "not a host"),
])
def test_hostport_errors_name_the_field(text, message):
    with pytest.raises(InputError) as caught:
        parse_hostport(text, "--target")
    assert caught.value.field == "--target" and message in str(caught.value)


def test_list_file_lines_comments_and_errors(tmp_path):
    good = tmp_path / "targets.txt"
    good.write_text("# endpoints\n127.0.0.1:80 web\n\n127.0.0.1:443  # tls\n")
    assert [(e.host, e.port, e.name) for e in from_list_file(str(good))] == [(LO, 80, "web"), (LO, 443, None)]
    bad = tmp_path / "bad.txt"
    bad.write_text("127.0.0.1:80\n127.0.0.1:http\n")
    with pytest.raises(InputError) as caught:
        from_list_file(str(bad))
    assert str(caught.value).startswith(f"{bad}:2: target: ")


def test_spec_endpoints_dial_via_and_listen_ports(example_spec, tmp_path):
    from netfwd.spec import open_spec

    spec = tmp_path / "two.yaml"
    spec.write_text("""version: 1
cluster: two
relay: {os: linux, address: 10.9.0.4}
forwards:
  - {name: api, listen: {port: 16443}, to: {address: 192.168.10.5, port: 6443}}
  - {name: dns, listen: {port: 5353}, to: {address: 192.168.10.6, port: 53}, protocol: udp}
  - {name: other, listen: {port: 16444, address: 10.9.0.5}, to: {address: 192.168.10.7, port: 6443}}
""")
    logs: list[str] = []
    loaded = open_spec(spec)
    eps = collect(loaded, "203.0.113.9", (), None, (), False, logs.append)
    assert [(e.host, e.port, e.name, e.target) for e in eps] == [
        ("203.0.113.9", 16443, "api", ("192.168.10.5", 6443)), ("203.0.113.9", 16444, "other", ("192.168.10.7", 6443))]
    assert "dns" in logs[0]  # udp is named, not probed
    assert eps[0].relay_addresses == ("10.9.0.4",)
    # without --via: the listen address, else the relay's address
    assert [(e.host, e.port) for e in collect(loaded, None, (), None, (), False, logs.append)] == [
        ("10.9.0.4", 16443), ("10.9.0.5", 16444)]
    assert [e.name for e in collect(loaded, "203.0.113.9:16444", (), None, (), False, logs.append)] == ["other"]
    with pytest.raises(InputError, match="no tcp forward in the spec listens on port 1"):
        collect(loaded, "203.0.113.9:1", (), None, (), False, logs.append)
    with pytest.raises(InputError, match="no forward named 'nope'"):
        collect(loaded, None, (), None, ("nope",), False, logs.append)


def test_duplicates_are_probed_once():
    eps = collect(None, None, (f"{LO}:80", f"{LO}:81", f"{LO}:80"), None, (), False, lambda _: None)
    assert [e.dial for e in eps] == [f"{LO}:80", f"{LO}:81"]


@pytest.mark.parametrize("args,needle", [
    ((), "--target: nothing to probe"),
    (("--via", "127.0.0.1"), "--via: '127.0.0.1' has no port"),
    (("--target", "127.0.0.1:99999"), "not a port"),
    (("--count", "0", "--target", "127.0.0.1:1"), "--count"),
    (("--ca", "/nonexistent/ca.pem", "--target", "127.0.0.1:1"), "/nonexistent/ca.pem: --ca: no such file"),
    (("--netns", "../x", "--target", "127.0.0.1:1"), "--netns: '../x' is not a network namespace name"),
    (("--from-relay", "--target", "127.0.0.1:1"), "--from-relay needs the forward"),
    (("--forward", "api", "--target", "127.0.0.1:1"), "--forward selects forwards of a SPEC"),
    (("rules/example.yaml", "--forward", "nope"), "--forward: no forward named 'nope'"),
])
def test_bad_input_is_one_line_and_exit_2(args, needle):
    code, out, err = run_cli(*args)
    assert code == 2 and out == "" and needle in err
    assert "Traceback" not in err


def test_bad_spec_names_file_line_and_field(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text("version: 1\ncluster: x\nforwards:\n  - name: a\n    listen: {port: 99999}\n"
                    "    to: {address: 10.0.0.1, port: 1}\n")
    code, _, err = run_cli(str(spec), "--via", LO)
    assert code == 2 and err.strip().endswith("99999 is outside 1-65535") and f"{spec}:5: " in err


def test_bad_ca_file(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    code, _, err = run_cli("--ca", str(ca), "--target", f"{LO}:1")
    assert code == 2 and f"{ca}: --ca: not a PEM certificate bundle" in err


def test_help_does_not_import_heavy_modules():
    done = subprocess.run([sys.executable, "-c", "import sys; from netfwd.cli import main\n"
                           "try: main(['probe', '--help'])\nexcept SystemExit: pass\n"
                           "print(sorted(m for m in ('scapy', 'pyroute2', 'cryptography', 'rich', 'ssl') "
                           "if m in sys.modules))"], capture_output=True, text=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


# -- where a SYN dies ---------------------------------------------------------------------------

RELAY = {"10.0.1.1"}


def test_windows_grow_and_cover_every_ttl():
    assert windows(16) == [[1, 2], [3, 4, 5, 6], list(range(7, 15)), [15, 16]]
    assert sum(windows(30), []) == list(range(1, 31))


@pytest.mark.parametrize("hops,at_relay,hop,beyond,certain", [
    ([Hop(1, "time-exceeded", "10.0.1.1"), Hop(64, None)], "forwarded", 1, "silent", True),
    ([Hop(1, "time-exceeded", "10.0.1.1"), Hop(64, "rst", "10.0.1.1")], "forwarded", 1, "refused", True),
    ([Hop(1, "time-exceeded", "10.0.1.1"), Hop(2, "admin-prohibited", "10.0.1.1")], "forwarded", 1, "rejected", True),
    ([Hop(1, "rst", "10.0.1.1"), Hop(2, "rst", "10.0.1.1")], "answered-itself", 1, None, True),
    ([Hop(1, "time-exceeded", "10.0.0.1"), Hop(2, "syn-ack", "10.0.1.1")], "answered-itself", 2, None, True),
    ([Hop(1, None), Hop(2, "rst", "10.0.1.1")], "answered-itself", 2, None, False),  # hop 1 silent: doubt
    ([Hop(1, "time-exceeded", "10.0.0.1"), Hop(2, "host-unreach", "10.0.0.1")], "before-relay", None, None, True),
    ([Hop(1, "admin-prohibited", "10.0.1.1")], "rejected", 1, None, True),
    ([Hop(1, None), Hop(2, None), Hop(64, None)], "silent", None, None, False),
])
def test_trace_analysis(hops, at_relay, hop, beyond, certain):
    path = analyse(hops, RELAY)
    assert (path.at_relay, path.relay_hop, path.beyond, path.certain) == (at_relay, hop, beyond, certain)


def test_a_known_relay_hop_makes_a_single_answer_certain():
    assert analyse([Hop(3, "rst", "10.0.1.1")], RELAY).certain is False
    assert analyse([Hop(3, "rst", "10.0.1.1")], RELAY, known_hop=3).certain is True


class FakePath:
    """Answers TTL-limited SYNs like a path with routers at hops 1-2 and the relay at hop 3 that
    forwards; `silent_first` makes the relay's first time-exceeded vanish (rate-limited)."""

    def __init__(self, silent_first: bool = False) -> None:
        self.sent: list[list[int]] = []
        self.silent = silent_first

    def __call__(self, host, port, ttls, timeout, relay):
        self.sent.append(list(ttls))
        hops = []
        for ttl in ttls:
            if ttl < 3:
                hops.append(Hop(ttl, "time-exceeded", f"10.0.0.{ttl}"))
            elif ttl == 3 and not self.silent:
                hops.append(Hop(ttl, "time-exceeded", "10.0.1.1"))
            else:
                hops.append(Hop(ttl, None))
        if 3 in ttls:
            self.silent = False
        return hops


def test_trace_sweeps_windows_then_reuses_the_relays_hop(monkeypatch):
    from netfwd.probe import trace as tr
    from netfwd.probe.tcp import Attempt

    fake = FakePath()
    monkeypatch.setattr(tr, "connect_hops", fake)
    state = tr.RelayState()
    full = Attempt("no-response", 1.0)
    first = tr.trace_stage("10.0.1.1", 16443, RELAY, 1.0, 16, False, full, state)
    assert fake.sent == [[1, 2], [3, 4, 5, 6]]  # stops at the window holding the relay
    assert first.reason == "forwarded" and first.detail["path"]["relay_hop"] == 3
    assert first.detail["path"]["beyond"] == "silent" and first.detail["path"]["certain"]
    second = tr.trace_stage("10.0.1.1", 16444, RELAY, 1.0, 16, False, full, state)
    assert fake.sent[2:] == [[3]] and second.reason == "forwarded"  # one SYN at the known hop


def test_a_silent_relay_hop_is_retried_after_the_icmp_budget_refills(monkeypatch):
    from netfwd.probe import trace as tr

    fake = FakePath(silent_first=True)
    monkeypatch.setattr(tr, "connect_hops", fake)
    monkeypatch.setattr(tr, "ICMP_PER_SECOND", 20.0)  # refill in 50 ms instead of a second
    stage = tr.trace_stage("10.0.1.1", 16443, RELAY, 1.0, 4, False, None, tr.RelayState())
    assert stage.detail.get("retried") is True and stage.reason == "forwarded"
    assert fake.sent == [[1, 2], [3, 4], [1, 2], [3, 4]]


def test_icmp_budget_allows_a_burst_then_paces(monkeypatch):
    import time

    from netfwd.probe import trace as tr

    monkeypatch.setattr(tr, "ICMP_PER_SECOND", 10.0)
    state = tr.RelayState()
    started = time.monotonic()
    for _ in range(tr.ICMP_BURST):
        state.take()
    burst = time.monotonic() - started
    state.take()
    assert burst < 0.05 and time.monotonic() - started >= 0.09


# -- diagnosis rules ------------------------------------------------------------------------------

EP = Endpoint("10.0.1.1", 16443, target=("192.168.10.5", 6443))


def result_with(*stages: Stage) -> ProbeResult:
    result = ProbeResult(EP, [Stage("resolve", "ok", "literal"), *stages])
    result.findings = diagnose(result, Options())
    return result


def trace(at_relay: str, hop: int | None = 1, beyond: str | None = None, certain: bool = True) -> Stage:
    return Stage("trace", "ok", at_relay, 0, {"path": {"at_relay": at_relay, "relay_hop": hop, "beyond": beyond,
                                                        "certain": certain, "note": "n"}})


@pytest.mark.parametrize("tcp_reason,path,code", [
    ("conn-refused", trace("answered-itself"), "no-forward"),
    ("conn-refused", trace("forwarded", beyond="refused"), "target-refused"),
    ("no-response", trace("forwarded", beyond="silent"), "dropped-after-relay"),
    ("admin-prohibited", trace("forwarded", beyond="rejected"), "rejected-after-relay"),
    ("host-unreach", trace("rejected"), "relay-rejected"),
    ("no-response", trace("silent", hop=None, certain=False), "relay-unreachable"),
    ("conn-refused", trace("silent", hop=None, certain=False), "unlocated"),
    ("conn-refused", None, "unlocated"),
    ("conn-refused", trace("answered-itself", hop=2, certain=False), "unlocated"),  # hop 1 was silent
])
def test_tcp_failures_map_to_codes(tcp_reason, path, code):
    stages = [Stage("tcp", "fail", tcp_reason, 1.0, {"sent": 1})] + ([path] if path else [])
    result = result_with(*stages)
    assert [f.code for f in result.findings] == [code]
    assert result.verdict == "unreachable" and not result.ok()


def tls_ok(**detail) -> Stage:
    base = {"sans": ["10.0.1.1", "kubernetes"], "dialled_in_sans": True, "sni": "10.0.1.1", "days_left": 300.0,
            "lifetime_days": 365.0, "not_yet_valid": False, "not_after": "2030-01-01"}
    return Stage("tls", "ok", "handshake", 1.0, {**base, **detail})


def http_ok(statuses=(200, 200, 200), git="v1.28.3") -> Stage:
    paths = {p: {"status": s} for p, s in zip(("/livez", "/readyz", "/version"), statuses)}
    detail = {"paths": paths}
    if git:
        detail["gitVersion"] = git
    return Stage("http", "ok", "ok", 1.0, detail)


TCP_OK = Stage("tcp", "ok", "syn-ack", 1.0, {"sent": 1, "loss_pct": 0.0})


@pytest.mark.parametrize("tls,http,codes,verdict", [
    (tls_ok(), http_ok(), [], "reachable"),
    (tls_ok(dialled_in_sans=False, sans=["192.168.10.5", "kubernetes"]), http_ok(), ["tls-san-mismatch"], "impaired"),
    (tls_ok(chain_verified=False, verify_error="unable to get local issuer certificate"), http_ok(),
     ["tls-untrusted"], "impaired"),
    (tls_ok(days_left=-1.0), http_ok(), ["tls-cert-expired"], "impaired"),
    (tls_ok(days_left=10.0), http_ok(), ["tls-cert-expiring"], "reachable"),
    (tls_ok(days_left=1.0, lifetime_days=2.0), http_ok(), [], "reachable"),  # short-lived: a third left
    (tls_ok(), http_ok((401, 401, 401), None), ["anonymous-auth-disabled"], "reachable"),
    (tls_ok(), http_ok((403, 403, 403), None), ["anonymous-forbidden"], "reachable"),
    (tls_ok(), http_ok((200, 500, 200)), ["apiserver-not-ready"], "reachable"),
    (tls_ok(), http_ok(git="v1.15.3"), ["version-below-1.16"], "reachable"),
    (tls_ok(), http_ok(git=None), ["not-kubernetes"], "reachable"),
    (Stage("tls", "fail", "handshake-failed", 1.0, {"error": "WRONG_VERSION_NUMBER"}), None,
     ["tls-handshake-failed"], "unreachable"),
])
def test_tls_and_http_findings(tls, http, codes, verdict):
    result = result_with(TCP_OK, tls, *([http] if http else []))
    assert [f.code for f in result.findings] == codes
    assert result.verdict == verdict


def test_san_fix_names_the_address_and_a_server_name():
    result = result_with(TCP_OK, tls_ok(dialled_in_sans=False, sans=["192.168.10.5", "kubernetes"]), http_ok())
    finding = result.findings[0]
    assert finding.message == "x509: certificate is valid for 192.168.10.5, kubernetes, not 10.0.1.1"
    assert "--apiserver-cert-extra-sans=10.0.1.1" in finding.fix and "tls-server-name: kubernetes" in finding.fix


def test_strict_fails_on_warnings():
    result = result_with(TCP_OK, tls_ok(), http_ok(git="v1.15.3"))
    assert result.ok() and not result.ok(strict=True)


def relay_stage(direct="syn-ack", ip_forward=True, **track) -> Stage:
    base = {"entries": 0, "unreplied": 0, "assured": 0, "unreplied_unmasqueraded": 0, "not_forwarded": 0,
            "sample": []}
    detail = {"listen_port": 16443, "ip_forward": ip_forward,
              "direct": {"target": "192.168.10.5:6443", "reason": direct}, "conntrack": {**base, **track}}
    return Stage("relay", "ok" if direct == "syn-ack" else "fail", direct, 1.0, detail)


@pytest.mark.parametrize("stage,codes", [
    (relay_stage(entries=2, unreplied=2, unreplied_unmasqueraded=2), ["reply-path"]),
    (relay_stage(entries=1, unreplied=1), ["target-silent"]),
    (relay_stage(entries=3, assured=3), ["forward-seen-working"]),
    (relay_stage(), ["no-tracked-forward"]),
    (relay_stage(direct="conn-refused"), ["target-refused"]),
    (relay_stage(direct="no-response"), ["target-unreachable"]),
    (relay_stage(ip_forward=False), ["ip-forward-off"]),
])
def test_from_relay_findings(stage, codes):
    result = result_with(stage)
    assert [f.code for f in result.findings] == codes


def test_from_relay_reads_the_relays_firewall_once_for_every_forward(monkeypatch):
    """--from-relay explains each forward's first packet against the relay's rules, read once per run
    (a relay with many forwards was dumped once per forward)."""
    import netfwd.probe.relay as relay

    reads = []
    monkeypatch.setattr(relay, "relay_stage", lambda port, target, timeout: relay_stage())
    monkeypatch.setattr(relay, "relay_firewall", lambda netns: reads.append(netns) or "no firewall in this test")
    endpoints = [Endpoint("*", 16443 + i, target=("192.168.10.5", 6443)) for i in range(5)]
    results = probe_all(endpoints, Options(from_relay=True, concurrency=5))
    assert reads == [None]
    for result in results:
        stage = next(s for s in result.stages if s.name == "relay")
        assert stage.detail["explain"] == {"error": "no firewall in this test"}


def test_every_code_has_a_one_line_fix():
    for code, (severity, fix) in CODES.items():
        assert severity in ("error", "warning", "info") and fix and "\n" not in fix, code


CONNTRACK = """\
tcp      6 117 SYN_SENT src=10.200.1.10 dst=10.200.1.1 sport=34734 dport=16443 [UNREPLIED] src=10.200.2.2 dst=10.200.1.10 sport=6443 dport=34734 mark=0 use=1
tcp      6 431999 ESTABLISHED src=10.200.1.10 dst=10.200.1.1 sport=40000 dport=16443 src=10.200.2.2 dst=10.200.2.1 sport=6443 dport=40000 [ASSURED] mark=0 use=1
udp      17 29 src=10.200.1.10 dst=10.200.1.1 sport=5353 dport=53 [UNREPLIED] src=10.200.1.1 dst=10.200.1.10 sport=53 dport=5353 mark=0 use=1
"""


def test_conntrack_parsing():
    flows = parse_conntrack(CONNTRACK)
    assert len(flows) == 2
    unreplied, assured = flows
    assert unreplied.unreplied and not unreplied.masqueraded and unreplied.state == "SYN_SENT"
    assert assured.assured and assured.masqueraded and assured.reply == ("10.200.2.2", "10.200.2.1", 6443, 40000)


@pytest.mark.parametrize("name,sans,ok", [
    ("10.0.1.1", ["10.0.1.1"], True), ("10.0.1.1", ["10.0.1.2", "10.0.1.1.nip.io"], False),
    ("api.example.com", ["*.example.com"], True), ("a.b.example.com", ["*.example.com"], False),
    ("Kubernetes", ["kubernetes"], True), ("fd00::1", ["fd00:0::1"], True),
])
def test_san_matching(name, sans, ok):
    assert in_sans(name, sans) is ok


@pytest.mark.parametrize("text,parsed", [("v1.15.3", (1, 15, 3)), ("v1.28.3+k3s1", (1, 28, 3)),
                                         ("v1.16", (1, 16, 0)), ("1.30.0-eks-abc", (1, 30, 0)), ("dev", None)])
def test_git_versions(text, parsed):
    assert parse_version(text) == parsed


# -- reports ------------------------------------------------------------------------------------------

def test_json_document_and_junit_for_one_and_many():
    good = result_with(TCP_OK, tls_ok(), http_ok())
    bad = result_with(Stage("tcp", "fail", "conn-refused", 1.0, {"sent": 1}), trace("answered-itself"),
                      Stage("tls", "skipped", "tcp-failed"), Stage("http", "skipped", "tcp-failed"))
    options = Options(timeout=1.5, count=2)
    one = document([good], options, 0.1)
    assert one["verdict"] == "reachable" and one["exit_code"] == 0 and one["findings"] == []
    assert [s["name"] for s in one["stages"]] == ["resolve", "tcp", "tls", "http"]
    assert one["options"]["timeout"] == 1.5 and one["options"]["count"] == 2  # echoed
    both = document([good, bad], options, 0.2)
    assert both["verdict"] == "unreachable" and both["exit_code"] == 1
    assert both["summary"] == {"endpoints": 2, "reachable": 1, "impaired": 0, "unreachable": 1}
    assert both["findings"] == [dict(bad.findings[0].as_dict(), endpoint=EP.dial)]
    assert {"name": "tcp", "ok": 1, "fail": 1, "skipped": 0} in both["stages"]
    json.dumps(both)  # serialisable as is
    suites = ET.fromstring(render_junit([good, bad], options, 0.2))
    assert suites.get("tests") == "11" and suites.get("failures") == "2"
    failed = [(c.get("name"), c.find("failure").get("message")) for c in suites.iter("testcase")
              if c.find("failure") is not None]
    assert failed == [("tcp", "conn-refused"), ("diagnosis", "no-forward")]


# -- real probes on loopback ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """TLS API-server stand-ins on 127.0.0.1: a good one, one whose SANs lack 127.0.0.1, one with
    anonymous auth off; plus a plain TCP server (not TLS). Stopped by PID afterwards."""
    from netfwd.lab.tls import make_tls

    work = tmp_path_factory.mktemp("probe-tls")
    procs, ports = [], {}
    specs = {"good": ([LO, "localhost", "kubernetes"], []), "nosan": (["10.9.9.9", "kubernetes"], []),
             "anon": ([LO], ["--no-anonymous"]), "old": ([LO], ["--git-version", "v1.15.3"])}
    try:
        for name, (sans, extra) in specs.items():
            files = make_tls(work, sans, prefix=name)
            ports[name] = free_port()
            procs.append(_spawn(["apiserver", str(ports[name]), "--bind", LO, "--cert", str(files.cert),
                                 "--key", str(files.key), *extra]))
        ports["plain"] = free_port()
        procs.append(_spawn(["whoami", str(ports["plain"]), "--bind", LO]))
        other = make_tls(work / "other", [LO], prefix="x")
        yield ports, work / "ca.pem", other.ca
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)


def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "netfwd.lab.servers", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, env=env, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def by_port(results):
    return {r.endpoint.port: r for r in results}


def test_loopback_stages_end_to_end(stand_ins):
    ports, ca, other_ca = stand_ins
    closed = free_port()
    eps = [Endpoint(LO, ports[n]) for n in ("good", "nosan", "anon", "old", "plain")] + [Endpoint(LO, closed)]
    results = by_port(probe_all(eps, Options(timeout=2, ca=str(ca), count=2, interval=0)))
    good = results[ports["good"]]
    assert good.verdict == "reachable" and good.findings == []
    tcp, tls, http = good.stage("tcp"), good.stage("tls"), good.stage("http")
    assert tcp.detail["received"] == 2 and set(tcp.detail["rtt_ms"]) == {"min", "avg", "max", "stddev"}
    assert tls.detail["chain_verified"] is True and tls.detail["dialled_in_sans"] is True
    assert tls.detail["subject"] == "CN=kube-apiserver" and tls.detail["version"].startswith("TLS")
    assert http.detail["gitVersion"] == "v1.28.3" and http.detail["paths"]["/livez"] == {"status": 200}
    assert [f.code for f in results[ports["nosan"]].findings] == ["tls-san-mismatch"]
    assert [f.code for f in results[ports["anon"]].findings] == ["anonymous-auth-disabled"]
    assert [f.code for f in results[ports["old"]].findings] == ["version-below-1.16"]
    assert [f.code for f in results[ports["plain"]].findings] == ["tls-handshake-failed"]
    refused = results[closed]
    assert refused.stage("tcp").reason == "conn-refused"
    # loopback as "the relay": the unprivileged trace sees its own RST at hop 1
    assert refused.stage("trace").reason == "answered-itself" and [f.code for f in refused.findings] == ["no-forward"]

    named = by_port(probe_all([Endpoint(LO, ports["nosan"])], Options(timeout=2, server_name="kubernetes")))
    assert named[ports["nosan"]].findings == []  # like tls-server-name in a kubeconfig
    untrusted = probe_all([Endpoint(LO, ports["good"])], Options(timeout=2, ca=str(other_ca)))[0]
    assert [f.code for f in untrusted.findings] == ["tls-untrusted"]


def test_cli_json_on_stdout_logs_on_stderr_and_exit_codes(stand_ins, tmp_path):
    ports, ca, _ = stand_ins
    code, out, err = run_cli("--target", f"{LO}:{ports['good']}", "--ca", str(ca), "-o", "json", "--timeout", "2")
    doc = json.loads(out)  # exactly one document
    assert code == 0 and doc["verdict"] == "reachable" and doc["stages"][-1]["detail"]["gitVersion"] == "v1.28.3"
    listing = tmp_path / "list.txt"
    listing.write_text(f"{LO}:{ports['good']} api\n{LO}:{ports['old']}\n")
    code, out, _ = run_cli("--targets-file", str(listing), "--until", "tls", "-o", "json", "--timeout", "2")
    doc = json.loads(out)
    assert code == 0 and [p["name"] for p in doc["probes"]] == ["api", None]
    assert all([s["name"] for s in p["stages"]] == ["resolve", "tcp", "tls"] for p in doc["probes"])
    code, _, _ = run_cli("--target", f"{LO}:{ports['old']}", "--strict", "--timeout", "2")
    assert code == 1  # the version warning fails under --strict
    code, out, _ = run_cli("--target", f"{LO}:{ports['anon']}", "--timeout", "2", "-o", "junit")
    assert code == 0 and ET.fromstring(out).get("failures") == "0"


def test_only_the_asked_addresses_are_dialled(monkeypatch):
    from netfwd.probe import connscan

    dialled: list[tuple[str, int]] = []
    real = connscan.make_socket

    class Recording:
        def __init__(self, sock):
            self._sock = sock

        def connect_ex(self, address):
            dialled.append(address)
            return self._sock.connect_ex(address)

        def __getattr__(self, name):
            return getattr(self._sock, name)

    monkeypatch.setattr(connscan, "make_socket", lambda host, ttl=None: Recording(real(host, ttl)))
    ports = [free_port() for _ in range(5)]
    asked = collect(None, None, tuple(f"{LO}:{p}" for p in ports + ports[:2]), None, (), False, lambda _: None)
    seen: list[ProbeResult] = []
    results = probe_all(asked, Options(timeout=1, count=3, interval=0, locate=False, until="tcp", concurrency=2),
                        seen.append)
    assert sorted(dialled) == sorted([(LO, p) for p in ports] * 3)
    assert len(results) == len(seen) == 5 and all(r.stage("tcp").reason == "conn-refused" for r in results)


def test_argv_is_rebuilt_without_netns():
    import click

    from netfwd.commands.probe import _argv_without, probe

    ctx = probe.make_context("probe", ["rules/example.yaml", "--via", "10.0.0.1", "--forward", "a", "--forward",
                                       "b", "--trace", "--netns", "x", "-o", "json", "--no-locate"])
    argv = _argv_without(ctx, "netns")
    assert "--netns" not in argv and argv[-2:] == ["--", "rules/example.yaml"]
    again = probe.make_context("probe", argv)
    assert {k: v for k, v in again.params.items() if k != "netns"} == \
        {k: v for k, v in ctx.params.items() if k != "netns"}
    assert isinstance(ctx, click.Context)


def test_ipv6_loopback():
    if not socket.has_ipv6 or not Path("/proc/net/if_inet6").exists():
        pytest.skip("no IPv6")
    result = probe_all([Endpoint("::1", free_port())], Options(timeout=1))[0]
    assert result.endpoint.dial.startswith("[::1]:")
    assert [(s.name, s.reason) for s in result.stages][1:3] == [("tcp", "conn-refused"), ("trace", "answered-itself")]
    assert [f.code for f in result.findings] == ["no-forward"]


def test_main_reports_exit_1_for_unreachable(capsys):
    port = free_port()
    with pytest.raises(SystemExit) as done:
        main(["probe", "--target", f"{LO}:{port}", "--timeout", "1", "-o", "json"])
    assert done.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["verdict"] == "unreachable" and doc["findings"][0]["code"] == "no-forward"
