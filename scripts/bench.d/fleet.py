"""Fleet rollout over real SSH: the netfwd.relay collection vs one ansible.builtin.iptables task per rule.

Both runs use a fleet lab (netfwd.lab.fleet: 5 relay namespaces, each with its own sshd and on-prem
host; ansible-playbook in a controller namespace; pipelining on, no SSH connection sharing) and
the same 20 forwards per relay, each whitelisted to two source CIDRs:

  netfwd     ansible/examples/rollout.yml (role netfwd.relay.rollout, serial [1, "25%", "100%"]):
             per relay one forward task (one transaction), a probe of all 20 forwards from the
             vantage host, a confirm
  baseline   a play over all relays at once that writes the same rules with ansible.builtin.iptables:
             per forward and source a DNAT and a FORWARD accept, per forward a MASQUERADE, plus a
             `sysctl -w net.ipv4.ip_forward=1` command task (ansible.posix is not installed)

Each is timed for the first rollout and for a re-run with nothing to change (wall clock of
ansible-playbook). Target: netfwd at least 5x faster for both. Prints a markdown table for
docs/performance.md. Needs root.

Usage: .venv/bin/python scripts/bench.d/fleet.py [--relays 5] [--forwards 20]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

TARGET = 5.0
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)

BASELINE = """
- name: The same forwards, rule by rule with ansible.builtin.iptables
  hosts: relays
  gather_facts: false
  tasks:
    - name: Forwarding on
      ansible.builtin.command: sysctl -w net.ipv4.ip_forward=1
      changed_when: false
    - name: DNAT per forward and source
      ansible.builtin.iptables:
        table: nat
        chain: PREROUTING
        in_interface: "{{ relay_if }}"
        protocol: tcp
        source: "{{ item.1 }}"
        destination_port: "{{ item.0.listen }}"
        jump: DNAT
        to_destination: "{{ item.0.to }}:{{ item.0.port }}"
        comment: "{{ item.0.name }}"
      loop: "{{ forwards | subelements('sources') }}"
    - name: MASQUERADE per forward
      ansible.builtin.iptables:
        table: nat
        chain: POSTROUTING
        protocol: tcp
        destination: "{{ item.to }}"
        destination_port: "{{ item.port }}"
        jump: MASQUERADE
        comment: "{{ item.name }}"
      loop: "{{ forwards }}"
    - name: FORWARD accept per forward and source
      ansible.builtin.iptables:
        chain: FORWARD
        protocol: tcp
        source: "{{ item.1 }}"
        destination: "{{ item.0.to }}"
        destination_port: "{{ item.0.port }}"
        jump: ACCEPT
        comment: "{{ item.0.name }}"
      loop: "{{ forwards | subelements('sources') }}"
"""


def forwards(lab, node: str, count: int) -> list[dict]:
    relay = lab.addrs.relay(node)
    return [{"name": f"api-{i}", "listen": 16000 + i, "to": relay.onprem, "port": 6443,
             "sources": [lab.addrs.allowed_cidr, "198.51.100.0/24"]} for i in range(count)]


def spec(lab, node: str, count: int) -> dict:
    relay = lab.addrs.relay(node)
    return {"version": 1, "cluster": f"bench-{node}", "relay": {"os": "linux", "interface": relay.outside_if},
            "forwards": [{"name": f["name"], "listen": {"port": f["listen"]}, "to": {"address": f["to"], "port": f["port"]},
                          "allow": {"cidrs": f["sources"]}} for f in forwards(lab, node, count)]}


def fleet(relays: int):
    from netfwd.lab.fleet import FleetLab

    lab = FleetLab.up(relays=relays)
    try:
        for node in (*lab.relays, "client"):
            lab.start_sshd(node)
        lab.start_apiservers(6443)
    except BaseException:
        lab.down()
        raise
    return lab


def run(lab, collections: Path, inventory: dict, book: Path) -> tuple[float, dict]:
    path = lab.workdir / "inventory.json"
    path.write_text(json.dumps(inventory))
    started = time.perf_counter()
    done = subprocess.run(lab.ansible_argv("ansible-playbook", ["-i", str(path), str(book)]),
                          env=lab.ansible_env(collections), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    hosts = {m[0]: {"changed": int(m[2]), "failed": int(m[3]) + int(m[4])} for m in RECAP.findall(done.stdout)}
    if done.returncode != 0 or any(h["failed"] for h in hosts.values()):
        raise SystemExit(f"{book.name} failed:\n{done.stdout[-3000:]}{done.stderr[-2000:]}")
    return seconds, hosts


def measure(kind: str, relays: int, count: int, collections: Path) -> list[tuple[str, float, int]]:
    lab = fleet(relays)
    try:
        if kind == "netfwd":
            book = REPO / "ansible" / "examples" / "rollout.yml"
            per_relay = {node: {"netfwd_backend": "iptables", "netfwd_spec": spec(lab, node, count)}
                         for node in lab.relays}
            inventory = lab.inventory(relay_vars=per_relay)
            inventory["all"]["children"]["relays"]["vars"] = {
                "netfwd_vantage": "vantage", "netfwd_probe_server_name": "kubernetes",
                "netfwd_probe_ca": str(lab.ca_file), "netfwd_confirm_timeout": 120}
        else:
            book = lab.workdir / "baseline.yml"
            book.write_text(BASELINE)
            per_relay = {node: {"forwards": forwards(lab, node, count), "relay_if": lab.addrs.relay(node).outside_if}
                         for node in lab.relays}
            inventory = lab.inventory(relay_vars=per_relay)
        rows = []
        for label in ("first rollout", "re-run, no change"):
            seconds, hosts = run(lab, collections, inventory, book)
            rows.append((label, seconds, sum(h["changed"] for h in hosts.values())))
        if kind == "netfwd":  # the rollout really forwards: one forward per relay, from the vantage host
            for node in lab.relays:
                got = lab.https_get("client", lab.addrs.relay(node).outside, 16000 + count - 1,
                                    server_name="kubernetes", timeout=3)
                if not got.ok:
                    raise SystemExit(f"netfwd rollout did not forward through {node}: {got.reason}")
        return rows
    finally:
        lab.down()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--relays", type=int, default=5)
    parser.add_argument("--forwards", type=int, default=20)
    args = parser.parse_args()
    from netfwd.lab.fleet import install_collection

    with tempfile.TemporaryDirectory(prefix="netfwd-bench-fleet-") as scratch:
        collections = install_collection(Path(scratch))
        netfwd = measure("netfwd", args.relays, args.forwards, collections)
        baseline = measure("baseline", args.relays, args.forwards, collections)
    print(f"\n{args.relays} relays x {args.forwards} forwards (2 source CIDRs each), ansible-core over SSH, "
          "pipelining, no connection sharing\n")
    print("| run | netfwd.relay rollout (canary batches) | ansible.builtin.iptables per rule (all at once) | speed-up |")
    print("|---|---|---|---|")
    ok = True
    for (label, ours, our_changed), (_, theirs, their_changed) in zip(netfwd, baseline):
        ratio = theirs / ours
        ok &= ratio >= TARGET
        print(f"| {label} | {ours:.1f} s (changed={our_changed}) | {theirs:.1f} s (changed={their_changed}) | "
              f"{ratio:.1f}x {'ok' if ratio >= TARGET else f'BELOW {TARGET:g}x'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
