"""The iptables dialects, run for real: client -> relay:A -> on-prem:B through namespaces and veths.

On-prem has no route back via the relay, so only a working MASQUERADE completes the handshake.
Both dialects run against both iptables backends (nf_tables and legacy).
"""

from __future__ import annotations

import pytest

from netfwd import owned
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


# (relay userland, iptables): nf_tables and legacy here; CentOS 7's 1.4.21 (legacy, `-w` without seconds)
USERLANDS = [("modern", "iptables"), ("modern", "iptables-legacy"), ("centos7", "iptables")]


@pytest.fixture
def relay_lab(make_lab, request):
    """make_lab(userland=...) for a test parametrized with `userland` (centos7: built once per session)."""
    userland = request.getfixturevalue("userland_name")
    if userland == "centos7":
        request.getfixturevalue("centos7_userland")
    return make_lab(userland=userland)


@pytest.mark.parametrize(("userland_name", "iptables"), USERLANDS)
@pytest.mark.parametrize("dialect_name", ["iptables", "iptables-restore"])
def test_forward_carries_traffic_only_from_allowed_sources(relay_lab, tmp_path, dialect_name, iptables,
                                                            userland_name):
    lab = relay_lab
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
    assert (tmp_path / owned.sysctl_file(spec.cluster)).read_text().count("net.ipv4.ip_forward = 1") == 1
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
    assert not (tmp_path / owned.sysctl_file(spec.cluster)).exists()
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


@pytest.mark.parametrize(("userland_name", "iptables"), [USERLANDS[0], USERLANDS[2]])
def test_a_failure_after_the_first_write_is_undone_and_said(relay_lab, tmp_path, iptables, userland_name):
    """No partial change: a step failing late (here: writing the boot payload) puts the old state back."""
    lab, dialect = relay_lab, get_dialect("iptables-restore")
    first = spec_for(lab)
    run_script(lab, dialect.render(first), tmp_path, iptables)
    before = saved(lab, iptables)
    sysctl_before = (tmp_path / owned.sysctl_file(first.cluster)).read_text()
    payload = tmp_path / owned.xtables_file(first.cluster)
    payload.unlink()
    payload.parent.rmdir()
    payload.parent.write_text("a file where the payload's directory goes: writing the payload fails\n")
    done = lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", f"NETFWD_IPTABLES={iptables}", "bash", "-s"],
                   input=dialect.render(spec_for(lab, target="10.99.0.1")), check=False)
    assert done.returncode != 0
    assert "failed" in done.stderr and "the owned chains" in done.stderr and "undone" in done.stderr
    assert "applied" not in done.stderr
    assert saved(lab, iptables) == before  # the first spec's rules, exactly
    assert (tmp_path / owned.sysctl_file(first.cluster)).read_text() == sysctl_before


@pytest.mark.parametrize(("userland_name", "iptables"), [USERLANDS[0], USERLANDS[2]])
def test_remove_reports_an_error_as_an_error(relay_lab, tmp_path, iptables, userland_name):
    """A chain that cannot be deleted (someone else jumps to it) is exit 1, never `removed`."""
    lab, dialect = relay_lab, get_dialect("iptables")
    spec = spec_for(lab)
    run_script(lab, dialect.render(spec), tmp_path, iptables)
    lab.run("relay", [iptables, "-t", "filter", "-N", "FOREIGN"])
    lab.run("relay", [iptables, "-t", "filter", "-A", "FOREIGN", "-j", owned.chain(spec.cluster, "FWD")])
    done = lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", f"NETFWD_IPTABLES={iptables}", "bash", "-s"],
                   input=dialect.render_remove(spec), check=False)
    assert done.returncode == 1, done.stderr
    assert f"removing chain filter/{owned.chain(spec.cluster, 'FWD')} failed" in done.stderr and "already removed: jump" in done.stderr
    assert "netfwd: removed" not in done.stderr
    lab.run("relay", [iptables, "-t", "filter", "-F", "FOREIGN"])
    again = run_script(lab, dialect.render_remove(spec), tmp_path, iptables)
    assert "netfwd: removed" in again.stderr
    assert not any("NETFWD" in line for line in saved(lab, iptables))
    assert "nothing to remove" in run_script(lab, dialect.render_remove(spec), tmp_path, iptables).stderr
