"""`netfwd doctor` on a real relay (a lab namespace): break each condition on purpose, see exactly that
check fail (and, where it matters, the traffic fail with it), fix it, see the check pass.

The healthy relay is the spec applied with the iptables-restore dialect (NETFWD_ROOT in a temporary
directory, so sysctl.d lands there); on-prem has no route back, so masquerade really matters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netfwd import owned
from netfwd.dialects import get_dialect
from netfwd.doctor import doctor
from netfwd.relayfacts import LinuxRelay
from netfwd.spec import parse_spec

pytestmark = pytest.mark.netns

A, B = 16443, 6443


def spec_text(lab, *, masquerade: bool = True, listen_address: str | None = None) -> str:
    a = lab.addrs
    listen = f"{{port: {A}" + (f", address: {listen_address}}}" if listen_address else "}")
    return f"""version: 1
cluster: lab-doctor
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: apiserver
    listen: {listen}
    to: {{address: {a.onprem}, port: {B}}}
    masquerade: {str(masquerade).lower()}
    allow: {{cidrs: [{a.allowed_cidr}]}}
"""


class Relay:
    """A lab relay with netfwd applied, and doctor pointed at it."""

    def __init__(self, lab, root: Path, server: bool = True) -> None:
        self.lab, self.root = lab, root
        self.spec = parse_spec(spec_text(lab), "lab-doctor.yaml")
        if server:
            lab.start_server("onprem", B)

    def apply(self, text: str | None = None) -> None:
        spec = parse_spec(text, "lab-doctor.yaml") if text else self.spec
        script = get_dialect("iptables-restore").render(spec)
        self.lab.run("relay", ["env", f"NETFWD_ROOT={self.root}", "NETFWD_PERSIST=no", "bash", "-s"], input=script)

    def sh(self, command: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.lab.run("relay", ["sh", "-c", command], check=check)

    def doctor(self, spec=None, **options):
        return doctor(spec or self.spec, netns=self.lab.ns("relay"), root=str(self.root), **options)

    def errors(self, spec=None) -> set[str]:
        return {r.name for r in self.doctor(spec).results if r.status == "error"}

    def warnings(self, spec=None) -> set[str]:
        return {r.name for r in self.doctor(spec).results if r.status == "warning"}

    def reaches(self, patience: tuple[float, ...] = (1.0, 3.0)) -> bool:
        """A connection from the allowed client through the relay is answered by on-prem (a second,
        longer try: a loaded machine can stretch a working path past one second)."""
        a = self.lab.addrs
        return any(self.lab.whoami("client", a.relay_outside, A, source=a.client_allowed, timeout=t) == a.relay_inside
                   for t in patience)

    def blocked(self) -> bool:
        return not self.reaches(patience=(1.0,))


RESET = """set -e
nft flush ruleset
for t in filter nat mangle raw; do
  if grep -qx "$t" /proc/net/ip_tables_names 2>/dev/null; then
    iptables-legacy -t "$t" -F; iptables-legacy -t "$t" -X; fi
done
iptables-legacy -P FORWARD ACCEPT 2>/dev/null || true
sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.{ext}.rp_filter=0 net.ipv4.ip_forward=1
ip route replace {inside} dev {int} src {relay_inside}
ip route del {allowed} 2>/dev/null || true
conntrack -F >/dev/null 2>&1 || true
"""


@pytest.fixture(scope="module")
def shared_lab():
    """One lab for the break-and-fix tests (each starts from a reset relay); always torn down."""
    if __import__("os").geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from netfwd.lab import Lab

    lab = Lab.up()
    try:
        lab.start_server("onprem", B)
        yield lab
    finally:
        lab.down()


@pytest.fixture
def relay(shared_lab, tmp_path):
    """The shared lab's relay, reset to a clean slate, with the spec applied (sysctl.d under tmp_path)."""
    a = shared_lab.addrs
    shared_lab.run("relay", ["sh", "-c", RESET.format(ext=a.relay_outside_if, inside=a.inside_net,
                                                      int=a.relay_inside_if, relay_inside=a.relay_inside,
                                                      allowed=a.allowed_cidr)])
    r = Relay(shared_lab, tmp_path, server=False)
    r.apply()
    return r


