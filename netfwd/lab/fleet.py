"""`FleetLab`: many relays behind real SSH, to rehearse (and test) rollouts to a fleet with Ansible.

    controller --+                      +-- ext0 relay1 int0 -- onprem1
    client     --+-- wan (bridge br0) --+-- ext0 relay2 int0 -- onprem2
                                        +-- ...           ... -- onpremN

Each relay (and the vantage host, `client`) can run its own sshd - own config, host key and
authorized key in the lab's work directory, bound to the host's lab address, started and stopped
by PID - so `ansible-playbook` in the controller namespace reaches it over SSH as it would reach a
real relay. Everything else is the single-relay lab's (netfwd.lab.core): the state file written
before anything is created, `down()` from that record alone, the servers, clients and firewalld.
Namespaces share one filesystem: `inventory()` gives every relay its own netfwd state dir and root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from netfwd import trust
from netfwd.errors import EnvironmentProblem, InputError
from netfwd.lab import netns
from netfwd.lab.core import Lab, _claim
from netfwd.lab.state import LAB_NAME_RE, ns_name
from netfwd.lab.topology import FleetAddresses, choose_block, fleet_plan
from netfwd.safefiles import write_atomic

SSH_PORT = 22
SSHD_START_TIMEOUT = 10.0
# No connection sharing: a ControlPersist master would outlive the run (and its sshd session too).
SSH_ARGS = ("-o ControlMaster=no -o ControlPersist=no -o StrictHostKeyChecking=no "
            "-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR")

SSHD_CONFIG = """ListenAddress {address}:{port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
LogLevel INFO
"""


class FleetLab(Lab):
    """A fleet lab: `relays` relays (relay1..N, each with onprem1..N behind it), a controller, a client."""

    @classmethod
    def up(cls, relays: int = 5, name: str | None = None) -> "FleetLab":  # type: ignore[override]
        """Build a fresh fleet lab; on failure nothing is left."""
        netns.check_environment()
        if name is not None and not LAB_NAME_RE.match(name):
            raise InputError(f"{name!r} is not a lab name: use 1-12 lowercase letters or digits", field="name")
        addrs = fleet_plan(choose_block(netns.host_networks()), relays)
        state = _claim(name, False, False, addrs)  # type: ignore[arg-type]
        state.kind = "fleet"
        state.save()
        lab = cls(state)
        try:
            lab._build()
        except BaseException:
            lab.down()
            raise
        return lab

    # -- topology --------------------------------------------------------------------------------

    @property
    def addrs(self) -> FleetAddresses:  # type: ignore[override]
        return FleetAddresses.from_dict(self._state.addrs)

    @property
    def relays(self) -> tuple[str, ...]:
        return tuple(r.node for r in self.addrs.relays)

    @property
    def nodes(self) -> tuple[str, ...]:
        a = self.addrs
        return ("controller", "client", "wan", *(r.node for r in a.relays), *(r.onprem_node for r in a.relays))

    def address(self, node: str) -> str:
        """The node's address on the shared outside segment (or an on-prem host's only address)."""
        a = self.addrs
        if node == "controller":
            return a.controller
        if node == "client":
            return a.client_allowed
        for relay in a.relays:
            if node == relay.node:
                return relay.outside
            if node == relay.onprem_node:
                return relay.onprem
        raise ValueError(f"lab {self.name} has no addressed node {node!r}")

    def _build(self) -> None:
        state, a = self._state, self.addrs
        for node in self.nodes:
            if netns.exists(ns_name(self.name, node)):
                raise EnvironmentProblem(f"network namespace {ns_name(self.name, node)} already exists")
        state.namespaces = [ns_name(self.name, node) for node in self.nodes]
        state.save()  # intent first: a crash from here on is recoverable by `down`
        for name in state.namespaces:
            netns.create(name)
        wan = self.ns("wan")
        ports = {"ctl": ("controller", "eth0"), "cli": ("client", "eth0")}
        ports.update({f"r{i}": (r.node, r.outside_if) for i, r in enumerate(a.relays, 1)})
        for port, (node, ifname) in ports.items():
            netns.veth(wan, port, self.ns(node), ifname)
        for relay in a.relays:
            netns.veth(self.ns(relay.node), relay.inside_if, self.ns(relay.onprem_node), "eth0")
        _bridge(wan, "br0", list(ports))
        wan_len = a.wan_net.split("/")[1]
        netns.configure(self.ns("controller"), {"eth0": [f"{a.controller}/{wan_len}"]})
        netns.configure(self.ns("client"), {"eth0": [f"{a.client_allowed}/{wan_len}", f"{a.client_denied}/{wan_len}"]})
        for relay in a.relays:
            inside_len = relay.inside_net.split("/")[1]
            netns.configure(self.ns(relay.node), {relay.outside_if: [f"{relay.outside}/{wan_len}"],
                                                  relay.inside_if: [f"{relay.inside}/{inside_len}"]})
            netns.configure(self.ns(relay.onprem_node), {"eth0": [f"{relay.onprem}/{inside_len}"]})
        state.complete = True
        state.save()

    def start_apiservers(self, port: int = 6443) -> dict[str, int]:
        """The API-server stand-in on every on-prem host; relay node -> server PID."""
        return {r.node: self.start_server(r.onprem_node, port, kind="apiserver",
                                          sans=[r.onprem, "kubernetes", "localhost"]) for r in self.addrs.relays}

    # -- SSH ---------------------------------------------------------------------------------------

    @property
    def ssh_dir(self) -> Path:
        return self.workdir / "ssh"

    @property
    def ssh_key(self) -> Path:
        """The private key the controller logs in with (made on first use; authorized on every sshd)."""
        key = self.ssh_dir / "id_ed25519"
        if not key.exists():
            self.ssh_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            _keygen(key, "netfwd-fleet-lab")
            shutil.copyfile(key.with_suffix(".pub"), self.ssh_dir / "authorized_keys")
        return key

    def start_sshd(self, node: str) -> int:
        """A real sshd in `node` (inside its firewalld's mount namespace, if one runs there, so
        sessions see its private D-Bus), listening on the node's lab address only; returns its PID."""
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if not Path(sshd).exists():
            raise EnvironmentProblem("sshd is not installed (the fleet lab needs openssh-server)")
        key, home = self.ssh_key, self.ssh_dir / node
        home.mkdir(parents=True, exist_ok=True)
        host_key = home / "host_ed25519"
        if not host_key.exists():
            _keygen(host_key, node)
        config = home / "sshd_config"
        write_atomic(config, SSHD_CONFIG.format(address=self.address(node), port=SSH_PORT, host_key=host_key,
                                                pid_file=home / "sshd.pid", authorized=key.parent / "authorized_keys"))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's compiled-in privilege separation dir
        log = home / "sshd.log"
        argv = [sshd, "-D", "-e", "-f", str(config)]
        firewalld = [p.pid for p in self.processes() if p.kind == "firewalld" and p.node == node and p.alive()]
        full = (["nsenter", "-t", str(firewalld[0]), "-m", "-n", "--", *argv] if firewalld
                else netns.exec_argv(self.ns(node), argv))
        err = trust.open_file(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)  # as root: never via a link
        try:
            child = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                     start_new_session=True)
        finally:
            os.close(err)
        self.adopt(child, node, "sshd", argv, SSH_PORT, str(log))  # `ip netns exec` and nsenter exec: the PID is sshd's
        deadline = time.monotonic() + SSHD_START_TIMEOUT
        while "Server listening on" not in log.read_text(errors="replace"):
            if child.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text(errors="replace").strip().splitlines()[-3:]
                self.stop_server(child.pid)
                raise EnvironmentProblem(f"sshd in {node} did not start: {' / '.join(detail) or 'no output'}")
            time.sleep(0.02)
        return child.pid

    def sshd_pid(self, node: str) -> int | None:
        for process in self.processes():
            if process.kind == "sshd" and process.node == node and process.alive():
                return process.pid
        return None

    def stop_sshd(self, node: str) -> None:
        pid = self.sshd_pid(node)
        if pid is not None:
            self.stop_server(pid)

    # -- Ansible -----------------------------------------------------------------------------------

    def host_dir(self, node: str) -> Path:
        """The relay's own slice of the shared filesystem: netfwd's state dir and root live here."""
        return self.workdir / "hosts" / node

    def inventory(self, python: str | None = None, relay_vars: dict[str, dict] | None = None,
                  relays: Sequence[str] | None = None) -> dict[str, Any]:
        """An Ansible inventory: group `relays` (each with its own netfwd_state_dir and netfwd_root)
        and host `vantage` (the client), all reached over SSH as root with the lab's key."""
        common = {"ansible_user": "root", "ansible_ssh_private_key_file": str(self.ssh_key),
                  "ansible_ssh_args": SSH_ARGS, "ansible_python_interpreter": python or sys.executable}
        hosts = {}
        for node in relays or self.relays:
            base = self.host_dir(node)
            (base / "root").mkdir(parents=True, exist_ok=True)
            hosts[node] = {"ansible_host": self.address(node), "netfwd_state_dir": str(base / "state"),
                           "netfwd_root": str(base / "root"), **(relay_vars or {}).get(node, {})}
        return {"all": {"vars": common, "children": {
            "relays": {"hosts": hosts},
            "vantages": {"hosts": {"vantage": {"ansible_host": self.address("client")}}}}}}

    def ansible_env(self, collections: str | Path, forks: int = 5) -> dict[str, str]:
        """Environment for ansible-playbook in the controller: the lab's own ANSIBLE_HOME, no ansible.cfg
        from elsewhere, pipelining, no SSH connection sharing."""
        home = self.workdir / "ansible"
        (home / "tmp").mkdir(parents=True, exist_ok=True)
        empty = home / "ansible.cfg"
        write_atomic(empty, "[defaults]\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(ANSIBLE_CONFIG=str(empty), ANSIBLE_HOME=str(home), ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
                   ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_PIPELINING="True",
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_SSH_ARGS=SSH_ARGS, ANSIBLE_FORKS=str(forks),
                   ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_TIMEOUT="10",
                   ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_DEPRECATION_WARNINGS="False")
        return env

    def ansible_argv(self, tool: str, args: Sequence[str]) -> list[str]:
        """`tool` (ansible-playbook, ansible) from this Python's environment, run in the controller."""
        program = Path(sys.executable).parent / tool
        return netns.exec_argv(self.ns("controller"), [str(program if program.exists() else tool), *args])

    def status(self, rules: bool = True) -> dict:
        from netfwd.lab.status import collect

        return collect(self, rules=False)


