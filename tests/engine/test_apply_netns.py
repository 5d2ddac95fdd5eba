"""`netfwd apply` and friends on a live relay, for EVERY backend, in namespaces the lab makes.

client -> relay:A -> on-prem:B; on-prem has no route back, so only a working masquerade completes a
handshake. Each backend gets: traffic + whitelist, idempotence (byte-identical ruleset), foreign
rules in every table/chain/zone netfwd uses surviving every step, a changed target replacing the
forward, rollback, commit-confirm (timeout, timeout after SIGKILL of the applying netfwd, confirm),
remove; then SIGKILL at random moments (old or new, never a mix) and two applies at once.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfwd import owned
from netfwd.engine.state import cluster_dir

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
A, B, B2 = 16443, 6443, 6444
BACKENDS = ["iptables", "iptables-legacy", "libiptc", "nft", "firewalld"]
# a CentOS 7 relay (iptables 1.4.21, firewalld 0.6.3, no nft): auto must find its only iptables;
# libiptc there loads this machine's iptables libraries, which drive the same legacy kernel tables
CENTOS7_BACKENDS = ["auto", "libiptc", "firewalld"]  # auto chooses iptables-legacy there: that backend runs too
LIFECYCLE = [pytest.param("modern", b, id=b) for b in BACKENDS] + \
    [pytest.param("centos7", b, id=f"centos7-{b}") for b in CENTOS7_BACKENDS]
FWDBUS_DIR = str(REPO / "netfwd" / "netfilter")

# firewalld, through its own Python and D-Bus (one process instead of many slow firewall-cmd calls)
FW_SCRIPT = r"""
import json, sys
sys.path.insert(0, sys.argv[2])
from fwdbus import Firewalld
fw = Firewalld(); op = sys.argv[1]; S = fw.strings
FOREIGN = {
  "before": ['rule family="ipv4" source address="10.99.0.0/16" drop',
             'rule family="ipv4" source ipset="foreign-set" forward-port port="9999" protocol="tcp" to-port="22" to-addr="10.99.0.1"',
             'rule family="ipv4" destination address="10.99.0.1" masquerade'],
  "after": ['rule family="ipv4" source address="10.98.0.0/16" reject',
            'rule family="ipv4" source ipset="foreign-set" forward-port port="9998" protocol="tcp" to-port="22" to-addr="10.99.0.2"'],
}
def rules(settings):
    return [str(r) for r in settings.get("rules_str", [])]
if op in ("before", "after"):
    if op == "before":
        fw.call(fw.cfg, ".config", "addIPSet", "foreign-set", ("", "", "", "hash:net",
                fw.dbus.Dictionary({"family": "inet"}, signature="ss"), S(["10.97.0.0/16"])))
        fw.call(fw.fw, "", "reload")
    for zone in ("public", "trusted"):
        for permanent in (True, False):
            fw.set_zone_rules(zone, fw.zone_rules(zone, permanent) + FOREIGN[op], permanent)
elif op == "dump":
    out = {}
    for zone in fw.call(fw.fw, ".zone", "getZones"):
        out[f"runtime zone {zone}"] = json.loads(json.dumps(fw.zone_settings(zone, False)))
    for zone in fw.call(fw.cfg, ".config", "getZoneNames"):
        out[f"permanent zone {zone}"] = json.loads(json.dumps(fw.zone_settings(zone, True)))
    for name in fw.call(fw.fw, ".ipset", "getIPSets"):
        out[f"runtime ipset {name}"] = sorted(map(str, fw.call(fw.fw, ".ipset", "getIPSetSettings", name)[5]))
    for name in fw.call(fw.cfg, ".config", "getIPSetNames"):
        out[f"permanent ipset {name}"] = sorted(map(str, fw.call(fw.config_object("IPSet", name),
                                                                 ".config.ipset", "getSettings")[5]))
    for value in out.values():
        if isinstance(value, dict) and "rules_str" in value:
            value["rules_str"] = sorted(value["rules_str"])
    print(json.dumps(out, sort_keys=True, indent=1))
