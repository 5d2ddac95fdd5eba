"""Acceptance: a lab leaves `ip netns list`, `ip link` and the process table as it found them -
after a normal run, after a demo, and after `lab up` was SIGKILLed half-way. Plus its time budget."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfwd.lab import Lab

pytestmark = pytest.mark.netns
NETFWD = [sys.executable, "-m", "netfwd"]


@pytest.fixture
def lab_dir(tmp_path, monkeypatch):
    """A private state directory, shared by this test's CLI runs and in-process labs."""
    directory = tmp_path / "labs"
    monkeypatch.setenv("NETFWD_LAB_DIR", str(directory))
    return directory


@pytest.fixture
def name(lab_dir):
    """A fresh lab name; whatever the test leaves under it is torn down even when an assert fails."""
    from netfwd.lab.core import destroy

    chosen = secrets.token_hex(3)
    yield chosen
    destroy(chosen)


def cli(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([*NETFWD, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})
    if check:
        assert done.returncode == 0, done.stderr
    return done


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def lab_namespaces(name: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith(f"nf-{name}-"))


def ns_inodes(name: str) -> set[int]:
    return {os.stat(f"/run/netns/{ns}").st_ino for ns in lab_namespaces(name)}


def processes_in(inodes: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    found.append(int(entry))
            except OSError:
                pass
    return found


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                if text.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def my_children() -> list[int]:
    try:
        return sorted(int(p) for p in Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split())
    except OSError:
        return []


def baseline(name: str, lab_dir: Path) -> dict:
    return {"netns": lab_namespaces(name), "links": root_links(), "children": my_children(),
            "mentioning": processes_mentioning(str(lab_dir))}


def assert_restored(before: dict, name: str, lab_dir: Path, inodes: set[int]) -> None:
    deadline = time.monotonic() + 3  # killed orphans are reaped by init, a moment later
    while True:
        now = baseline(name, lab_dir)
        leftovers = processes_in(inodes)
        if (now == before and not leftovers) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert now["netns"] == before["netns"] == []
    assert now["links"] == before["links"]
    assert now["children"] == before["children"]
    assert now["mentioning"] == before["mentioning"] == []
    assert leftovers == []
    assert not (lab_dir / f"{name}.json").exists() and not (lab_dir / name).exists()


def test_up_flow_down_leaves_the_host_as_before(lab_dir, name):
    before = baseline(name, lab_dir)
    up = json.loads(cli("lab", "up", "--name", name, "--firewalld", "-o", "json").stdout)
    assert up["complete"] and {p["kind"] for p in up["processes"]} == {"apiserver", "firewalld", "dbus-daemon"}
    inodes = ns_inodes(name)
    assert len(inodes) == 3 and root_links() == before["links"]  # veths never touch the host namespace
    lab = Lab.attach(name)
    a = lab.addrs
    lab.firewall_cmd("--zone=public", "--add-interface", a.relay_outside_if)
    lab.firewall_cmd("--zone=public", f"--add-forward-port=port=16443:proto=tcp:toaddr={a.onprem}:toport=6443")
    lab.firewall_cmd("--zone=public", "--add-masquerade")
    assert lab.https_get("client", a.relay_outside, 16443, "/readyz", server_name=a.onprem).body == "ok"
    lab.start_server("relay", 7000)
    # a helper the caller "forgot" inside a lab namespace: down removes it too
    stray = subprocess.Popen(["ip", "netns", "exec", lab.ns("client"), "sleep", "600"], start_new_session=True)
    status = json.loads(cli("lab", "status", "--name", name, "-o", "json").stdout)
    assert all(p["alive"] for p in status["processes"]) and len(status["processes"]) == 4
    cli("lab", "down", "--name", name)
    assert stray.wait(timeout=5) is not None
    lab.down()  # already down: only reaps the whoami server this process started (no zombie left)
    assert_restored(before, name, lab_dir, inodes)


def test_fleet_up_status_down_through_the_cli(lab_dir, name):
    """`lab up --fleet 2`: real sshd in each relay and the client, reached from the controller with the
    inventory's key; `lab status` sees it; `lab down` leaves no sshd, namespace or link behind."""
    from netfwd.lab.fleet import SSH_ARGS

    before = baseline(name, lab_dir)
    up = json.loads(cli("lab", "up", "--fleet", "2", "--firewalld-relay", "relay2", "--name", name, "-o", "json").stdout)
    sshd = {p["node"]: p["pid"] for p in up["processes"] if p["kind"] == "sshd"}
    assert up["complete"] and set(sshd) == {"relay1", "relay2", "client"}
    assert [p["node"] for p in up["processes"] if p["kind"] == "firewalld"] == ["relay2"]
    assert sorted(p["node"] for p in up["processes"] if p["kind"] == "apiserver") == ["onprem1", "onprem2"]
    inodes = ns_inodes(name)
    assert len(inodes) == 2 * 2 + 3 and root_links() == before["links"]
    inventory = json.loads(Path(up["inventory"]).read_text())
    relays = inventory["all"]["children"]["relays"]["hosts"]
    key = inventory["all"]["vars"]["ansible_ssh_private_key_file"]
    lab = Lab.attach(name)
    shown = lab.run("controller", ["ssh", "-i", key, *SSH_ARGS.split(), f"root@{relays['relay2']['ansible_host']}",
                                   "ip -o -4 addr show"]).stdout
    assert up["addrs"]["relays"][1]["inside"] in shown  # the session runs in relay2's namespace
    state = lab.run("controller", ["ssh", "-i", key, *SSH_ARGS.split(), f"root@{relays['relay2']['ansible_host']}",
                                   "firewall-cmd --state"]).stdout
    assert state.strip() == "running"  # ... and reaches relay2's firewalld, as netfwd run over SSH must
    status = json.loads(cli("lab", "status", "--name", name, "-o", "json").stdout)
    assert {n for n in status["nodes"]} >= {"relay1", "relay2", "onprem1", "onprem2", "controller"}
    assert all(p["alive"] for p in status["processes"])
    assert sorted(p["kind"] for p in status["processes"]) == ["apiserver"] * 2 + ["dbus-daemon", "firewalld"] + ["sshd"] * 3
    shown = cli("lab", "exec", "--name", name, "relay1", "--", "ip", "-o", "-4", "addr", "show").stdout
    assert up["addrs"]["relays"][0]["inside"] in shown
    assert cli("lab", "exec", "--name", name, "relay", "--", "true", check=False).returncode == 2  # no such node
    cli("lab", "down", "--name", name)
    assert_restored(before, name, lab_dir, inodes)
    assert [pid for pid in sshd.values() if b"sshd" in _cmdline(pid)] == []


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


STAGES = ["claimed", "namespaces", "links", "configured", "servers"]


@pytest.mark.parametrize("stage", STAGES)
def test_down_recovers_a_lab_killed_during_up(lab_dir, name, stage):
    before = baseline(name, lab_dir)
    crashed = cli("lab", "up", "--name", name, check=False, env={"NETFWD_LAB_CRASH_AT": stage})
    assert crashed.returncode == -9  # SIGKILL: no finally, no atexit ran
    assert (lab_dir / f"{name}.json").exists()
    inodes = ns_inodes(name)
    if stage != "claimed":
        assert len(inodes) == 3
    if stage == "servers":
        assert processes_in(inodes), "the stand-in should be running in the half-built lab"
    status = cli("lab", "status", "--name", name, "-o", "json")
    assert json.loads(status.stdout)["complete"] is (stage == "servers")
    cli("lab", "down", "--name", name)
    assert_restored(before, name, lab_dir, inodes)
    assert cli("lab", "down", "--name", name, check=False).returncode == 2  # gone: nothing left to name


def test_demo_runs_and_cleans_up(lab_dir):
    links = root_links()
    done = cli("lab", "demo", "-o", "json")
    report = json.loads(done.stdout)
    from netfwd.cli import COMMANDS

    assert report["ok"] and len(report["checks"]) == 6 + ("probe" in COMMANDS)
    if "probe" in COMMANDS:  # netfwd's own probe, run from the client namespace, agrees
        assert report["probes"][0]["verdict"] == "reachable"
    assert {c["name"].split(": ")[-1] for c in report["checks"]} >= {"GET /version (tls-server-name kubernetes)"}
    assert lab_namespaces(report["lab"]) == [] and root_links() == links
    assert list(lab_dir.iterdir()) == []


def test_up_and_down_each_take_under_two_seconds(lab_dir):
    started = time.monotonic()
    lab = Lab.up()
    built = time.monotonic() - started
    try:
        inodes = ns_inodes(lab.name)
        lab.start_server("onprem", 6443, kind="apiserver")
    finally:
        started = time.monotonic()
        lab.down()
        removed = time.monotonic() - started
    assert built < 2.0 and removed < 2.0, (built, removed)
    assert processes_in(inodes) == [] and lab_namespaces(lab.name) == []


def test_up_with_a_spec_names_the_interface_and_serves_each_target(lab_dir, name, tmp_path):
    spec = tmp_path / "two.yaml"
    spec.write_text("version: 1\ncluster: two\nrelay: {os: linux, interface: eth7}\nforwards:\n"
                    "  - {name: api, listen: {port: 16443}, to: {address: 192.168.10.5, port: 6443}}\n"
                    "  - {name: dns, listen: {port: 1053}, to: {address: 192.168.10.6, port: 53}, protocol: udp}\n")
    up = json.loads(cli("lab", "up", "--name", name, "--spec", str(spec), "-o", "json").stdout)
    assert up["addrs"]["relay_outside_if"] == "eth7" and "eth7" in up["nodes"]["relay"]["interfaces"]
    assert sorted((p["kind"], p["port"]) for p in up["processes"]) == [("apiserver", 6443), ("whoami", 53)]
    lab = Lab.attach(name)
    assert lab.connect("relay", lab.addrs.onprem, 53, udp=True).peer == lab.addrs.relay_inside
    assert cli("lab", "exec", "--name", name, "relay", "--", "sh", "-c", "exit 5", check=False).returncode == 5
    shown = cli("lab", "exec", "--name", name, "relay", "--", "ip", "-o", "link", "show", "eth7").stdout
    assert "eth7" in shown
    cli("lab", "down", "--name", name)
    assert lab_namespaces(name) == []
