"""A relay is someone's server: netfwd applied next to co-tenants, on the real engines, in a lab.

In the relay namespace: a real sshd (own config, keys and PID, bound to the lab's addresses) on 22
and 2222; a Docker-like FORWARD (policy DROP, DOCKER-USER jumped first, Docker's own established
accept after it) whose DOCKER-USER drop cuts one established, non-netfwd flow client -> on-prem
mid-connection; kube-proxy-like chains in nat and filter. For every iptables engine (live backends
and rendered scripts) and for nft, apply and remove must leave: sshd reachable, the cut flow cut,
the co-tenants' rules byte-identical, traffic merely routed through the relay to port A untouched -
and netfwd's own forward working. A spec forwarding sshd's port is refused (22: at validate;
2222, which only the live sockets reveal: at plan and apply).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfwd import owned, xtables
from netfwd.dialects import get_dialect

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parent.parent
A, B, FLOW = 16443, 6443, 7000
# the iptables dialect's script differs from iptables-restore's only in how it fills the same chains
ENGINES = ["apply:iptables", "apply:iptables-legacy", "apply:libiptc", "apply:nft",
           "script:iptables-restore", "script:nft"]

ECHO_SERVER = r"""
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", int(sys.argv[1]))); srv.listen(8); print("ready", flush=True)
def serve(conn):
    while True:
        data = conn.recv(4096)
        if not data:
            return
        conn.sendall(data)
while True:
    threading.Thread(target=serve, args=(srv.accept()[0],), daemon=True).start()
"""
# one long-lived connection; each stdin line is sent, and "echo" or "cut" printed
FLOW_CLIENT = r"""
import socket, sys
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3); print("ready", flush=True)
sock.settimeout(1.0)
for line in sys.stdin:
    try:
        sock.sendall(line.encode()); print("echo" if sock.recv(4096) else "closed", flush=True)
    except OSError:
        print("cut", flush=True)
