"""`netfwd probe` against real failures made in the lab: every diagnosis code from the issue's
acceptance list is produced by breaking the path on purpose, then probed from the client (or,
with --from-relay, from the relay) through `--netns`, exactly as a user would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from netfwd.dialects import get_dialect
from netfwd.spec import parse_spec

pytestmark = pytest.mark.netns

# name: (listen port A, target port B, masquerade)
FORWARDS = {
    "good": (16443, 6443, True),     # SANs include the relay: everything right
    "anon": (16444, 6444, True),     # --anonymous-auth=false: 401
    "old": (16445, 6445, True),      # gitVersion v1.15.3
    "sans": (16446, 6446, True),     # kubeadm's default SANs: not the relay's address
    "down": (16447, 6447, True),     # nothing listens on B
    "fwdrop": (16448, 6448, True),   # DROP in the relay's FORWARD chain
    "fwreject": (16449, 6449, True),  # REJECT (admin-prohibited) in the relay's FORWARD chain
    "nomasq": (16450, 6450, False),  # DNAT without masquerade; on-prem has no route back
}


def probe(lab, node: str, *args: str, timeout: float = 60) -> tuple[int, dict | str, str]:
    """Run `netfwd probe --netns <node> ARGS`; the JSON document when -o json is among ARGS."""
    done = subprocess.run([sys.executable, "-m", "netfwd", "probe", "--netns", lab.ns(node), *args],
                          capture_output=True, text=True, timeout=timeout)
    out: dict | str = done.stdout
    if "json" in args:
        assert done.stdout.startswith("{"), f"exit {done.returncode}: {done.stderr}"
        out = json.loads(done.stdout)
    return done.returncode, out, done.stderr


def spec_text(lab) -> str:
    lines = ["version: 1", "cluster: probe-lab", f"relay: {{os: linux, interface: {lab.addrs.relay_outside_if}}}",
             "forwards:"]
    for name, (a, b, masq) in FORWARDS.items():
        lines.append(f"  - {{name: {name}, listen: {{port: {a}}}, to: {{address: {lab.addrs.onprem}, port: {b}}}, "
                     f"masquerade: {str(masq).lower()}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def broken_lab(tmp_path_factory):
    """One lab holding every failure at once (one forward per failure, see FORWARDS), shared by
    the tests of this module, which only probe it; always torn down."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from netfwd.lab import Lab

    lab = Lab.up()
    try:
        yield _break(lab, tmp_path_factory.mktemp("probe-lab"))
    finally:
        lab.down()


