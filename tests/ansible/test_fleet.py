"""The netfwd.relay collection over real SSH: ansible-playbook in a controller namespace, a real sshd
per relay namespace, real iptables / nft / firewalld engines, traffic through every relay.

Every lab is a netfwd.lab.fleet.FleetLab, torn down after its test (also when it fails); SSH runs
with ControlMaster=no, so no ssh master or sshd session outlives a playbook.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfwd.engine.state import State, cluster_dir

pytestmark = [pytest.mark.netns, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
ROLLOUT = REPO / "ansible" / "examples" / "rollout.yml"
LISTEN, API = 16443, 6443
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    """The collection as users get it: `ansible-galaxy collection build`, then install the tarball."""
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from netfwd.lab.fleet import install_collection

    return install_collection(tmp_path_factory.mktemp("ansible"))


@pytest.fixture
def make_fleet():
    """``make_fleet(relays, firewalld=(...))``: a fleet lab with sshd on every relay and the vantage
    host, an API-server stand-in behind every relay; torn down after the test."""
    from netfwd.lab.fleet import FleetLab

    made = []

    def factory(relays: int, firewalld: tuple[str, ...] = ()) -> FleetLab:
        lab = FleetLab.up(relays=relays)
        made.append(lab)
        for node in firewalld:
            lab.start_firewalld(node=node)
        for node in (*lab.relays, "client"):
            lab.start_sshd(node)
        lab.start_apiservers(API)
        return lab

    try:
        yield factory
    finally:
        for lab in made:
            lab.down()


def spec_for(lab, node: str, port: int = API, extra: bool = False) -> dict:
    relay = lab.addrs.relay(node)
    forwards = [{"name": "apiserver", "listen": {"port": LISTEN}, "to": {"address": relay.onprem, "port": port},
                 "allow": {"cidrs": [lab.addrs.allowed_cidr]}}]
    if extra:
        forwards.append({"name": "apiserver-2", "listen": {"port": LISTEN + 1000},
                         "to": {"address": relay.onprem, "port": API}, "allow": {"cidrs": [lab.addrs.allowed_cidr]}})
    return {"version": 1, "cluster": f"c-{node}", "relay": {"os": "linux", "interface": relay.outside_if},
            "forwards": forwards}


def write_inventory(lab, backends: dict[str, str], **overrides) -> Path:
    """Per relay: its spec (its own on-prem target), backend, state dir and root; probes from the
    vantage host with the lab CA."""
    relay_vars = {node: {"netfwd_backend": backend, "netfwd_spec": spec_for(lab, node)}
                  for node, backend in backends.items()}
    for node, values in overrides.items():
        relay_vars[node].update(values)
    inventory = lab.inventory(relay_vars=relay_vars, relays=list(backends))
    inventory["all"]["children"]["relays"]["vars"] = {
        "netfwd_vantage": "vantage", "netfwd_confirm_timeout": 30, "netfwd_probe_server_name": "kubernetes",
        "netfwd_probe_ca": str(lab.ca_file), "netfwd_probe_timeout": 2}
    path = lab.workdir / "inventory.json"
    path.write_text(json.dumps(inventory))
    return path


def playbook(lab, collections, inventory: Path, *args: str, book: Path = ROLLOUT, timeout: float = 240):
    done = subprocess.run(lab.ansible_argv("ansible-playbook", ["-i", str(inventory), str(book), *args]),
                          env=lab.ansible_env(collections), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return done, recap(done.stdout)


def adhoc(lab, collections, inventory: Path, module: str, args: str, *extra: str) -> dict[str, dict]:
    """`ansible relays -m MODULE -a ARGS` from the controller; host -> its JSON result."""
    done = subprocess.run(lab.ansible_argv("ansible", ["-i", str(inventory), "relays", "-m", module, "-a", args,
                                                       "-o", *extra]),
                          env=lab.ansible_env(collections), capture_output=True, text=True, timeout=240,
                          stdin=subprocess.DEVNULL)
    results = {}
    for line in done.stdout.splitlines():
        host, _, rest = line.partition(" | ")
        if " => " in rest:
            results[host] = json.loads(rest.split(" => ", 1)[1])
    return results


def recap(output: str) -> dict[str, dict[str, int]]:
    return {m[0]: {"ok": int(m[1]), "changed": int(m[2]), "unreachable": int(m[3]), "failed": int(m[4])}
            for m in RECAP.findall(output)}


def ruleset(lab, node: str) -> str:
    """Everything the relay's firewall holds (both iptables flavours, all of nftables), counters out."""
    text = "".join(lab.run(node, argv, check=False).stdout
                   for argv in (["iptables-nft-save"], ["iptables-legacy-save"], ["nft", "list", "ruleset"]))
    text = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return re.sub(r"\[\d+:\d+\]|packets \d+ bytes \d+", "", text)


