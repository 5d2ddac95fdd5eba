"""Probe benchmark: 1,000 lab endpoints, open, closed and filtered mixed, probed with TCP by
`netfwd probe` and by `nmap -sT -T4` on the same targets, from the lab's client namespace. Needs root.

Budgets (exit 1 when one is missed):
  - netfwd's wall time within 1.2x of nmap's (medians of RUNS interleaved runs);
  - the same open/closed/filtered state for every endpoint, in every run;
  - netfwd's peak memory (max RSS) under 150 MB.

The relay namespace listens on 300 ports and rejects or drops others with iptables rules inside
the namespace; its ICMP rate limit is lifted there (a namespaced sysctl) so every REJECT answers.
Usage: .venv/bin/python scripts/bench.d/probe.py [RUNS] [--timeout S]
"""

from __future__ import annotations

import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netfwd.lab import Lab  # noqa: E402

BASE = 20000
LAYOUT = [  # (first port, count, what the relay does, nmap's state)
    (BASE, 300, "listen", "open"),
    (BASE + 300, 250, "nothing", "closed"),
    (BASE + 550, 100, "reject-tcp-reset", "closed"),
    (BASE + 650, 200, "drop", "filtered"),
    (BASE + 850, 150, "reject-admin-prohibited", "filtered"),
]
RATIO_BUDGET, RSS_BUDGET_MB = 1.2, 150
LISTENER = """
import signal, socket, sys
socks = []
for port in range(int(sys.argv[1]), int(sys.argv[2])):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(4096); socks.append(s)
print("ready", flush=True)
signal.pause()
"""


def setup(lab: Lab, workdir: Path) -> tuple[Path, str, subprocess.Popen]:
    relay = lab.addrs.relay_outside
    first, count, _, _ = LAYOUT[0]
    listener = subprocess.Popen(["ip", "netns", "exec", lab.ns("relay"), sys.executable, "-c", LISTENER,
                                 str(first), str(first + count)], stdout=subprocess.PIPE, text=True)
    assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
    for start, n, action, _ in LAYOUT[1:]:
        span = f"{start}:{start + n - 1}"
        rule = {"reject-tcp-reset": ["-j", "REJECT", "--reject-with", "tcp-reset"],
                "drop": ["-j", "DROP"],
                "reject-admin-prohibited": ["-j", "REJECT", "--reject-with", "icmp-admin-prohibited"]}.get(action)
        if rule:
            lab.run("relay", ["iptables", "-A", "INPUT", "-p", "tcp", "--dport", span, *rule])
    lab.run("relay", ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])  # inside the lab's namespace only
    ports = [p for start, n, _, _ in LAYOUT for p in range(start, start + n)]
    random.Random(5).shuffle(ports)  # mixed order: filtered ones are not all at the end
    targets = workdir / "targets.txt"
    targets.write_text("".join(f"{relay}:{p}\n" for p in ports))
    return targets, relay, listener


def expected_states() -> dict[int, str]:
    return {p: state for start, n, _, state in LAYOUT for p in range(start, start + n)}


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_nmap(lab: Lab, relay: str, out: Path) -> tuple[float, float, dict[int, str]]:
    """Wall seconds, CPU seconds, state per port."""
    span = f"{BASE}-{BASE + sum(n for _, n, _, _ in LAYOUT) - 1}"
    cpu, started = cpu_of_children(), time.perf_counter()
    subprocess.run(["ip", "netns", "exec", lab.ns("client"), "nmap", "-sT", "-T4", "-n", "-Pn", "-p", span, relay,
                    "-oX", str(out)], check=True, capture_output=True)
    return time.perf_counter() - started, cpu_of_children() - cpu, parse_nmap(out.read_text())


def parse_nmap(xml: str) -> dict[int, str]:
    """Every port's state, including the ones nmap folds into <extraports> (listed per reason)."""
    states: dict[int, str] = {}
    host = ET.fromstring(xml).find("host")
    assert host is not None
    ports = host.find("ports")
    assert ports is not None
    for extra in ports.findall("extraports"):
        for reason in extra.findall("extrareasons"):
            for part in reason.get("ports", "").split(","):
                if part:
                    low, _, high = part.partition("-")
                    for port in range(int(low), int(high or low) + 1):
                        states[port] = extra.get("state", "?")
    for port in ports.findall("port"):
        state = port.find("state")
        states[int(port.get("portid", 0))] = state.get("state", "?") if state is not None else "?"
    return states


