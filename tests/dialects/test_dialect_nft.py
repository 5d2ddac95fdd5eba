"""The nft dialect: text properties, the kernel's own reading of the ruleset, and real traffic in a lab.

Bundled examples are covered by tests/dialects/test_golden.py (golden files, round trip, shellcheck); this
file adds the nft-only edge cases in tests/fixtures/specs/, `nft -c` and kernel round trips in a
scratch namespace, and the full apply / re-apply / change / remove cycle through the lab.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd import owned
from netfwd.dialects import get_dialect
from netfwd.dialects.nft import COMMENT_MAX, comment, ruleset
from netfwd.errors import UnsupportedByDialect
from netfwd.model import Relay, Spec
from netfwd.spec import load_spec, parse_spec
from tests.linux_specs import linux_specs

REPO = Path(__file__).resolve().parents[2]
NFT = get_dialect("nft")
FIXTURES = sorted((REPO / "tests/fixtures/specs").glob("*.yaml"))
EXAMPLES = [REPO / "rules/example.yaml", REPO / "rules/example-multi.yaml"]
GOLDEN = REPO / "tests/golden/fixtures"
A, B = 16443, 6443
# Run scripts with a private, empty /run/dbus: firewall-cmd then cannot reach a host firewalld.
ISOLATED = ["unshare", "-m", "--propagation", "private", "sh", "-c",
            '[ -d /run/dbus ] && mount -t tmpfs tmpfs /run/dbus; exec env NETFWD_ROOT="$0" bash -s']


def nft_specs(paths=FIXTURES):
    return [pytest.param(p, id=p.stem) for p in paths if _renders(p)]


def _renders(path: Path) -> bool:
    try:
        NFT.check(load_spec(path))
        return True
    except UnsupportedByDialect:
        return False


# -- text ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", nft_specs())
def test_fixture_specs_match_golden_files(path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_spec(path.relative_to(REPO))
    for name, text in ((f"{spec.cluster}.nft.sh", NFT.render(spec)),
                       (f"{spec.cluster}.nft.remove.sh", NFT.render_remove(spec))):
        golden = GOLDEN / path.stem / name
        if os.environ.get("NETFWD_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.read_text() == text, f"{name} differs from {golden} (NETFWD_UPDATE_GOLDEN=1 to refresh)"


@pytest.mark.parametrize("path", nft_specs(FIXTURES + EXAMPLES))
def test_render_then_parse_gives_back_the_forwards(path):
    spec = load_spec(path)
    assert NFT.parse(NFT.render(spec)) == NFT.expected(spec)
    assert NFT.parse(ruleset(spec)) == NFT.expected(spec)  # the bare nft -f file too


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("path", nft_specs())
def test_fixture_scripts_pass_shellcheck(path, tmp_path):
    spec = load_spec(path)
    for name, text in (("apply.sh", NFT.render(spec)), ("remove.sh", NFT.render_remove(spec))):
        (tmp_path / name).write_text(text)
        done = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(tmp_path / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


@settings(max_examples=200, deadline=None)
@given(linux_specs())
def test_property_render_then_parse_is_expected(spec):
    assert NFT.parse(NFT.render(spec)) == NFT.expected(spec)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(ruleset(load_spec(REPO / "rules/example-multi.yaml")).splitlines())
                | st.text(max_size=80), max_size=60))
def test_property_parser_survives_any_text(lines):
    """Live output may be cut off or mixed with other text: the parser never raises on it."""
    for essence in NFT.parse("\n".join(lines)):
        assert isinstance(essence.listen_port, int) and essence.protocol in ("tcp", "udp")


def test_long_comments_are_shortened_but_stay_unique():
    spec = load_spec(REPO / "tests/fixtures/specs/nft-ipv6-local.yaml")
    tags = [comment(spec, f) for f in spec.forwards]
    assert max(len(t) for t in tags) == COMMENT_MAX and len(set(tags)) == len(tags)
    assert all(t.startswith(f"netfwd:{spec.cluster}/") for t in tags)


def test_parser_ignores_other_tables_and_untagged_rules():
    spec = load_spec(REPO / "rules/example-multi.yaml")
    foreign = """table ip filter {
\tmap ports {
\t\ttype inet_service : verdict
\t\telements = { 22 : accept,
\t\t\t     80 : drop }
\t}

\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\ttcp dport 1 dnat ip to 10.9.9.9:1 comment "netfwd:lab-multi/apiserver"
\t}
}
"""
    own = ruleset(spec).replace("\tchain forward {\n", "\tchain forward {\n\t\ttcp dport 22 accept\n")
    assert NFT.parse(foreign + own + foreign) == NFT.expected(spec)
    assert NFT.parse(foreign) == []


def test_windows_relays_are_rejected():
    spec = Spec(cluster="w", relay=Relay("windows"), forwards=())
    with pytest.raises(UnsupportedByDialect, match="relay.os"):
        NFT.render(spec)


# -- nft in a scratch namespace -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch_ns():
    if os.geteuid() != 0 or shutil.which("nft") is None:
        pytest.skip("needs root and nft")
    name = f"nfwd-nft-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def nft_in(ns: str, *args: str, text: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=text, capture_output=True,
                          text=True, check=True)


@pytest.mark.netns
@pytest.mark.parametrize("path", nft_specs(FIXTURES + EXAMPLES))
def test_nft_check_accepts_the_ruleset(scratch_ns, path):
    nft_in(scratch_ns, "-c", "-f", "-", text=ruleset(load_spec(path)))


@pytest.mark.netns
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=linux_specs())
def test_property_kernel_reads_back_what_was_rendered(scratch_ns, spec):
    """Load the ruleset, let the kernel print it, parse that: the same forwards. Loading twice changes nothing."""
    nft_in(scratch_ns, "-f", "-", text=ruleset(spec))
    live = nft_in(scratch_ns, "list", "table", *owned.nft_table(spec.cluster).split()).stdout
    assert NFT.parse(live) == NFT.expected(spec)
    nft_in(scratch_ns, "-f", "-", text=ruleset(spec))
    assert nft_in(scratch_ns, "list", "ruleset").stdout == nft_in(scratch_ns, "list", "ruleset").stdout
    assert nft_in(scratch_ns, "list", "table", *owned.nft_table(spec.cluster).split()).stdout == live


# -- real traffic through the lab -----------------------------------------------------------------------

def lab_spec(lab, *, target: str | None = None, port: int = B, protocol: str = "tcp", local: bool = False,
             masquerade: bool = True) -> Spec:
    a = lab.addrs
    return parse_spec(f"""
