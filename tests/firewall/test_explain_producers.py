"""`netfwd explain` on rulesets the real producers made, in a lab relay: netfwd's own dialects
(iptables-restore, nft), a Docker- and kube-proxy-like layout with netfwd on top, and firewalld.
For allowed, denied and unrelated packets, explain's answer (read live) must match what the
kernel does to packets really sent from the lab client."""

from __future__ import annotations

import pytest

from netfwd.dialects import get_dialect
from netfwd.spec import parse_spec
from tests.firewall.explain_diff import Bench, expectation, observation

pytestmark = pytest.mark.netns

LISTEN, TARGET = 8443, 443  # both served by the bench's servers (tests/firewall/explain_diff.PORTS)


def spec(lab):
    a = lab.addrs
    return parse_spec(f"""version: 1
cluster: lab-explain
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: api
    listen: {{port: {LISTEN}}}
    to: {{address: {a.onprem}, port: {TARGET}}}
    allow: {{cidrs: [{a.allowed_cidr}]}}
""", "lab-explain.yaml")


def packets(bench) -> list[dict]:
    e = bench.env
    allowed, denied = e.sources
    return [{"src": allowed, "dst": e.relay_out, "proto": "tcp", "dport": LISTEN, "sport": 31001},   # forwarded
            {"src": denied, "dst": e.relay_out, "proto": "tcp", "dport": LISTEN, "sport": 31002},    # not whitelisted
            {"src": allowed, "dst": e.relay_out, "proto": "tcp", "dport": 80, "sport": 31003},       # unrelated, local
            {"src": allowed, "dst": e.targets[0], "proto": "tcp", "dport": 9000, "sport": 31004},    # routed through
            {"src": denied, "dst": e.targets[1], "proto": "udp", "dport": 8080, "sport": 31005},
            {"src": allowed, "dst": e.relay_in, "proto": "udp", "dport": 443, "sport": 31006}]


def compare(bench, sent: list[dict]) -> list:
    answers = bench.explain(sent)
    seen = bench.send(sent)
    wrong = [(p, expectation(a), observation(s)) for p, a, s in zip(sent, answers, seen)
             if observation(s) not in expectation(a)]
    assert not wrong, wrong
    return answers


@pytest.fixture
def bench(lab_route_back):
    return Bench(lab_route_back)


@pytest.fixture
def lab_route_back(make_lab):
    return make_lab(onprem_route_back=True)


def run_script(bench, tmp_path, dialect: str) -> None:
    text = get_dialect(dialect).render(spec(bench.lab))
    bench.lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"], input=text,
                  timeout=120)


@pytest.mark.parametrize("dialect", ["iptables-restore", "nft"])
def test_netfwd_dialects_forward_the_whitelisted_and_nothing_else(bench, tmp_path, dialect):
    bench.reset()
    run_script(bench, tmp_path, dialect)
    answers = compare(bench, packets(bench))
    forwarded = answers[0]
    assert (forwarded.verdict, str(forwarded.to_address), forwarded.to_port, str(forwarded.source_seen)) == \
        ("forward", bench.env.targets[0], TARGET, bench.env.relay_in)
    assert answers[1].verdict == "local" and answers[2].verdict == "local"  # not DNATed: the relay's own port
    assert any(step.action == "dnat" for step in forwarded.path)


def test_docker_and_kube_proxy_layout_with_netfwd_on_top(bench, tmp_path):
    from tests.test_cotenants import kube_and_docker

    bench.reset()
    for args in kube_and_docker(bench.lab):
        bench.lab.run("relay", ["iptables", *args])
    run_script(bench, tmp_path, "iptables-restore")
    e = bench.env
    sent = packets(bench) + [
        {"src": e.sources[0], "dst": "10.96.0.1", "proto": "tcp", "dport": 443, "sport": 31010}]  # a kube service
    answers = compare(bench, sent)
    assert answers[0].verdict == "forward"
    chains = {step.chain for a in answers for step in a.path}
    assert {"DOCKER-USER", "KUBE-SERVICES"} <= chains


def test_firewalld_relay(make_lab, tmp_path):
    lab = make_lab(onprem_route_back=True, firewalld=True)
    bench = Bench(lab)
    text = get_dialect("firewalld").render(spec(lab))
    lab.relay_exec_fw(["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"], input=text, timeout=300)
    sent = packets(bench)
    answers = bench.explain(sent)
    seen = bench.send(sent)
    decided = [(p, expectation(a), observation(s)) for p, a, s in zip(sent, answers, seen) if a.verdict != "unknown"]
    assert all(got in want for _, want, got in decided), decided
    assert answers[0].verdict == "forward" and len(decided) == len(sent), [a.reason for a in answers]