COLLECTION_SOURCE = Path(__file__).resolve().parents[2] / "ansible" / "netfwd" / "relay"


def install_collection(dest: Path) -> Path:
    """Build the netfwd.relay collection from this checkout (`ansible-galaxy collection build`) and
    install the tarball under `dest`; returns the path for ANSIBLE_COLLECTIONS_PATH."""
    if not (COLLECTION_SOURCE / "galaxy.yml").exists():
        raise EnvironmentProblem(f"no collection source at {COLLECTION_SOURCE} (run from a netfwd checkout)")
    galaxy = Path(sys.executable).parent / "ansible-galaxy"
    tool = str(galaxy) if galaxy.exists() else "ansible-galaxy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env["ANSIBLE_HOME"] = str(dest / "home")
    built = dest / "build"
    _galaxy([tool, "collection", "build", "--force", "--output-path", str(built), str(COLLECTION_SOURCE)], env)
    tarballs = sorted(built.glob("netfwd-relay-*.tar.gz"))
    if not tarballs:
        raise EnvironmentProblem("ansible-galaxy collection build made no tarball")
    _galaxy([tool, "collection", "install", "--force", "--offline", "-p", str(dest / "collections"),
             str(tarballs[-1])], env)
    return dest / "collections"


def _galaxy(argv: list[str], env: dict[str, str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    if done.returncode != 0:
        raise EnvironmentProblem(f"{' '.join(argv[1:3])} failed: {(done.stderr or done.stdout).strip()[-500:]}")


def _keygen(path: Path, comment: str) -> None:
    done = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise EnvironmentProblem(f"ssh-keygen failed: {done.stderr.strip() or done.returncode}"
                                 " (the fleet lab needs openssh-client)")


def _bridge(name: str, bridge: str, ports: list[str]) -> None:
    """A bridge in namespace `name` with `ports` enslaved; everything up."""
    with netns.netlink(name) as sock:
        sock.link("set", index=sock.link_lookup(ifname="lo")[0], state="up")
        sock.link("add", ifname=bridge, kind="bridge")
        master = sock.link_lookup(ifname=bridge)[0]
        for port in ports:
            sock.link("set", index=sock.link_lookup(ifname=port)[0], master=master, state="up")
        sock.link("set", index=master, state="up")