version: 1
cluster: lab-nft
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: apiserver
    listen: {{port: {A}}}
    to: {{address: {target or a.onprem}, port: {port}}}
    protocol: {protocol}
    masquerade: {str(masquerade).lower()}
    local: {str(local).lower()}
    allow: {{cidrs: [{a.allowed_cidr}]}}
""", "lab-nft.yaml")


def run_script(lab, text: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
    return lab.run("relay", [*ISOLATED, str(root)], input=text, check=check)


def live_ruleset(lab) -> str:
    return lab.run("relay", ["nft", "list", "ruleset"]).stdout


@pytest.mark.netns
def test_apply_carries_traffic_only_from_allowed_sources_then_remove_cleans_up(lab, tmp_path):
    a = lab.addrs
    spec = lab_spec(lab)
    lab.start_server("onprem", B, kind="whoami")
    lab.run("relay", ["nft", "-f", "-"], input="table ip other {\n\tchain c {\n\t\ttcp dport 9 accept\n\t}\n}\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/nftables.conf").write_text("#!/usr/sbin/nft -f\nflush ruleset\n")
    before = live_ruleset(lab)
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).reason == "conn-refused"

    done = run_script(lab, NFT.render(spec), tmp_path)
    assert "applied 1 forward(s)" in done.stderr
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside  # masqueraded
    assert not lab.connect("client", a.relay_outside, A, source=a.client_denied, timeout=1).ok
    live = live_ruleset(lab)
    assert NFT.parse(live) == NFT.expected(spec)
    assert "table ip other" in live
    assert (tmp_path / owned.sysctl_file(spec.cluster)).read_text().count("net.ipv4.ip_forward = 1") == 1
    saved = (tmp_path / owned.nft_file(spec.cluster)).read_text()
    assert NFT.parse(saved) == NFT.expected(spec)
    assert (tmp_path / "etc/nftables.conf").read_text() == "#!/usr/sbin/nft -f\nflush ruleset\n"  # its own unit loads it
    lab.run("relay", ["nft", "-c", "-f", str(tmp_path / owned.nft_file(spec.cluster))])  # boot file is loadable

    run_script(lab, NFT.render(spec), tmp_path)  # idempotent: same ruleset
    assert live_ruleset(lab) == live

    run_script(lab, NFT.render_remove(spec), tmp_path)
    assert live_ruleset(lab) == before  # the foreign table intact, nothing of netfwd's
    assert "netfwd" not in live_ruleset(lab)
    assert (tmp_path / "etc/nftables.conf").read_text() == "#!/usr/sbin/nft -f\nflush ruleset\n"
    assert not (tmp_path / owned.sysctl_file(spec.cluster)).exists()
    assert not (tmp_path / owned.nft_file(spec.cluster)).exists()
    run_script(lab, NFT.render_remove(spec), tmp_path)  # removing twice is fine
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).reason == "conn-refused"


@pytest.mark.netns
def test_local_forwards_connections_made_on_the_relay(lab, tmp_path):
    a = lab.addrs
    lab.start_server("onprem", B, kind="whoami")
    run_script(lab, NFT.render(lab_spec(lab, local=False)), tmp_path)
    assert not lab.connect("relay", a.relay_outside, A, timeout=1).ok  # output skips prerouting
    run_script(lab, NFT.render(lab_spec(lab, local=True)), tmp_path)
    assert lab.whoami("relay", a.relay_outside, A) == a.relay_inside


@pytest.mark.netns
def test_changed_target_replaces_the_forward_and_forgets_old_udp_mappings(lab, tmp_path):
    a = lab.addrs
    old, new = B, B + 1
    for port in (old, new):
        lab.start_server("onprem", port, kind="whoami", udp=True)
    run_script(lab, NFT.render(lab_spec(lab, port=old, protocol="udp")), tmp_path)
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    flows = lab.run("relay", ["conntrack", "-L", "-p", "udp", "--reply-port-src", str(old)]).stdout
    assert f"dport={A}" in flows  # the UDP mapping to the old target is live

    spec = lab_spec(lab, port=new, protocol="udp")
    run_script(lab, NFT.render(spec), tmp_path)
    live = live_ruleset(lab)
    assert NFT.parse(live) == NFT.expected(spec) and f":{old} " not in live
    flows = lab.run("relay", ["conntrack", "-L", "-p", "udp", "--reply-port-src", str(old)]).stdout
    assert f"dport={A}" not in flows  # forgotten: the next datagram is NATed to the new target
    assert lab.connect("client", a.relay_outside, A, source=a.client_allowed, udp=True).ok
    flows = lab.run("relay", ["conntrack", "-L", "-p", "udp", "--reply-port-src", str(new)]).stdout
    assert f"dport={A}" in flows
    run_script(lab, NFT.render(spec), tmp_path)  # re-applying leaves unchanged mappings alone
    flows = lab.run("relay", ["conntrack", "-L", "-p", "udp", "--reply-port-src", str(new)]).stdout
    assert f"dport={A}" in flows


@pytest.mark.netns
def test_refuses_when_firewalld_owns_the_firewall(lab, tmp_path):
    lab.run("relay", ["nft", "add", "table", "inet", "firewalld"])
    done = run_script(lab, NFT.render(lab_spec(lab)), tmp_path, check=False)
    assert done.returncode == 3 and "--dialect firewalld" in done.stderr
    assert "netfwd" not in live_ruleset(lab)
    assert not (tmp_path / "etc").exists()


@pytest.mark.netns
def test_warns_about_a_forward_drop_in_another_table(lab, tmp_path):
    lab.run("relay", ["nft", "-f", "-"], input="table ip filter {\n\tchain FORWARD {\n"
                                                "\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n")
    done = run_script(lab, NFT.render(lab_spec(lab)), tmp_path)
    assert "policy drop in: ip filter" in done.stderr


V6_SERVER = """
import socket, sys
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("::", int(sys.argv[1])))
server.listen(8)
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall((peer[0] + "\\n").encode())
    conn.close()