def owned(lab, node: str) -> dict:
    """`netfwd status` in the relay: what netfwd owns live there, and drift from its last record."""
    base = lab.host_dir(node)
    argv = [sys.executable, "-m", "netfwd", "status", "--root", str(base / "root"), "--state-dir", str(base / "state"),
            "-o", "json"]
    firewalld = any(p.kind == "firewalld" and p.node == node and p.alive() for p in lab.processes())
    done = lab.relay_exec_fw(argv, check=False, node=node) if firewalld else lab.run(node, argv, check=False)
    return json.loads(done.stdout)


def owns_nothing(lab, node: str) -> bool:
    report = owned(lab, node)
    return report["forwards"] == [] and report["drift"] is None


def records(lab, node: str) -> Path:
    """The relay's cluster's own state directory (one cluster per relay here: c-<node>)."""
    return cluster_dir(lab.host_dir(node) / "state", f"c-{node}")


def state_of(lab, node: str) -> State:
    return State.load(records(lab, node))


def forwarded(lab, node: str, port: int = LISTEN) -> bool:
    """HTTPS through the relay's `port` from the allowed client source reaches its own API server."""
    result = lab.https_get("client", lab.addrs.relay(node).outside, port, server_name="kubernetes",
                           source=lab.addrs.client_allowed, timeout=2)
    return result.ok and result.status == 200


def test_rollout_to_five_relays_rerun_and_check_diff(make_fleet, collections):
    lab = make_fleet(5, firewalld=("relay5",))
    backends = {"relay1": "iptables", "relay2": "nft", "relay3": "iptables", "relay4": "nft",
                "relay5": "firewalld"}
    before = {node: ruleset(lab, node) for node in backends}
    inventory = write_inventory(lab, backends)

    done, hosts = playbook(lab, collections, inventory)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert set(backends) <= set(hosts)
    for node, backend in backends.items():
        assert hosts[node]["changed"] >= 2 and hosts[node]["failed"] == 0, (node, hosts[node])
        state = state_of(lab, node)
        assert state.backend == backend and state.pending is None, (node, state.pending)
        assert forwarded(lab, node), node
        assert ruleset(lab, node) != before[node]
    denied = lab.connect("client", lab.addrs.relay("relay2").outside, LISTEN, source=lab.addrs.client_denied,
                         read=False, timeout=1)
    assert not denied.ok  # the whitelist holds on a rolled-out relay

    done, hosts = playbook(lab, collections, inventory)
    assert done.returncode == 0, done.stdout[-3000:]
    assert all(hosts[node]["changed"] == 0 for node in backends), hosts

    applied = {node: ruleset(lab, node) for node in backends}
    kept = {node: (records(lab, node) / "state.json").read_text() for node in backends}
    changed_spec = {node: {"netfwd_spec": spec_for(lab, node, extra=True)} for node in backends}
    inventory = write_inventory(lab, backends, **changed_spec)
    done, hosts = playbook(lab, collections, inventory, "--check", "--diff")
    assert done.returncode == 0, done.stdout[-3000:]
    assert done.stdout.count(f"+ forward *:{LISTEN + 1000}/tcp") == len(backends), done.stdout[-3000:]
    assert all(hosts[node]["changed"] >= 1 for node in backends), hosts
    for node in backends:
        assert ruleset(lab, node) == applied[node], node
        assert (records(lab, node) / "state.json").read_text() == kept[node]
        assert forwarded(lab, node)

    where = "state_dir={{ netfwd_state_dir }} root={{ netfwd_root }}"
    facts = adhoc(lab, collections, inventory, "netfwd.relay.facts", where)
    for node, backend in backends.items():
        status = facts[node]["ansible_facts"]["netfwd"]["status"]
        assert status["backend"] == backend and status["drift"] is None and len(status["forwards"]) == 1, node
        assert facts[node]["ansible_facts"]["netfwd"]["doctor"]["checks"], node

    planned = adhoc(lab, collections, inventory, "netfwd.relay.forward", f"state=absent {where}", "--check")
    assert all(planned[node]["changed"] for node in backends), planned
    assert all(ruleset(lab, node) == applied[node] for node in backends)
    removed = adhoc(lab, collections, inventory, "netfwd.relay.forward", f"state=absent {where}")
    for node in backends:
        assert removed[node]["changed"] and removed[node]["forwards"] == 0, removed[node]
        assert owns_nothing(lab, node) and not forwarded(lab, node)