def test_healthy_relay_passes_every_check(relay, tmp_path):
    """(How fast: scripts/bench.d/doctor.py and docs/performance.md — a benchmark, not a timed test.)"""
    report = relay.doctor()
    assert report.exit_code == 0, [(r.name, r.findings) for r in report.results if r.findings]
    assert {r.status for r in report.results} <= {"ok", "skipped"}
    assert relay.reaches()
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_text(relay.lab))
    argv = [sys.executable, "-m", "netfwd", "doctor", str(spec_file), "--netns", relay.lab.ns("relay"),
            "--root", str(tmp_path), "--output", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {c["status"] for c in json.loads(done.stdout)["checks"]} <= {"ok", "skipped"}


def test_ip_forward_off(relay):
    relay.lab.enable_forwarding(enabled=False)
    assert relay.errors() == {"ip-forward"}
    assert relay.blocked()
    relay.lab.enable_forwarding()
    assert relay.errors() == set()
    assert relay.reaches()


def test_ip_forward_not_persisted(relay):
    conf = relay.root / owned.sysctl_file("lab-doctor")
    saved = conf.read_text()
    conf.unlink()
    assert relay.errors() == {"ip-forward-persisted"}
    (relay.root / "etc/sysctl.d/10-off.conf").write_text("net.ipv4.ip_forward = 1\n")
    (relay.root / "etc/sysctl.conf").write_text("net/ipv4/ip_forward=0\n")  # read last: it wins
    assert relay.errors() == {"ip-forward-persisted"}
    (relay.root / "etc/sysctl.conf").unlink()
    assert relay.errors() == set()
    conf.write_text(saved)


def test_accept_ra_with_ipv6_forwarding(relay):
    """An RA-learned default route (simulated: `proto ra`) on an interface with accept_ra 1 is lost once
    IPv6 forwarding is on: error; accept_ra 2 fixes it now; at boot it must be persisted too."""
    ext = relay.lab.addrs.relay_outside_if
    conf = f"net.ipv6.conf.{ext}"
    try:
        relay.sh(f"sysctl -qw {conf}.disable_ipv6=0 {conf}.accept_ra=1 net.ipv6.conf.all.forwarding=0 && "
                 f"ip -6 route replace default via fe80::1 dev {ext} proto ra")
        assert relay.doctor().result("accept-ra").status == "ok"  # not forwarding: RAs are taken
        assert LinuxRelay(relay.lab.ns("relay"), force_pyroute2=True).ra_default_interfaces == [ext]
        relay.sh("sysctl -qw net.ipv6.conf.all.forwarding=1")
        result = relay.doctor().result("accept-ra")
        assert result.status == "error" and relay.errors() == {"accept-ra"}
        assert f"{conf}.accept_ra=2" in result.findings[0].fix
        relay.sh(f"sysctl -qw {conf}.accept_ra=2")
        assert relay.errors() == set()
        (relay.root / "etc/sysctl.d/91-v6.conf").write_text("net.ipv6.conf.all.forwarding = 1\n")
        assert relay.warnings() == {"accept-ra"}  # forwarding comes back at boot, accept_ra 2 does not
        (relay.root / "etc/sysctl.d/60-accept-ra.conf").write_text(f"{conf}.accept_ra = 2\n")
        assert relay.doctor().result("accept-ra").status == "ok"
        relay.sh(f"ip -6 route del default dev {ext} proto ra && sysctl -qw {conf}.accept_ra=1")
        assert relay.doctor().result("accept-ra").status == "ok"  # no RA-learned route: nothing to lose
    finally:
        relay.sh(f"ip -6 route del default dev {ext} proto ra 2>/dev/null; "
                 f"sysctl -qw net.ipv6.conf.all.forwarding=0 {conf}.accept_ra=1", check=False)


VENDOR_RULES = (f"iptables -t nat -A PREROUTING -p tcp --dport {A} -j DNAT --to-destination {{onprem}}:{B} && "
                f"iptables -t nat -A POSTROUTING -p tcp -d {{onprem}} --dport {B} -j MASQUERADE && "
                "sysctl -qw net.ipv4.ip_forward=1")


@pytest.mark.parametrize("blocker", [
    "iptables -P FORWARD DROP",  # Docker's policy
    "iptables -A FORWARD -j REJECT --reject-with icmp-host-prohibited",  # RHEL's iptables-services
])
def test_forward_chain_blocks_the_vendor_guides_rules(relay, blocker):
    r = relay
    r.sh("nft flush ruleset && " + VENDOR_RULES.format(onprem=r.lab.addrs.onprem))
    assert r.errors() == set() and r.reaches()
    r.sh(blocker)
    assert r.errors() == {"forward-chain"}
    assert r.blocked()
    report = r.doctor()
    message = report.result("forward-chain").findings[0].message
    assert ("FORWARD DROP" in message) if "-P" in blocker else ("REJECT" in message)
    r.apply()  # netfwd's jump to NETFWD-FWD at the top of FORWARD accepts the forward
    assert r.errors() == set()
    assert r.reaches()


def test_forward_dropped_by_another_nft_table_despite_netfwds_accept(relay):
    """An accept ends one base chain only: a foreign nft table's drop policy still wins."""
    relay.sh("nft 'add table inet guard; add chain inet guard fwdfilter { type filter hook forward priority 10; "
             "policy drop; }'")
    assert relay.errors() == {"forward-chain"}
    assert relay.blocked()
    relay.sh("nft add rule inet guard fwdfilter ct status dnat accept; nft add rule inet guard fwdfilter ct state "
             "established,related accept")
    assert relay.errors() == set()
    assert relay.reaches()


def test_strict_rp_filter_on_an_asymmetric_path(relay):
    a = relay.lab.addrs
    relay.sh(f"ip route add {a.allowed_cidr} via {a.onprem} dev {a.relay_inside_if}")  # replies leave by int0
    assert relay.errors() == set()  # rp_filter off: asymmetric but not dropped by the relay
    relay.sh("sysctl -qw net.ipv4.conf.all.rp_filter=1")
    assert relay.errors() == {"rp-filter"}
    relay.sh(f"sysctl -qw net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{a.relay_outside_if}.rp_filter=2")
    assert relay.errors() == set()
    relay.sh("sysctl -qw net.ipv4.conf.all.rp_filter=1")
    relay.sh(f"ip route del {a.allowed_cidr}")  # symmetric again: strict is harmless
    assert relay.errors() == set()
    assert relay.reaches()


def test_listen_port_taken_by_a_local_process(relay):
    pid = relay.lab.start_server("relay", A)
    try:
        assert relay.errors() == {"listen-port"}
        message = relay.doctor().result("listen-port").findings[0].message
        assert f"PID {pid}" in message and f":{A}/tcp" in message
    finally:
        relay.lab.stop_server(pid)
    assert relay.errors() == set()


def test_no_route_to_the_target(relay):
    a = relay.lab.addrs
    relay.sh(f"ip route del {a.inside_net} dev {a.relay_inside_if}")
    assert relay.errors() == {"target-route"}
    assert "no route" in relay.doctor().result("target-route").findings[0].message
    assert relay.blocked()
    relay.sh(f"ip route add {a.inside_net} dev {a.relay_inside_if} src {a.relay_inside}")
    assert relay.errors() == set()
    assert relay.reaches()


def test_legacy_and_nft_both_holding_rules(relay):
    rule = "-t filter -A INPUT -p tcp --dport 9999 -j ACCEPT"
    relay.sh(f"iptables-legacy {rule}")
    assert relay.errors() == {"iptables-backends"}
    relay.sh(f"iptables-legacy {rule.replace('-A', '-D')}")
    assert relay.errors() == set()


def test_missing_masquerade(relay):
    a = relay.lab.addrs
    relay.apply(spec_text(relay.lab, masquerade=False))  # the vendor guide's one-liner: DNAT only
    assert relay.errors() == {"masquerade"}
    assert relay.blocked()  # on-prem answers the client directly: no handshake
    assert relay.warnings() == {"conntrack-unreplied"}  # ... and conntrack shows it
    relay.apply()
    relay.sh(f"conntrack -D -p tcp --orig-port-dst {A} >/dev/null 2>&1 || true")  # the check's fix
    assert relay.errors() == set() and relay.warnings() == set()
    assert relay.reaches()
    assert relay.lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside


def test_listen_address_on_no_interface(relay):
    """The cloud trap: a rule on the public IP (TEST-NET here) never matches; nothing is sent to it."""
    a = relay.lab.addrs
    trap = parse_spec(spec_text(relay.lab, listen_address="203.0.113.10"), "lab-doctor.yaml")
    relay.apply(spec_text(relay.lab, listen_address="203.0.113.10"))
    assert relay.errors(trap) == {"listen-address"}
    assert relay.blocked()
    fixed = spec_text(relay.lab, listen_address=a.relay_outside)
    relay.apply(fixed)
    assert relay.errors(parse_spec(fixed, "lab-doctor.yaml")) == set()
    assert relay.reaches()


def test_drift_from_the_engines_last_apply(relay, tmp_path):
    """`netfwd apply` records what it wrote; a flush of its chain afterwards is drift (and a missing DNAT)."""
    from netfwd.spec import load_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(spec_text(relay.lab))
    done = subprocess.run([sys.executable, "-m", "netfwd", "apply", str(spec_file), "--netns", relay.lab.ns("relay"),
                           "--root", str(tmp_path), "--backend", "iptables", "--yes"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    spec = load_spec(spec_file)
    report = relay.doctor(spec)
    assert report.result("drift").status == "ok" and report.exit_code == 0
    relay.sh(f"iptables -t nat -F {owned.chain(spec.cluster, 'PRE')}")  # a firewall reload that flushed netfwd's chain
    assert relay.errors(spec) == {"dnat", "drift"}
    assert relay.blocked()


def test_ignore_downgrades_errors_and_routes_agree_with_pyroute2(relay):
    relay.lab.enable_forwarding(enabled=False)
    report = relay.doctor(ignore="ip-forward")
    result = report.result("ip-forward")
    assert report.exit_code == 0 and result.status == "warning" and result.findings[0].ignored
    assert relay.doctor(ignore="all").exit_code == 0
    from netfwd.relayfacts import LinuxRelay

    fast, slow = LinuxRelay(relay.lab.ns("relay")), LinuxRelay(relay.lab.ns("relay"), force_pyroute2=True)
    try:
        a = relay.lab.addrs
        for target in (a.onprem, a.client_allowed, "192.0.2.77"):
            assert fast.route(target) == slow.route(target)
        assert {k: sorted(map(str, v)) for k, v in fast.interfaces.items()} == \
               {k: sorted(map(str, v)) for k, v in slow.interfaces.items()}
        assert fast.default_interface == slow.default_interface
    finally:
        slow.close()


def test_firewalld_dialect_passes_and_raw_rules_under_firewalld_do_not(lab_fw, tmp_path):
    """The firewalld dialect's forward (native nft, table inet firewalld) reads as DNAT + accept + masquerade."""
    from netfwd.dialects import get_dialect

    r = Relay(lab_fw, tmp_path)
    script = get_dialect("firewalld").render(r.spec)
    lab_fw.relay_exec_fw(["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"], input=script)
    report = r.doctor()
    assert report.exit_code == 0 and r.reaches(), [(x.name, x.findings) for x in report.results if x.findings]
    assert "firewalld is running" in report.result("firewalld").summary
    r.sh(f"iptables -t nat -N {owned.chain(r.spec.cluster, 'PRE')}")  # raw netfwd rules its reload would drop
    assert r.errors() == {"firewalld"}


def test_nft_dialect_passes(relay):
    relay.sh("nft flush ruleset")
    script = get_dialect("nft").render(relay.spec)
    relay.lab.run("relay", ["env", f"NETFWD_ROOT={relay.root}", "NETFWD_PERSIST=no", "bash", "-s"], input=script)
    assert relay.errors() == set() and relay.warnings() == set()
    assert relay.reaches()
    relay.sh(f"nft flush chain {owned.nft_table(relay.spec.cluster)} postrouting")  # netfwd's own masquerade, gone
    assert relay.errors() == {"masquerade"}


def test_docker_chains_are_noticed(relay):
    relay.sh("iptables -N DOCKER-USER && iptables -I FORWARD 1 -j DOCKER-USER && iptables -P FORWARD DROP")
    report = relay.doctor()
    assert report.result("docker").status == "warning"
    assert report.result("forward-chain").status == "ok"  # netfwd's jump is still ahead of the DROP policy
    assert relay.reaches()