"""
SSHD_CONFIG = """Port 22
Port 2222
ListenAddress 0.0.0.0
HostKey {key}
PidFile {pid}
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile none
StrictModes no
"""


def kube_and_docker(lab) -> list[list[str]]:
    a = lab.addrs
    return [
        # Docker: FORWARD policy DROP, DOCKER-USER first, then Docker's own accepts
        ["-t", "filter", "-P", "FORWARD", "DROP"],
        ["-t", "filter", "-N", "DOCKER-USER"], ["-t", "filter", "-A", "DOCKER-USER", "-j", "RETURN"],
        ["-t", "filter", "-A", "FORWARD", "-j", "DOCKER-USER"],
        ["-t", "filter", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
        ["-t", "filter", "-A", "FORWARD", "-d", f"{a.onprem}/32", "-p", "tcp", "-m", "multiport",
         "--dports", f"{FLOW},{A}", "-j", "ACCEPT"],
        # kube-proxy: service portals in nat, KUBE-FORWARD in filter
        ["-t", "nat", "-N", "KUBE-SERVICES"], ["-t", "nat", "-N", "KUBE-SVC-APISERVER"],
        ["-t", "nat", "-N", "KUBE-POSTROUTING"],
        ["-t", "nat", "-A", "PREROUTING", "-m", "comment", "--comment", "kubernetes service portals",
         "-j", "KUBE-SERVICES"],
        ["-t", "nat", "-A", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals",
         "-j", "KUBE-SERVICES"],
        ["-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules",
         "-j", "KUBE-POSTROUTING"],
        ["-t", "nat", "-A", "KUBE-SERVICES", "-d", "10.96.0.1/32", "-p", "tcp", "-m", "tcp", "--dport", "443",
         "-j", "KUBE-SVC-APISERVER"],
        ["-t", "nat", "-A", "KUBE-SVC-APISERVER", "-p", "tcp", "-j", "DNAT", "--to-destination", f"{a.onprem}:{B}"],
        ["-t", "nat", "-A", "KUBE-POSTROUTING", "-m", "mark", "!", "--mark", "0x4000/0x4000", "-j", "RETURN"],
        ["-t", "filter", "-N", "KUBE-FORWARD"], ["-t", "filter", "-A", "FORWARD", "-j", "KUBE-FORWARD"],
        ["-t", "filter", "-A", "KUBE-FORWARD", "-m", "conntrack", "--ctstate", "INVALID", "-j", "DROP"],
    ]


class SharedRelay:
    """The lab relay with its co-tenants, driven through one netfwd engine."""

    def __init__(self, lab, engine: str, tmp: Path) -> None:
        self.lab, self.tmp = lab, tmp
        self.how, self.name = engine.split(":")
        self.root, self.state = tmp / "root", tmp / "state"
        self.root.mkdir()
        legacy = self.name in ("iptables-legacy", "libiptc")
        self.iptables = "iptables-legacy" if legacy else "iptables-nft"
        self.children: list[subprocess.Popen] = []

    # -- processes (ours, stopped by PID) ---------------------------------------------------------
    def spawn(self, node: str, argv: list[str], **kwargs) -> subprocess.Popen:
        child = subprocess.Popen(["ip", "netns", "exec", self.lab.ns(node), *argv], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, start_new_session=True, **kwargs)
        self.children.append(child)
        return child

    def stop(self) -> None:
        for child in self.children:  # each leads its own session: its group is ours alone
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait(timeout=10)

    def start_sshd(self, reachable: tuple[int, ...] = (22, 2222)) -> None:
        key, pid = self.tmp / "ssh_host_ed25519_key", self.tmp / "sshd.pid"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        config = self.tmp / "sshd_config"
        config.write_text(SSHD_CONFIG.format(key=key, pid=pid))
        # its own mount namespace: /run/sshd (privilege separation) exists only there
        self.spawn("relay", ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                             'mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec "$0" -D -e -f "$1"',
                             "/usr/sbin/sshd", str(config)])
        for _ in range(50):
            if all(self.ssh_banner(port, patience=(0.5,)) for port in reachable):
                return
            time.sleep(0.1)
        raise AssertionError("sshd did not start in the relay namespace")

    def ssh_banner(self, port: int, patience: tuple[float, ...] = (0.5, 2.0, 5.0)) -> bool:
        """sshd greets within `patience` seconds (it never closes, so each try waits its whole timeout;
        sshd re-executes itself per connection, which a loaded machine can stretch past 0.5 s)."""
        for timeout in patience:
            done = self.lab.connect("client", self.lab.addrs.relay_outside, port, timeout=timeout)
            if done.data and done.data.startswith("SSH-2.0-"):
                return True
        return False

    def open_flow(self) -> subprocess.Popen:
        server = self.spawn("onprem", [sys.executable, "-c", ECHO_SERVER, str(FLOW)])
        assert server.stdout.readline().strip() == "ready"
        client = self.spawn("client", [sys.executable, "-c", FLOW_CLIENT, self.lab.addrs.onprem, str(FLOW)],
                            stdin=subprocess.PIPE)
        assert client.stdout.readline().strip() == "ready"
        return client

    @staticmethod
    def exchange(flow: subprocess.Popen) -> str:
        flow.stdin.write("ping\n")
        flow.stdin.flush()
        return flow.stdout.readline().strip()

    # -- the firewall -----------------------------------------------------------------------------
    def ipt(self, *args: str) -> None:
        self.lab.run("relay", [self.iptables, "-w", *args])

    def foreign(self) -> str:
        """Every rule and chain that is not netfwd's, as iptables-save prints it (counters dropped)."""
        text = self.lab.run("relay", [f"{self.iptables}-save"]).stdout
        owned = {*(c for chains in xtables.chains("lab-shared").values() for c in chains)}
        return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines()
                         if not line.startswith("#") and not any(chain in line for chain in owned))

    # -- netfwd -----------------------------------------------------------------------------------
    def netfwd(self, *args: str) -> subprocess.CompletedProcess:
        env = {"NETFWD_ROOT": str(self.root), "NETFWD_STATE_DIR": str(self.state)}
        argv = ["env", *(f"{k}={v}" for k, v in env.items()), sys.executable, "-m", "netfwd", *args]
        if args[0] in ("plan", "apply", "remove"):
            argv += ["--backend", self.name]
            if self.name == "firewalld":  # firewalld's D-Bus lives in the relay's own mount namespace
                pid = next(p.pid for p in self.lab.processes() if p.kind == "firewalld")
                argv = ["nsenter", "-t", str(pid), "-m", "-n", f"--wd={REPO}", "--", *argv]
            else:
                argv += ["--netns", self.lab.ns("relay")]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=REPO)

    def script(self, spec: Path, remove: bool) -> None:
        from netfwd.spec import load_spec

        dialect = get_dialect(self.name)
        loaded = load_spec(spec)
        text = dialect.render_remove(loaded) if remove else dialect.render(loaded)
        env = ["env", f"NETFWD_ROOT={self.root}", f"NETFWD_IPTABLES={self.iptables}"]
        if self.name == "firewalld":
            self.lab.relay_exec_fw([*env, "bash", "-s"], input=text, timeout=300)
        else:
            self.lab.run("relay", [*env, "bash", "-c", text])

    def apply(self, spec: Path) -> None:
        if self.how == "script":
            return self.script(spec, remove=False)
        done = self.netfwd("apply", str(spec), "--yes")
        assert done.returncode == 0, done.stderr

    def remove(self, spec: Path) -> None:
        if self.how == "script":
            return self.script(spec, remove=True)
        done = self.netfwd("remove")
        assert done.returncode == 0, done.stderr