def test_unreachable_target_rolls_back_and_stops_the_rollout(make_fleet, collections):
    lab = make_fleet(5)
    backends = {"relay1": "nft", "relay2": "iptables", "relay3": "nft", "relay4": "iptables", "relay5": "nft"}
    before = {node: ruleset(lab, node) for node in backends}
    # batch 1 = relay1 (canary), batch 2 = relay2, whose target port has no API server behind it
    inventory = write_inventory(lab, backends, relay2={"netfwd_spec": spec_for(lab, "relay2", port=API + 1)})

    done, hosts = playbook(lab, collections, inventory)
    assert done.returncode != 0
    assert hosts["relay1"]["failed"] == 0 and hosts["relay2"]["failed"] == 1, hosts
    assert "its change" in done.stdout and "was rolled back" in done.stdout
    # the canary keeps its change
    assert state_of(lab, "relay1").pending is None and forwarded(lab, "relay1")
    # the failed relay is back where it was, at once (not by its timer: that was stopped)
    failed = state_of(lab, "relay2")
    assert failed.pending is None and failed.applied["op"].startswith("rollback of")
    assert "timeout" not in failed.applied["op"]
    assert owns_nothing(lab, "relay2") and not forwarded(lab, "relay2")
    # later batches never started
    for node in ("relay3", "relay4", "relay5"):
        assert hosts.get(node, {"changed": 0})["changed"] == 0
        assert not (records(lab, node) / "state.json").exists()
        assert ruleset(lab, node) == before[node]


def test_two_clusters_on_one_relay_are_told_apart_by_the_cluster_option(make_fleet, collections):
    """A relay shared by two clusters: without a spec, the modules need `cluster` (and fail naming
    both clusters, changing nothing); with it, facts and `state=absent` touch that cluster alone."""
    lab = make_fleet(1)
    inventory = write_inventory(lab, {"relay1": "nft"})
    where = {"state_dir": "{{ netfwd_state_dir }}", "root": "{{ netfwd_root }}"}
    first = spec_for(lab, "relay1")
    second = {**spec_for(lab, "relay1"), "cluster": "c-second"}
    second["forwards"] = [{**second["forwards"][0], "listen": {"port": LISTEN + 1}}]

    def run(module: str, *extra: str, **args) -> dict:
        return adhoc(lab, collections, inventory, module, json.dumps({**where, **args}), *extra)["relay1"]

    for spec in (first, second):
        applied = run("netfwd.relay.forward", spec=spec, backend="nft")
        assert applied["changed"] and applied["forwards"] == 1, applied
    assert forwarded(lab, "relay1") and forwarded(lab, "relay1", LISTEN + 1)
    kept = ruleset(lab, "relay1")

    unnamed = run("netfwd.relay.forward", state="absent")
    assert unnamed["error_type"] == "InputError" and unnamed["exit_code"] == 2, unnamed
    assert unnamed["msg"] == ("cluster: 2 clusters on this relay (c-relay1, c-second): choose one with the "
                              "cluster option"), unnamed["msg"]
    mismatched = run("netfwd.relay.forward", "--check", spec=first, cluster="c-second")
    assert mismatched["error_type"] == "InputError" and "the spec is cluster 'c-relay1', not 'c-second'" in mismatched["msg"]
    assert ruleset(lab, "relay1") == kept

    facts = run("netfwd.relay.facts", gather=["status"], cluster="c-second")["ansible_facts"]["netfwd"]["status"]
    assert [report["cluster"] for report in facts["clusters"]] == ["c-second"], facts
    assert [f["listen_port"] for f in facts["forwards"]] == [LISTEN + 1], facts["forwards"]

    removed = run("netfwd.relay.forward", state="absent", cluster="c-second")
    assert removed["changed"] and removed["forwards"] == 0, removed
    assert forwarded(lab, "relay1") and not forwarded(lab, "relay1", LISTEN + 1)
    assert state_of(lab, "relay1").applied["forwards"] == 1  # c-relay1's records are untouched