"""


@pytest.mark.netns
def test_ipv6_forward_carries_traffic(lab, tmp_path):
    """The lab is IPv4; this test adds IPv6 addresses (on-prem again without a route back) and its own server."""
    a, net = lab.addrs, "fd00:6e66"
    plan = {"client": [(a.client_if, f"{net}:1::10/64"), (a.client_if, f"{net}:1::200/64")],
            "relay": [(a.relay_outside_if, f"{net}:1::1/64"), (a.relay_inside_if, f"{net}:2::1/64")],
            "onprem": [(a.onprem_if, f"{net}:2::2/64")]}
    for node, addresses in plan.items():
        for dev, address in addresses:
            lab.run(node, ["ip", "-6", "addr", "add", address, "dev", dev, "nodad"])
    lab.run("client", ["ip", "-6", "route", "add", "default", "via", f"{net}:1::1"])
    server = subprocess.Popen(["ip", "netns", "exec", lab.ns("onprem"), sys.executable, "-c", V6_SERVER, str(B)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        spec = parse_spec(f"""
version: 1
cluster: lab-nft6
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: apiserver6
    listen: {{port: {A}}}
    to: {{address: "{net}:2::2", port: {B}}}
    allow: {{cidrs: ["{net}:1::10/128"]}}
""", "lab-nft6.yaml")
        run_script(lab, NFT.render(spec), tmp_path)
        assert "net.ipv6.conf.all.forwarding = 1" in (tmp_path / owned.sysctl_file(spec.cluster)).read_text()
        assert lab.whoami("client", f"{net}:1::1", A, source=f"{net}:1::10") == f"{net}:2::1"  # masqueraded
        assert not lab.connect("client", f"{net}:1::1", A, source=f"{net}:1::200", timeout=1).ok
        assert NFT.parse(live_ruleset(lab)) == NFT.expected(spec)
    finally:
        server.terminate()
        server.wait(timeout=5)