def run_netfwd(lab: Lab, targets: Path, timeout: float) -> tuple[float, float, float, dict[int, str], dict[str, int]]:
    """Wall seconds, CPU seconds, peak RSS (MB), state per port, reasons tally."""
    import json

    argv = ["ip", "netns", "exec", lab.ns("client"), sys.executable, "-m", "netfwd", "probe", "--targets-file",
            str(targets), "--until", "tcp", "--no-locate", "--timeout", str(timeout), "-o", "json"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    cpu, started = cpu_of_children(), time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = child.communicate()
    wall = time.perf_counter() - started
    cpu = cpu_of_children() - cpu
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far
    if child.returncode not in (0, 1):
        raise SystemExit(f"netfwd probe failed ({child.returncode}): {err.decode()}")
    doc = json.loads(out)
    states, reasons = {}, {}
    for probe in doc["probes"]:
        tcp = next(s for s in probe["stages"] if s["name"] == "tcp")
        states[int(probe["dial"].rsplit(":", 1)[1])] = tcp["detail"]["state"]
        reasons[tcp["reason"]] = reasons.get(tcp["reason"], 0) + 1
    return wall, cpu, peak_mb, states, reasons


def main() -> int:
    if os.geteuid() != 0:
        print("probe bench: needs root (network namespaces); skipped")
        return 0
    args = sys.argv[1:]
    timeout = 0.5  # nmap -T4's initial RTT timeout; nmap itself adapts down to 0.1 s on this link
    if "--timeout" in args:
        at = args.index("--timeout")
        timeout = float(args[at + 1])
        del args[at:at + 2]
    runs = int(args[0]) if args else 5
    lab = Lab.up()
    listener = None
    try:
        targets, relay, listener = setup(lab, lab.workdir)
        expected = expected_states()
        nmap_times, netfwd_times, nmap_cpu, netfwd_cpu, peaks, mismatches = [], [], [], [], [], 0
        reasons: dict[str, int] = {}
        for index in range(runs):
            seconds, cpu, mb, ours, reasons = run_netfwd(lab, targets, timeout)
            netfwd_times.append(seconds)
            netfwd_cpu.append(cpu)
            peaks.append(mb)
            took, cpu, theirs = run_nmap(lab, relay, lab.workdir / f"nmap-{index}.xml")
            nmap_times.append(took)
            nmap_cpu.append(cpu)
            differ = [p for p in expected if ours.get(p) != theirs.get(p)]
            wrong = [p for p in expected if ours.get(p) != expected[p]]
            mismatches += len(differ)
            if differ or wrong:
                print(f"run {index}: {len(differ)} endpoint(s) classified differently from nmap, "
                      f"{len(wrong)} unlike the layout (e.g. {(differ or wrong)[:5]})")
        ours_med, theirs_med = statistics.median(netfwd_times), statistics.median(nmap_times)
        ratio = ours_med / theirs_med
        peak = max(peaks)
        counts = {state: sum(1 for s in expected.values() if s == state) for state in ("open", "closed", "filtered")}
        print(f"endpoints: {len(expected)} ({', '.join(f'{n} {s}' for s, n in counts.items())}); runs={runs}; "
              f"netfwd --timeout {timeout}")
        print(f"{'nmap -sT -T4 wall':<44} median {theirs_med:6.3f} s   min {min(nmap_times):6.3f}   "
              f"max {max(nmap_times):6.3f}   CPU median {statistics.median(nmap_cpu):6.3f} s")
        print(f"{'netfwd probe --until tcp wall':<44} median {ours_med:6.3f} s   min {min(netfwd_times):6.3f}   "
              f"max {max(netfwd_times):6.3f}   CPU median {statistics.median(netfwd_cpu):6.3f} s")
        print(f"{'load average (1 min) at the end':<44} {os.getloadavg()[0]:.2f}")
        ok_ratio, ok_same, ok_rss = ratio <= RATIO_BUDGET, mismatches == 0, peak < RSS_BUDGET_MB
        print(f"{'ratio netfwd / nmap (medians)':<44} {ratio:6.2f}x   (budget {RATIO_BUDGET}x: "
              f"{'ok' if ok_ratio else 'EXCEEDED'})")
        print(f"{'same open/closed/filtered as nmap':<44} {'every endpoint, every run' if ok_same else 'NO'}")
        print(f"{'netfwd peak RSS':<44} {peak:6.1f} MB   (budget {RSS_BUDGET_MB} MB: "
              f"{'ok' if ok_rss else 'EXCEEDED'})")
        print(f"{'netfwd reasons (last run)':<44} {', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}")
        return 0 if ok_ratio and ok_same and ok_rss else 1
    finally:
        if listener is not None:
            os.kill(listener.pid, signal.SIGTERM)
            listener.wait(timeout=5)
        lab.down()


if __name__ == "__main__":
    sys.exit(main())