def spec_text(lab, port: int, name: str = "apiserver") -> str:
    return f"""version: 1
cluster: lab-shared
relay: {{os: linux, interface: {lab.addrs.relay_outside_if}}}
forwards:
  - name: {name}
    listen: {{port: {port}}}
    to: {{address: {lab.addrs.onprem}, port: {B}}}
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_apply_and_remove_leave_the_co_tenants_alone(make_lab, tmp_path, engine):
    lab = make_lab(onprem_route_back=True)
    relay = SharedRelay(lab, engine, tmp_path)
    a = lab.addrs
    try:
        lab.enable_forwarding("relay")  # the relay already routes for its co-tenants
        relay.start_sshd()
        lab.start_server("onprem", B)
        for rule in kube_and_docker(lab):
            relay.ipt(*rule)
        if relay.name == "nft":  # an nft accept cannot overrule iptables' DROP: the admin admits it (see docs)
            relay.ipt("-I", "DOCKER-USER", "1", "-d", f"{a.onprem}/32", "-p", "tcp", "--dport", str(B), "-j", "ACCEPT")
        flow = relay.open_flow()
        assert relay.exchange(flow) == "echo"
        relay.ipt("-I", "DOCKER-USER", "1", "-p", "tcp", "--dport", str(FLOW), "-j", "DROP")
        assert relay.exchange(flow) == "cut"  # the co-tenant's decision, mid-connection
        before = relay.foreign()
        passing = lab.connect("client", a.onprem, A)  # routed through the relay to on-prem's port A
        assert passing.reason == "conn-refused"  # nothing listens there: on-prem itself refuses

        spec = tmp_path / "shared.yaml"
        spec.write_text(spec_text(lab, A))
        relay.apply(spec)
        assert lab.whoami("client", a.relay_outside, A) == a.relay_inside  # netfwd's forward works
        assert relay.ssh_banner(22) and relay.ssh_banner(2222)
        assert relay.exchange(flow) == "cut"  # no netfwd accept re-admitted the established flow
        assert lab.connect("client", a.onprem, A).reason == "conn-refused"  # not captured by the DNAT
        assert relay.foreign() == before  # Docker's and kube-proxy's rules, byte for byte and in order

        relay.remove(spec)
        assert relay.ssh_banner(22) and relay.ssh_banner(2222)
        assert relay.exchange(flow) == "cut"
        assert relay.foreign() == before
        assert not lab.connect("client", a.relay_outside, A)
    finally:
        relay.stop()


@pytest.mark.parametrize("backend", ["iptables", "nft"])
def test_a_port_sshd_serves_is_refused(make_lab, tmp_path, backend):
    lab = make_lab()
    relay = SharedRelay(lab, f"apply:{backend}", tmp_path)
    try:
        relay.start_sshd()
        spec = tmp_path / "ssh.yaml"
        spec.write_text(spec_text(lab, 22))
        for command in (("validate", str(spec)), ("plan", str(spec)), ("apply", str(spec), "--yes")):
            done = relay.netfwd(*command)
            assert done.returncode == 2 and "Traceback" not in done.stderr
            assert f"{spec}:6: forwards[0].listen.port: 22 is a management port" in done.stderr
        spec.write_text(spec_text(lab, 2222))  # not a default management port: only sshd's socket says so
        assert relay.netfwd("validate", str(spec)).returncode == 0
        for command in (("plan", str(spec)), ("apply", str(spec), "--yes")):
            done = relay.netfwd(*command)
            assert done.returncode == 2, done.stderr
            assert f"{spec}:6: forwards[0].listen.port: 2222/tcp is already served on this relay by sshd" \
                in done.stderr.strip().splitlines()[-1]
        assert relay.ssh_banner(2222)
        assert "NETFWD" not in lab.run("relay", ["iptables-nft-save"]).stdout
        assert "netfwd" not in lab.run("relay", ["nft", "list", "tables"]).stdout
        spec.write_text(spec_text(lab, 2222).replace("{port: 2222}", "{port: 2222, takeover: true}"))
        assert relay.netfwd("plan", str(spec)).returncode == 4  # taken over on purpose: planned
    finally:
        relay.stop()


@pytest.mark.parametrize("engine", ["apply:nft", "script:nft"])
def test_ipv6_forwarding_keeps_accepting_router_advertisements(make_lab, tmp_path, engine):
    """IPv6 forwarding on makes the kernel ignore RAs where accept_ra=1 (the RA-learned default route
    then expires): those interfaces get accept_ra=2, now and persisted; 0 stays 0; remove forgets it."""
    lab = make_lab()
    relay = SharedRelay(lab, engine, tmp_path)
    a = lab.addrs

    def accept_ra(interface: str) -> str:
        return lab.run("relay", ["cat", f"/proc/sys/net/ipv6/conf/{interface}/accept_ra"]).stdout.strip()

    lab.run("relay", ["sysctl", "-qw", f"net.ipv6.conf.{a.relay_outside_if}.accept_ra=1",
                      f"net.ipv6.conf.{a.relay_inside_if}.accept_ra=0"])
    spec = tmp_path / "v6.yaml"
    spec.write_text("version: 1\ncluster: lab-v6\nforwards:\n"
                    "  - {name: api6, listen: {port: 16443}, to: {address: 'fd00:0:0:2::2', port: 6443}}\n")
    relay.apply(spec)
    assert accept_ra(a.relay_outside_if) == "2" and accept_ra(a.relay_inside_if) == "0"
    assert lab.run("relay", ["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip() == "1"
    persisted = (relay.root / owned.sysctl_file("lab-v6")).read_text().splitlines()
    wanted = f"net/ipv6/conf/{a.relay_outside_if}/accept_ra = 2"
    assert wanted in persisted and persisted.index(wanted) < persisted.index("net.ipv6.conf.all.forwarding = 1")
    assert not any(a.relay_inside_if in line for line in persisted)
    relay.remove(spec)
    assert not (relay.root / owned.sysctl_file("lab-v6")).exists()


@pytest.mark.parametrize("engine", ["apply:firewalld", "script:firewalld"])
def test_firewalld_relay_keeps_sshd_reachable_and_refuses_its_port(make_lab, tmp_path, engine):
    """firewalld owns the firewall (no Docker-like chains here): sshd stays reachable through apply
    and remove, and a forward of a port sshd serves is refused before anything changes."""
    lab = make_lab(firewalld=True)
    relay = SharedRelay(lab, engine, tmp_path)
    a = lab.addrs
    try:
        relay.start_sshd(reachable=(22,))  # firewalld's public zone admits ssh (22) only
        lab.start_server("onprem", B)
        spec = tmp_path / "shared.yaml"
        spec.write_text(spec_text(lab, A))
        relay.apply(spec)
        assert lab.whoami("client", a.relay_outside, A) == a.relay_inside
        assert relay.ssh_banner(22)
        relay.remove(spec)
        assert relay.ssh_banner(22) and not lab.connect("client", a.relay_outside, A)
        spec.write_text(spec_text(lab, 2222))
        done = relay.netfwd("plan", str(spec))
        assert done.returncode == 2 and "2222/tcp is already served on this relay by sshd" in done.stderr
    finally:
        relay.stop()