KILL_PLAY = """
- name: Rollout whose apply stalls after its transaction (while the test drops the SSH connection)
  hosts: relays
  gather_facts: false
  environment:
    NETFWD_STALL_AT: "after-write:8"
  roles:
    - role: netfwd.relay.rollout
"""


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _ssh_clients_to(root_pid: int, address: str) -> list[int]:
    """Our playbook's ssh client processes talking to `address` (only ever our own PIDs)."""
    found = []
    for pid in _descendants(root_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and Path(argv[0].decode()).name == "ssh" and any(address.encode() in a for a in argv):
            found.append(pid)
    return found


def test_ssh_connection_killed_mid_apply_rolls_back_by_timer(make_fleet, collections):
    lab = make_fleet(1)
    before = ruleset(lab, "relay1")
    inventory = write_inventory(lab, {"relay1": "iptables"})
    data = json.loads(inventory.read_text())
    data["all"]["children"]["relays"]["vars"]["netfwd_confirm_timeout"] = 3
    inventory.write_text(json.dumps(data))
    book = lab.workdir / "stall.yml"
    book.write_text(KILL_PLAY)
    run = subprocess.Popen(lab.ansible_argv("ansible-playbook", ["-i", str(inventory), str(book)]),
                           env=lab.ansible_env(collections), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        # the transaction is live and its timer runs; the module stalls before it reports back
        while state_of(lab, "relay1").pending is None or ruleset(lab, "relay1") == before:
            if run.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the apply never went live: {run.communicate()[0][-3000:]}")
            time.sleep(0.05)
        clients = _ssh_clients_to(run.pid, lab.address("relay1"))
        assert clients, "no ssh connection to the relay found"
        for pid in clients:
            os.kill(pid, signal.SIGKILL)
        output, _ = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    hosts = recap(output)
    assert run.returncode != 0 and hosts["relay1"]["unreachable"] + hosts["relay1"]["failed"] == 1, output[-2000:]
    timer_log = records(lab, "relay1") / "timer.log"
    deadline = time.monotonic() + 60
    while "rolled back change" not in timer_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)  # the timer waits for the stalled apply's lock, then rolls back
    state = state_of(lab, "relay1")
    assert state.pending is None and "commit-confirm timeout" in state.applied["op"], (state.applied, timer_log.read_text())
    assert owns_nothing(lab, "relay1") and not forwarded(lab, "relay1")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """netfwd's wheel, built from a copy of the sources (the build writes nothing into the checkout)."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".venv", ".git", "out", "*.pyc", "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", "wheel", "--no-deps",
                    "--no-build-isolation", "--no-index", "-w", str(base / "dist"), str(source)],
                   check=True, capture_output=True, cwd=base)
    (found,) = (base / "dist").glob("netfwd-*.whl")
    return found


def _venv_with_our_dependencies(venv: Path) -> None:
    """A virtualenv (with pip, for the role's pip task) whose dependencies come from this venv
    through a .pth line, so installing the wheel with --no-deps needs no package index."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = subprocess.run([str(venv / "bin" / "python"), "-c", purelib], check=True, capture_output=True,
                          text=True).stdout.strip()
    ours = subprocess.run([sys.executable, "-c", purelib], check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "netfwd-test-deps.pth").write_text(ours + "\n")


MODULES_PLAY = """
- name: The probe from a vantage host and from a namespace; a bad spec
  hosts: relay2
  gather_facts: false
  tasks:
    - name: Probe VIA and TARGET from the vantage host
      netfwd.relay.probe: {{via: "{{{{ ansible_host }}}}:16443", target: "{onprem}:6443", until: tcp}}
      delegate_to: vantage
      register: from_vantage
    - name: Probe from the client's namespace, run on the relay
      netfwd.relay.probe: {{via: "{{{{ ansible_host }}}}:16443", target: "{onprem}:6443", until: tcp, netns: {client_ns}}}
      register: from_netns
    - name: A port out of range
      netfwd.relay.forward:
        spec: {{version: 1, cluster: bad, relay: {{os: linux}},
               forwards: [{{name: a, listen: {{port: 99999}}, to: {{address: "{onprem}", port: 6443}}}}]}}
        state_dir: "{{{{ netfwd_state_dir }}}}"
        root: "{{{{ netfwd_root }}}}"
      register: bad
      ignore_errors: true
    - name: Check
      ansible.builtin.assert:
        that:
          - from_vantage.reachable and from_vantage.verdict == "reachable"
          - from_netns.reachable
          - bad is failed and "forwards[0].listen.port" in bad.msg and bad.error_type == "InputError"
          - bad.msg.splitlines() | length == 1
"""


def test_relay_down_is_reported_unreachable_and_nothing_else_harmed(make_fleet, collections, wheel, tmp_path):
    """Also the role's install path: relay1 gets netfwd from the wheel the controller ships, into a
    virtualenv, and runs the modules with that virtualenv's Python."""
    lab = make_fleet(3)
    backends = {"relay1": "iptables", "relay2": "nft", "relay3": "nft"}
    venv = lab.host_dir("relay1") / "venv"
    _venv_with_our_dependencies(venv)
    lab.stop_sshd("relay3")  # the last batch's relay is down
    before = ruleset(lab, "relay3")
    inventory = write_inventory(lab, backends, relay1={
        "netfwd_install": True, "netfwd_install_wheel": str(wheel), "netfwd_install_venv": str(venv),
        "netfwd_install_pip_options": "--no-deps --no-index", "ansible_python_interpreter": "/usr/bin/python3"})
    done, hosts = playbook(lab, collections, inventory)
    assert done.returncode != 0
    assert hosts["relay3"]["unreachable"] == 1, hosts
    for node in ("relay1", "relay2"):
        assert hosts[node]["failed"] == hosts[node]["unreachable"] == 0 and hosts[node]["changed"] >= 2
        assert state_of(lab, node).pending is None and forwarded(lab, node)
    assert ruleset(lab, "relay3") == before
    assert not (lab.host_dir("relay3") / "state").exists()
    # the probe's two other forms, and bad input: one line naming the field, nothing applied
    book = lab.workdir / "modules.yml"
    book.write_text(MODULES_PLAY.format(onprem=lab.addrs.relay("relay2").onprem, client_ns=lab.ns("client")))
    kept = (records(lab, "relay2") / "state.json").read_text()
    checked, checked_hosts = playbook(lab, collections, inventory, book=book)
    assert checked.returncode == 0 and checked_hosts["relay2"]["failed"] == 0, checked.stdout[-3000:]
    assert (records(lab, "relay2") / "state.json").read_text() == kept
    # relay1: wheel shipped, installed, applied, confirmed - with the wheel's netfwd, not this checkout's
    assert hosts["relay1"]["changed"] >= 4
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import netfwd; print(netfwd.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(venv)


def test_fleet_lab_shows_in_lab_status_and_goes_with_lab_down():
    """`netfwd lab status` and `lab down` know a fleet lab from its record alone (sshd included)."""
    from netfwd.lab import Lab
    from netfwd.lab.fleet import FleetLab

    lab = FleetLab.up(relays=2)
    try:
        sshd = lab.start_sshd("relay2")
        assert isinstance(Lab.attach(lab.name), FleetLab)
        cli = [sys.executable, "-m", "netfwd", "lab"]
        text = subprocess.run([*cli, "status", "--name", lab.name], capture_output=True, text=True, timeout=60)
        assert text.returncode == 0 and "relay2 " + lab.address("relay2") in text.stdout, text.stderr
        report = json.loads(subprocess.run([*cli, "status", "--name", lab.name, "-o", "json"], capture_output=True,
                                           text=True, timeout=60, check=True).stdout)
        assert set(report["nodes"]) == set(lab.nodes)
        assert [p["kind"] for p in report["processes"] if p["alive"]] == ["sshd"]
        subprocess.run([*cli, "down", "--name", lab.name], check=True, capture_output=True, timeout=60)
        assert not any(Path("/run/netns", lab.ns(node)).exists() for node in lab.nodes)
        assert not Path(f"/proc/{sshd}").exists() or "sshd" not in Path(f"/proc/{sshd}/cmdline").read_text()
    finally:
        lab.down()
