"""The iptables dialects, run for real: client -> relay:A -> on-prem:B through namespaces and veths.

On-prem has no route back via the relay, so only a working MASQUERADE completes the handshake.
Both dialects run against both iptables backends (nf_tables and legacy).
"""

from __future__ import annotations

import pytest

from netfwd.dialects import get_dialect
from netfwd.spec import parse_spec

pytestmark = pytest.mark.netns

A, B = 16443, 6443
FOREIGN = [  # rules somebody else owns, in every table and built-in chain netfwd touches
    ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "RETURN"],
    ["-t", "nat", "-A", "POSTROUTING", "-p", "udp", "--dport", "9999", "-j", "RETURN"],
    ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9998", "-j", "RETURN"],
    ["-t", "filter", "-A", "FORWARD", "-p", "tcp", "--dport", "9997", "-j", "ACCEPT"],
]


def spec_for(lab, *, target=None, masquerade=True):
    a = lab.addrs
    return parse_spec(f"""
version: 1
cluster: lab-test
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: apiserver
    listen: {{port: {A}}}
    to: {{address: {target or a.onprem}, port: {B}}}
    masquerade: {str(masquerade).lower()}
    allow: {{cidrs: [{a.allowed_cidr}]}}
""", "lab-spec.yaml")


def run_script(lab, text, root, iptables):
    return lab.run("relay", ["env", f"NETFWD_ROOT={root}", f"NETFWD_IPTABLES={iptables}", "bash", "-s"],
                   input=text)


def saved(lab, iptables):
    """The ruleset without comments and counters: comparable across runs."""
    out = lab.run("relay", [f"{iptables}-save"]).stdout
    return [line.split(" [")[0] if line.startswith(":") else line
            for line in out.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("iptables", ["iptables", "iptables-legacy"])
@pytest.mark.parametrize("dialect_name", ["iptables", "iptables-restore"])
def test_forward_carries_traffic_only_from_allowed_sources(lab, tmp_path, dialect_name, iptables):
    dialect, a = get_dialect(dialect_name), lab.addrs
    spec = spec_for(lab)
    lab.start_server("onprem", B, kind="whoami")
    for rule in FOREIGN:
        lab.run("relay", [iptables, *rule])
    before = saved(lab, iptables)
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).reason == "conn-refused"

    run_script(lab, dialect.render(spec), tmp_path, iptables)
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside  # masqueraded
    denied = lab.connect("client", a.relay_outside, A, source=a.client_denied, timeout=1)
    assert not denied.ok  # no DNAT for it: the relay itself refuses
    assert (tmp_path / "etc/sysctl.d/90-netfwd.conf").read_text().count("net.ipv4.ip_forward = 1") == 1
    live = saved(lab, iptables)
    assert dialect.parse("\n".join(live)) == dialect.expected(spec)
    for rule in FOREIGN:
        assert lab.run("relay", [iptables, *rule[:2], "-C", *rule[3:]], check=False).returncode == 0

    run_script(lab, dialect.render(spec), tmp_path, iptables)  # idempotent: nothing changes
    assert saved(lab, iptables) == live

    run_script(lab, dialect.render_remove(spec), tmp_path, iptables)
    after = saved(lab, iptables)
    assert after == before  # foreign rules intact, every netfwd object gone
    assert not any("NETFWD" in line or "netfwd" in line for line in after)
    assert not (tmp_path / "etc/sysctl.d/90-netfwd.conf").exists()
    run_script(lab, dialect.render_remove(spec), tmp_path, iptables)  # removing twice is fine
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).reason == "conn-refused"


def test_changed_target_replaces_the_forward(lab, tmp_path):
    dialect = get_dialect("iptables-restore")
    run_script(lab, dialect.render(spec_for(lab, target="10.99.0.1")), tmp_path, "iptables")
    new = spec_for(lab)
    run_script(lab, dialect.render(new), tmp_path, "iptables")
    live = "\n".join(saved(lab, "iptables"))
    assert "10.99.0.1" not in live
    assert dialect.parse(live) == dialect.expected(new)


def test_without_masquerade_the_reply_path_breaks(lab, tmp_path):
    """The vendor guide's one-liner: DNAT alone, on-prem has no route back -> no handshake."""
    a = lab.addrs
    lab.start_server("onprem", B, kind="whoami")
    run_script(lab, get_dialect("iptables").render(spec_for(lab, masquerade=False)), tmp_path, "iptables")
    result = lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1)
    assert not result.ok and result.reason == "no-response"