def _break(lab, tmp_path):
    a = lab.addrs
    relay_san = [a.relay_outside]
    lab.start_server("onprem", 6443, kind="apiserver", extra_sans=relay_san)
    lab.start_server("onprem", 6444, kind="apiserver", extra_sans=relay_san, anonymous=False)
    lab.start_server("onprem", 6445, kind="apiserver", extra_sans=relay_san, git_version="v1.15.3")
    lab.start_server("onprem", 6446, kind="apiserver")
    for port in (6448, 6449, 6450):
        lab.start_server("onprem", port)
    spec_file = tmp_path / "probe-lab.yaml"
    spec_file.write_text(spec_text(lab))
    script = get_dialect("iptables").render(parse_spec(spec_file.read_text(), str(spec_file)))
    lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"], input=script)
    for rule in (["-p", "tcp", "-d", a.onprem, "--dport", "6448", "-j", "DROP"],
                 ["-p", "tcp", "-d", a.onprem, "--dport", "6449", "-j", "REJECT", "--reject-with",
                  "icmp-admin-prohibited"]):
        lab.run("relay", ["iptables", "-I", "FORWARD", "1", *rule])
    # the relay itself: REJECT vs DROP on ports that are not forwarded
    lab.run("relay", ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "17001", "-j", "REJECT",
                      "--reject-with", "tcp-reset"])
    lab.run("relay", ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "17002", "-j", "REJECT",
                      "--reject-with", "icmp-admin-prohibited"])
    lab.run("relay", ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", "17003", "-j", "DROP"])
    return lab, spec_file


def codes(probe_doc: dict) -> list[str]:
    return [f["code"] for f in probe_doc["findings"]]


def test_every_failure_in_the_lab_gets_its_code(broken_lab):
    lab, spec_file = broken_lab
    a = lab.addrs
    rc, doc, err = probe(lab, "client", str(spec_file), "--via", a.relay_outside, "--ca", str(lab.ca_file),
                         "--timeout", "1", "-o", "json")
    assert rc == 1, err
    by_name = {p["name"]: p for p in doc["probes"]}
    assert list(by_name) == list(FORWARDS)  # exactly the forwards asked for, in spec order
    assert all(p["dial"] == f"{a.relay_outside}:{FORWARDS[n][0]}" for n, p in by_name.items())

    good = by_name["good"]
    assert good["verdict"] == "reachable" and codes(good) == []
    http = next(s for s in good["stages"] if s["name"] == "http")
    assert http["detail"]["gitVersion"] == "v1.28.3"
    tls = next(s for s in good["stages"] if s["name"] == "tls")
    assert tls["detail"]["dialled_in_sans"] is True and tls["detail"]["chain_verified"] is True
    tcp = next(s for s in good["stages"] if s["name"] == "tcp")
    assert tcp["reason"] == "syn-ack" and tcp["detail"]["loss_pct"] == 0.0

    assert "anonymous-auth-disabled" in codes(by_name["anon"])
    assert by_name["anon"]["verdict"] == "reachable"  # 401 still proves the path
    assert "version-below-1.16" in codes(by_name["old"])
    assert "tls-san-mismatch" in codes(by_name["sans"]) and by_name["sans"]["verdict"] == "impaired"
    mismatch = next(f for f in by_name["sans"]["findings"] if f["code"] == "tls-san-mismatch")
    assert f"--apiserver-cert-extra-sans={a.relay_outside}" in mismatch["fix"] and "tls-server-name" in mismatch["fix"]

    assert codes(by_name["down"]) == ["target-refused"]
    assert codes(by_name["fwdrop"]) == ["dropped-after-relay"]
    assert codes(by_name["nomasq"]) == ["dropped-after-relay"]
    assert codes(by_name["fwreject"]) == ["rejected-after-relay"]
    rejected = next(s for s in by_name["fwreject"]["stages"] if s["name"] == "tcp")
    assert rejected["reason"] == "admin-prohibited"
    for name in ("down", "fwdrop", "nomasq"):
        trace = next(s for s in by_name[name]["stages"] if s["name"] == "trace")
        assert trace["detail"]["method"] == "connect" and trace["reason"] == "forwarded"
        assert trace["detail"]["hops"][0] == {"ttl": 1, "reply": "time-exceeded", "from": a.relay_outside,
                                              "rtt_ms": trace["detail"]["hops"][0]["rtt_ms"]}

    # concurrency: several probes wait out a 1 s timeout, yet the run takes about one timeout
    each = [p["elapsed_ms"] for p in doc["probes"]]
    assert sorted(each)[-2] > 900  # at least two probes waited out the timeout...
    assert doc["elapsed_ms"] < max(each) + 1000 and doc["elapsed_ms"] < 0.7 * sum(each)  # ...side by side
    assert doc["verdict"] == "unreachable" and doc["summary"]["reachable"] == 3  # good, anon, old

    # from the relay: the reply path (no masquerade) vs the target vs FORWARD drop
    rc, relay_doc, _ = probe(lab, "relay", str(spec_file), "--from-relay", "--forward", "nomasq", "--forward",
                             "down", "--forward", "fwdrop", "--forward", "good", "--timeout", "1", "-o", "json")
    assert rc == 1
    on_relay = {p["name"]: p for p in relay_doc["probes"]}
    assert "reply-path" in codes(on_relay["nomasq"])
    sample = next(s for s in on_relay["nomasq"]["stages"] if s["name"] == "relay")["detail"]["conntrack"]
    assert sample["unreplied_unmasqueraded"] >= 1
    assert codes(on_relay["down"]) == ["target-refused"]
    assert codes(on_relay["fwdrop"]) == ["dropped-by-rule", "no-tracked-forward"]
    named = next(f for f in on_relay["fwdrop"]["findings"] if f["code"] == "dropped-by-rule")
    assert "FORWARD" in named["message"] and "DROP" in named["message"]  # the rule that drops, by explain
    assert codes(on_relay["good"]) == ["forward-seen-working"] and on_relay["good"]["verdict"] == "reachable"


def test_reject_and_drop_reasons_and_no_forward(broken_lab):
    lab, _ = broken_lab
    r = lab.addrs.relay_outside
    rc, doc, err = probe(lab, "client", "--target", f"{r}:17000", "--target", f"{r}:17001", "--target",
                         f"{r}:17002", "--target", f"{r}:17003", "--timeout", "1", "--until", "tcp", "-o", "json")
    assert rc == 1, err
    got = {p["dial"]: (next(s for s in p["stages"] if s["name"] == "tcp")["reason"], codes(p)) for p in doc["probes"]}
    assert got == {f"{r}:17000": ("conn-refused", ["no-forward"]),  # nothing listens, no DNAT: the relay's RST
                   f"{r}:17001": ("conn-refused", ["no-forward"]),  # REJECT --reject-with tcp-reset
                   f"{r}:17002": ("admin-prohibited", ["relay-rejected"]),
                   f"{r}:17003": ("no-response", ["relay-unreachable"])}
    tcp = next(s for s in doc["probes"][2]["stages"] if s["name"] == "tcp")
    assert tcp["detail"]["icmp"] == {"kind": "admin-prohibited", "from": r, "type": 3, "code": 13}


def test_raw_trace_table_and_junit(broken_lab):
    lab, spec_file = broken_lab
    a = lab.addrs
    rc, doc, _ = probe(lab, "client", str(spec_file), "--via", f"{a.relay_outside}:16448", "--trace",
                       "--timeout", "1", "--max-hops", "4", "-o", "json")
    assert rc == 1 and codes(doc) == ["dropped-after-relay"]
    trace = next(s for s in doc["stages"] if s["name"] == "trace")
    assert trace["detail"]["method"] == "raw"
    assert trace["detail"]["route"] == {"interface": a.client_if, "gateway": None, "source": a.client_allowed,
                                        "on_link": True}
    hops = {h["ttl"]: h for h in trace["detail"]["hops"]}
    assert hops[1]["reply"] == "time-exceeded" and hops[1]["from"] == a.relay_outside
    assert hops[64]["reply"] == "none"

    rc, doc, _ = probe(lab, "client", "--via", f"{a.relay_outside}:17000", "--trace", "--timeout", "1",
                       "--max-hops", "3", "-o", "json")
    assert rc == 1 and codes(doc) == ["no-forward"]
    hops = next(s for s in doc["stages"] if s["name"] == "trace")["detail"]["hops"]
    assert hops[0] == {"ttl": 1, "reply": "rst", "from": a.relay_outside, "rtt_ms": hops[0]["rtt_ms"]}

    rc, table, _ = probe(lab, "client", "--via", f"{a.relay_outside}:16443", "--timeout", "2")
    assert rc == 0 and "reachable" in table and "gitVersion v1.28.3" in table and "tls-san-mismatch" not in table
    rc, xml, _ = probe(lab, "client", "--via", f"{a.relay_outside}:16447", "--timeout", "1", "-o", "junit")
    assert rc == 1
    suite = ET.fromstring(xml).find("testsuite")
    failed = {case.get("name"): case.find("failure").get("message")
              for case in suite.iter("testcase") if case.find("failure") is not None}
    assert failed == {"tcp": "conn-refused", "diagnosis": "target-refused"}


def test_relay_behind_a_router_is_hop_two(make_lab, tmp_path):
    lab = make_lab(router=True)
    a = lab.addrs
    lab.start_server("onprem", 6443, kind="apiserver", extra_sans=[a.relay_outside])
    spec = parse_spec(f"""
version: 1
cluster: hop-two
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - {{name: api, listen: {{port: 16443}}, to: {{address: {a.onprem}, port: 6443}}}}
  - {{name: gone, listen: {{port: 16447}}, to: {{address: {a.onprem}, port: 6447}}}}
""", "hop-two.yaml")
    lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"],
            input=get_dialect("iptables").render(spec))
    rc, doc, err = probe(lab, "client", "--target", f"{a.relay_outside}:16447", "--target",
                         f"{a.relay_outside}:17000", "--target", f"{a.relay_outside}:16443",
                         "--timeout", "1", "-o", "json")
    assert rc == 1, err
    gone, unforwarded, api = doc["probes"]
    assert codes(gone) == ["target-refused"] and codes(unforwarded) == ["no-forward"]
    for failed in (gone, unforwarded):  # one swept the TTLs, the other reused the relay's hop
        path = next(s for s in failed["stages"] if s["name"] == "trace")["detail"]["path"]
        assert path["relay_hop"] == 2 and path["certain"]
    assert api["verdict"] == "reachable"
    rc, doc, _ = probe(lab, "client", "--via", f"{a.relay_outside}:17000", "--trace", "--timeout", "1",
                       "--max-hops", "3", "-o", "json")
    trace = next(s for s in doc["stages"] if s["name"] == "trace")["detail"]
    assert trace["route"]["gateway"] == a.router_client and trace["path"]["relay_hop"] == 2
    assert [(h["ttl"], h["reply"], h["from"]) for h in trace["hops"]] == [
        (1, "time-exceeded", a.router_client), (2, "rst", a.relay_outside), (64, "rst", a.relay_outside)]
    assert codes(doc) == ["no-forward"]