"""

XT_FOREIGN = {  # (before apply, after apply): in every table and built-in chain netfwd jumps from
    "before": [["-t", "filter", "-P", "FORWARD", "DROP"],  # Docker's policy: netfwd must still forward
               ["-t", "filter", "-N", "DOCKER-USER"], ["-t", "filter", "-A", "FORWARD", "-j", "DOCKER-USER"],
               ["-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "RETURN"],
               ["-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN"],
               ["-t", "nat", "-A", "POSTROUTING", "-p", "udp", "--dport", "9999", "-j", "RETURN"],
               ["-t", "filter", "-A", "FORWARD", "-p", "tcp", "--dport", "9999", "-j", "ACCEPT"]],
    "after": [["-t", "nat", "-I", "PREROUTING", "1", "-p", "tcp", "--dport", "9998", "-j", "RETURN"],
              ["-t", "nat", "-I", "OUTPUT", "1", "-p", "tcp", "--dport", "9998", "-j", "RETURN"],
              ["-t", "nat", "-I", "POSTROUTING", "1", "-p", "udp", "--dport", "9998", "-j", "RETURN"],
              ["-t", "filter", "-I", "FORWARD", "1", "-p", "tcp", "--dport", "9998", "-j", "ACCEPT"],
              ["-t", "filter", "-A", "DOCKER-USER", "-j", "RETURN"]],
}
NFT_FOREIGN = {  # netfwd's table is private: others' tables hook the same places
    "before": """table inet foreign {
  chain pre { type nat hook prerouting priority dstnat; policy accept; tcp dport 9999 return; }
  chain out { type nat hook output priority -100; policy accept; tcp dport 9999 return; }
  chain post { type nat hook postrouting priority srcnat; policy accept; udp dport 9999 return; }
  chain filt { type filter hook forward priority filter; policy accept; tcp dport 9999 accept; }
}
""",
    "after": """add rule inet foreign pre tcp dport 9998 return
add rule inet foreign filt tcp dport 9998 accept
table ip other {
  chain post { type nat hook postrouting priority srcnat - 1; policy accept; udp dport 9998 return; }
}
""",
}


class Relay:
    """How a test drives netfwd with one backend, and inspects the relay's firewall."""

    def __init__(self, lab, backend: str, tmp: Path) -> None:
        self.lab, self.backend = lab, backend
        self.root, self.state = tmp / "root", tmp / "state"
        self.root.mkdir(parents=True, exist_ok=True)
        self.fw = backend == "firewalld"
        self.iptables = "iptables-nft" if backend == "iptables" else "iptables-legacy"
        if lab.userland == "centos7":
            self.iptables = "iptables"  # the only one there: 1.4.21

    # -- running netfwd ----------------------------------------------------------------------
    def argv(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        variables = {"NETFWD_ROOT": str(self.root), "NETFWD_STATE_DIR": str(self.state), **(env or {})}
        command = ["env", *(f"{k}={v}" for k, v in variables.items()), sys.executable, "-m", "netfwd",
                   args[0], "--backend", self.backend, *args[1:]]  # a later --backend in args wins
        if self.fw:
            pid = next(p.pid for p in self.lab.processes() if p.kind == "firewalld")
            return ["nsenter", "-t", str(pid), "-m", "-n", f"--wd={REPO}", "--", *command]
        if self.lab.userland != "modern":  # netfwd runs where the relay's old programs are
            return self.lab.exec_argv("relay", ["env", "-C", str(REPO), *command])
        return [*command, "--netns", self.lab.ns("relay")]

    def netfwd(self, *args: str, expect: int = 0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(self.argv(*args, env=env), capture_output=True, text=True, timeout=120, cwd=REPO)
        assert done.returncode == expect, f"netfwd {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args, env=env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)

    def wait_idle(self) -> None:
        """Block until no netfwd (nor a transaction it started) holds the state lock."""
        folder = cluster_dir(self.state, "lab-apply")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)

    # -- the firewall ------------------------------------------------------------------------
    def relay(self, argv: list[str], input: str | None = None) -> str:  # noqa: A002
        run = self.lab.relay_exec_fw if self.fw else (lambda a, **k: self.lab.run("relay", a, **k))
        return run(argv, input=input).stdout

    def foreign(self, when: str) -> None:
        if self.fw:
            self.relay(["/usr/bin/python3", "-c", FW_SCRIPT, when, FWDBUS_DIR])
        elif self.backend == "nft":
            self.relay(["nft", "-f", "-"], input=NFT_FOREIGN[when])
        else:
            for rule in XT_FOREIGN[when]:
                self.relay([self.iptables, "-w", *rule])

    def dump(self) -> str:
        """The whole ruleset (counters dropped: traffic moves them)."""
        if self.fw:
            return self.relay(["/usr/bin/python3", "-c", FW_SCRIPT, "dump", FWDBUS_DIR]) + self.kernel()
        if self.backend == "nft":
            return re.sub(r" counter packets \d+ bytes \d+", "", self.relay(["nft", "list", "ruleset"]))
        text = self.relay([f"{self.iptables}-save"])
        return "\n".join(re.sub(r" \[\d+:\d+\]$", "", line) for line in text.splitlines()
                         if not line.startswith("#"))

    def kernel(self) -> str:
        """firewalld's rules as the kernel holds them (0.6.3: iptables and kernel ipsets; counters dropped)."""
        if self.lab.userland == "modern":
            return self.relay(["nft", "list", "ruleset"])
        rules = [re.sub(r" \[\d+:\d+\]$", "", line) for line in self.relay(["iptables-save"]).splitlines()
                 if not line.startswith("#")]
        return "\n".join(rules) + "\n" + self.relay(["ipset", "save"])

    def foreign_part(self, dump: str) -> str:
        """`dump` without anything netfwd owns."""
        if self.fw:
            data = json.loads(dump[:dump.index("\n}\n") + 3])
            return json.dumps({k: ({**v, "rules_str": [r for r in v.get("rules_str", []) if 'ipset="netfwd-' not in r]}
                                   if isinstance(v, dict) else v)
                               for k, v in data.items() if "ipset netfwd-" not in k}, sort_keys=True)
        if self.backend == "nft":
            return re.sub(r"table inet netfwd(-\S+)? \{.*?\n\}\n", "", dump, flags=re.S)
        return "\n".join(line for line in dump.splitlines() if "NETFWD" not in line)

    def owned(self) -> str:
        dump = self.dump()
        if self.fw:
            data = json.loads(dump[:dump.index("\n}\n") + 3])
            return json.dumps({k: [r for r in v.get("rules_str", []) if 'ipset="netfwd-' in r]
                               if isinstance(v, dict) else v
                               for k, v in data.items() if "zone" in k or "netfwd-" in k}, sort_keys=True)
        if self.backend == "nft":
            match = re.search(r"table inet netfwd(-\S+)? \{.*?\n\}\n", dump, flags=re.S)
            return match[0] if match else ""
        return "\n".join(line for line in dump.splitlines() if "NETFWD" in line)


def write_spec(lab, path: Path, port: int = B, target: str | None = None) -> str:
    a = lab.addrs
    path.write_text(f"""version: 1
cluster: lab-apply
relay: {{os: linux, interface: {a.relay_outside_if}}}
forwards:
  - name: apiserver
    listen: {{port: {A}}}
    to: {{address: {target or a.onprem}, port: {port}}}
    allow: {{cidrs: [{a.allowed_cidr}]}}
""")
    return str(path)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@pytest.mark.parametrize(("userland", "backend"), LIFECYCLE)
def test_lifecycle(relay_for, tmp_path, backend, userland):
    relay = relay_for(backend, userland)
    lab, a = relay.lab, relay.lab.addrs
    first = write_spec(lab, tmp_path / "first.yaml")
    second = write_spec(lab, tmp_path / "second.yaml", port=B2)
    old_server = lab.start_server("onprem", B)
    new_server = lab.start_server("onprem", B2)
    relay.foreign("before")
    before = relay.dump()

    plan = relay.netfwd("plan", first, "--output", "json", expect=4)
    assert [c["op"] for c in json.loads(plan.stdout)["changes"] if c["kind"] == "forward"] == ["+"]
    relay.netfwd("apply", first, "--yes")
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside  # masqueraded
    assert not lab.connect("client", a.relay_outside, A, source=a.client_denied, timeout=1).ok
    assert relay.foreign_part(relay.dump()) == relay.foreign_part(before)
    relay.foreign("after")
    applied = relay.dump()
    foreign = relay.foreign_part(applied)
    first_owned = relay.owned()
    assert first_owned

    again = relay.netfwd("apply", first, "--yes")  # idempotent: nothing to do, nothing touched
    assert "no changes" in again.stdout
    assert relay.dump() == applied
    relay.netfwd("plan", first)  # exit 0: in sync

    # a changed target replaces the forward, no duplicate; on nf_tables, whose generation has not moved
    # since the re-apply above recorded it, without reading the live ruleset (what is live is provable)
    changed = relay.netfwd("apply", second, "--yes", env={"NETFWD_TIMING": "1"})
    unread = "timing: read live skipped" in changed.stderr
    assert unread == (backend in ("iptables", "nft") and userland == "modern"), changed.stderr
    status = json.loads(relay.netfwd("status", "--output", "json").stdout)
    assert [(f["listen_port"], f["to_port"]) for f in status["forwards"]] == [(A, B2)]
    assert status["drift"] is None
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside
    assert any(line.startswith("tcp") for line in lab.server_log(new_server))
    assert relay.foreign_part(relay.dump()) == foreign

    relay.netfwd("rollback")
    assert relay.owned() == first_owned and relay.foreign_part(relay.dump()) == foreign

    # commit-confirm, not confirmed: the old state is back after the deadline
    relay.netfwd("apply", second, "--yes", "--confirm-timeout", "3")  # long enough to look before it ends
    assert relay.owned() != first_owned
    wait_for(lambda: relay.owned() == first_owned, 20, "the commit-confirm rollback")
    # ... also when the applying netfwd is SIGKILLed right after its transaction
    relay.netfwd("apply", second, "--yes", "--confirm-timeout", "1", expect=-signal.SIGKILL,
                 env={"NETFWD_CRASH_AT": "after-write"})
    assert relay.owned() != first_owned
    wait_for(lambda: relay.owned() == first_owned, 15, "the rollback after SIGKILL")
    relay.wait_idle()
    assert json.loads(relay.netfwd("status", "--output", "json").stdout)["drift"] is None
    # ... and with confirm it stays
    # (a window a loaded machine cannot overrun before `confirm` starts; that the timer is then gone,
    # not a wait past the deadline, shows the change stays)
    relay.netfwd("apply", second, "--yes", "--confirm-timeout", "60")
    timer_pid = json.loads(relay.netfwd("status", "--output", "json").stdout)["pending"]["timer_pid"]
    relay.netfwd("confirm")
    wait_for(lambda: not Path(f"/proc/{timer_pid}").exists() or
             Path(f"/proc/{timer_pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z", 10,
             "the confirmed change's timer to stop")
    assert json.loads(relay.netfwd("status", "--output", "json").stdout)["pending"] is None
    second_owned = relay.owned()
    assert second_owned != first_owned
    relay.netfwd("confirm", expect=1)  # nothing pending any more
    assert relay.foreign_part(relay.dump()) == foreign
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside

    relay.netfwd("remove")
    assert relay.owned() in ("", "{}") or "netfwd" not in relay.owned()
    assert relay.foreign_part(relay.dump()) == foreign
    assert not (relay.root / owned.sysctl_file("lab-apply")).exists()
    assert "no changes" in relay.netfwd("remove").stdout
    assert not lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).ok
    del old_server


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigkill_and_concurrent_applies(relay_for, tmp_path, backend):
    """SIGKILL at random moments: the owned state is exactly old or new; then two applies at once."""
    relay = relay_for(backend)
    lab = relay.lab
    specs = [write_spec(lab, tmp_path / "one.yaml"), write_spec(lab, tmp_path / "two.yaml", port=B2)]
    relay.foreign("before")
    states = []
    for spec in specs:
        relay.netfwd("apply", spec, "--yes")
        states.append(relay.owned())
    foreign = relay.foreign_part(relay.dump())
    started = time.monotonic()
    relay.netfwd("apply", specs[0], "--yes")
    duration = time.monotonic() - started
    rng = random.Random(os.getpid())
    trials = 20
    for trial in range(trials):
        child = relay.popen("apply", specs[trial % 2], "--yes")
        time.sleep(rng.uniform(0.0, duration))
        child.send_signal(signal.SIGKILL)
        child.communicate()
        relay.wait_idle()  # a commit the dead netfwd started still finishes (it holds the lock)
        owned = relay.owned()
        assert owned in states, f"trial {trial}: owned state is neither old nor new:\n{owned}"
    assert relay.foreign_part(relay.dump()) == foreign

    # the next netfwd finishes or undoes whatever the last kill interrupted; records match live
    relay.netfwd("apply", specs[1], "--yes")
    assert json.loads(relay.netfwd("status", "--output", "json").stdout)["drift"] is None

    # two at once: both succeed, one after the other; the records match what is live
    children = [relay.popen("apply", spec, "--yes") for spec in specs]
    results = [child.communicate(timeout=120) + (child.returncode,) for child in children]
    assert [code for _, _, code in results] == [0, 0], results
    status = json.loads(relay.netfwd("status", "--output", "json").stdout)
    assert status["drift"] is None and relay.owned() in states
    # a caller that will not wait is told clearly who holds the lock
    with open(cluster_dir(relay.state, "lab-apply") / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        busy = relay.netfwd("apply", specs[0], "--yes", "--lock-timeout", "0.2", expect=3)
    assert "another netfwd is changing this relay" in busy.stderr
    assert relay.foreign_part(relay.dump()) == foreign


def test_auto_detection_libiptc_refusal_and_drift(lab, tmp_path):
    """auto picks the flavour that holds rules and refuses to guess between two; libiptc refuses an
    nf_tables host; status reports a flush by someone else as drift and apply repairs it."""
    relay = Relay(lab, "auto", tmp_path)
    spec = write_spec(lab, tmp_path / "spec.yaml")
    relay.relay(["iptables-nft", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "RETURN"])
    refused = relay.netfwd("plan", spec, "--backend", "libiptc", expect=3)
    assert "nf_tables" in refused.stderr and "--backend iptables" in refused.stderr
    host_bus = relay.netfwd("plan", spec, "--backend", "firewalld", expect=3)  # never the host's firewalld
    assert "--netns cannot reach a firewalld" in host_bus.stderr
    chosen = relay.netfwd("apply", spec, "--yes")
    assert "backend iptables: iptables-nft (nf_tables) holds rules" in chosen.stderr
    assert json.loads(relay.netfwd("status", "--output", "json").stdout)["backend"] == "iptables"

    relay.relay(["iptables-nft", "-t", "nat", "-F", owned.chain("lab-apply", "PRE")])  # e.g. a careless flush
    drift = relay.netfwd("status", expect=1)
    assert "DRIFT" in drift.stdout and "*:16443/tcp" in drift.stdout
    relay.netfwd("apply", spec, "--yes")
    relay.netfwd("status")
    relay.netfwd("remove")

    relay.relay(["iptables-legacy", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9999", "-j", "RETURN"])
    both = relay.netfwd("plan", spec, expect=3)
    assert "both iptables-legacy and iptables-nft hold rules" in both.stderr


@pytest.mark.parametrize("stage", ["before-write", "after-write", "after-rename", "after-records"])
def test_a_netfwd_killed_at_each_stage_is_finished_or_undone_by_the_next(lab, tmp_path, stage):
    """Deterministic SIGKILLs at each step of a change: the firewall holds old or new, and the next
    netfwd brings the records in line with it (no drift, nothing pending, a working rollback)."""
    relay = Relay(lab, "iptables-legacy", tmp_path)
    one, two = write_spec(lab, tmp_path / "one.yaml"), write_spec(lab, tmp_path / "two.yaml", port=B2)
    relay.netfwd("apply", one, "--yes")
    old = relay.owned()
    relay.netfwd("apply", two, "--yes", expect=-signal.SIGKILL, env={"NETFWD_CRASH_AT": stage})
    live = relay.owned()
    assert live == old if stage == "before-write" else live != old
    relay.netfwd("apply", two, "--yes")  # finishes or undoes the interrupted change, then applies
    status = json.loads(relay.netfwd("status", "--output", "json").stdout)
    assert status["drift"] is None and status["interrupted"] is None and status["pending"] is None
    relay.netfwd("rollback")
    assert relay.owned() == old


def test_firewalld_many_new_ipsets_in_one_step(relay_for, tmp_path):
    """From fwdbus.FILES_FROM new ipsets on (25 forwards, each with its own allow list), they reach
    firewalld as configuration files and one reload: runtime and permanent in step, traffic flows,
    other admins' objects untouched, and netfwd's next read finds exactly what it wrote."""
    relay = relay_for("firewalld")
    lab, a = relay.lab, relay.lab.addrs
    lab.start_server("onprem", B)
    relay.foreign("before")
    foreign = relay.foreign_part(relay.dump())
    spec = tmp_path / "many.yaml"
    forwards = "".join(f"""  - name: f{i}
    listen: {{port: {A + i}}}
    to: {{address: {a.onprem}, port: {B}}}
    allow: {{cidrs: [{a.allowed_cidr}, 198.18.{i}.0/24]}}
""" for i in range(25))
    spec.write_text(f"version: 1\ncluster: lab-many\nrelay: {{os: linux, interface: {a.relay_outside_if}}}\n"
                    f"forwards:\n{forwards}")
    applied = relay.netfwd("apply", str(spec), "--yes", env={"NETFWD_TIMING": "1"})
    assert "ipset files at" in applied.stderr  # the helper's phase log: they went in as files
    assert len([n for n in relay.relay(["firewall-cmd", "--get-ipsets"]).split() if n.startswith("netfwd-")]) == 25
    relay.netfwd("plan", str(spec))  # exit 0: runtime and permanent both hold exactly the spec
    assert len(json.loads(relay.netfwd("status", "--output", "json").stdout)["forwards"]) == 25
    assert lab.whoami("client", a.relay_outside, A + 24, source=a.client_allowed) == a.relay_inside
    assert not lab.connect("client", a.relay_outside, A + 24, source=a.client_denied, timeout=1).ok
    assert relay.foreign_part(relay.dump()) == foreign
    relay.netfwd("remove")
    assert "netfwd-" not in relay.relay(["firewall-cmd", "--permanent", "--get-ipsets"])
    assert relay.foreign_part(relay.dump()) == foreign


def test_firewalld_keeps_other_admins_runtime_only_rules(relay_for, tmp_path):
    """An admin's runtime-only service survives an apply that needs no reload (a forward added with a
    source list the cluster already has: its ipset is there); an apply or remove that needs one (an
    ipset comes or goes: a changed allow list, the last forward gone) exits 3 naming it and changes
    nothing, unless --allow-runtime-loss."""
    relay = relay_for("firewalld")
    lab, a = relay.lab, relay.lab.addrs
    lab.start_server("onprem", B)

    def spec(name: str, count: int, cidr: str) -> str:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"version: 1\ncluster: lab-apply\nrelay: {{os: linux, interface: {a.relay_outside_if}}}\n"
                        "forwards:\n" + "".join(f"""  - name: f{i}
    listen: {{port: {A + i}}}
    to: {{address: {a.onprem}, port: {B}}}
    allow: {{cidrs: [{cidr}]}}
""" for i in range(count)))
        return str(path)

    relay.netfwd("apply", spec("one", 1, a.allowed_cidr), "--yes")
    zone = lab.firewall_cmd("--get-default-zone").stdout.strip()
    lab.firewall_cmd("--add-service=http")  # another admin's runtime-only change
    relay.netfwd("apply", spec("two", 2, a.allowed_cidr), "--yes")  # the same sources: their ipset is there
    assert "http" in lab.firewall_cmd("--list-services").stdout.split()
    assert lab.whoami("client", a.relay_outside, A + 1, source=a.client_allowed) == a.relay_inside
    sets = [[n for n in lab.firewall_cmd(*conf, "--get-ipsets").stdout.split() if n.startswith("netfwd-")]
            for conf in ((), ("--permanent",))]
    assert len(sets[0]) == 1 and sets[0] == sets[1]  # one ipset, shared by both forwards

    before = relay.dump()
    for argv in (("apply", spec("wider", 2, f"{a.client_denied}/32"), "--yes"), ("remove",)):  # a new / a gone ipset
        refused = relay.netfwd(*argv, expect=3)
        assert f"{zone}: service http (runtime only)" in refused.stderr, refused.stderr
        assert relay.dump() == before
    relay.netfwd("remove", "--allow-runtime-loss")
    assert "netfwd-" not in lab.firewall_cmd("--get-ipsets").stdout
    assert "http" not in lab.firewall_cmd("--list-services").stdout.split()
