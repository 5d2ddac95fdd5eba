"""Benchmark: `netfwd explain` against a 10,000-rule ruleset (budgets: one packet, the whole CLI,
< 0.5 s; 10,000 packets with --packets < 5 s).

The ruleset is what a relay with 5,000 forwards carries (netfwd's own layout: a DNAT per forward in
NETFWD-PRE, a FORWARD accept per forward, masquerade), as iptables-save prints it. Figures go to
docs/performance.md (## Explain). Exit 1 when a budget is missed.
"""

from __future__ import annotations

import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = 10_000
PACKETS = 10_000
BUDGET_ONE, BUDGET_MANY = 0.5, 5.0
RUNS = 3


def ruleset() -> str:
    forwards = RULES // 2
    pre, fwd = [], []
    for n in range(forwards):
        port, target = 10000 + n, f"10.{2 + n // 60000}.{(n // 250) % 250}.{n % 250 + 1}"
        tag = f'-m comment --comment "netfwd:bench/f{n}"'
        pre.append(f"-A NETFWD-PRE -s 203.0.{n % 250}.0/24 -p tcp -m tcp --dport {port} {tag} "
                   f"-j DNAT --to-destination {target}:6443")
        fwd.append(f"-A NETFWD-FWD -d {target}/32 -p tcp -m tcp --dport 6443 -m conntrack --ctstate DNAT {tag} "
                   "-j ACCEPT")
    return "\n".join(["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
                      ":POSTROUTING ACCEPT [0:0]", ":NETFWD-PRE - [0:0]", "-A PREROUTING -j NETFWD-PRE", *pre,
                      "-A POSTROUTING -m conntrack --ctstate DNAT -j MASQUERADE", "COMMIT", "*filter",
                      ":INPUT ACCEPT [0:0]", ":FORWARD DROP [0:0]", ":OUTPUT ACCEPT [0:0]", ":NETFWD-FWD - [0:0]",
                      "-A FORWARD -j NETFWD-FWD", *fwd, "COMMIT"]) + "\n"


ROUTES = [{"dst": "203.0.0.0/16", "dev": "ext0", "prefsrc": "203.0.255.1"},
          {"dst": "10.0.0.0/8", "dev": "int0", "prefsrc": "10.255.255.1"},
          {"type": "local", "table": "local", "dst": "203.0.255.1", "dev": "ext0"}]


def cli(*args: str) -> tuple[float, float]:
    """(wall, CPU) of one whole `netfwd explain` process: CPU too, because this machine is shared
    and wall-clock figures swing with the other work on it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "netfwd", "explain", *args], capture_output=True, text=True,
                          cwd=ROOT)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0, 1):
        raise SystemExit(f"explain failed: {done.stderr.strip()}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> int:
    rng = random.Random(14)
    with tempfile.TemporaryDirectory() as tmp:
        rules, routes, packets = Path(tmp, "save.txt"), Path(tmp, "routes.json"), Path(tmp, "packets.jsonl")
        rules.write_text(ruleset())
        routes.write_text(json.dumps(ROUTES))
        lines = []
        for _ in range(PACKETS):
            n = rng.randrange(RULES // 2)
            src = f"203.0.{n % 250 if rng.random() < 0.8 else (n + 1) % 250}.{rng.randrange(1, 250)}"
            lines.append(json.dumps({"src": src, "dst": "203.0.255.1", "dport": 10000 + n}))
        packets.write_text("\n".join(lines) + "\n")
        base = ["--ruleset", str(rules), "--routes", str(routes)]
        one = [cli(*base, "--src", "203.0.7.9", "--dst", "203.0.255.1", "--dport", "14007") for _ in range(RUNS)]
        many = [cli(*base, "--packets", str(packets), "-o", "json") for _ in range(RUNS)]
    wall_one, cpu_one = statistics.median(w for w, _ in one), statistics.median(c for _, c in one)
    wall_many, cpu_many = statistics.median(w for w, _ in many), statistics.median(c for _, c in many)
    # Judged on CPU time: wall time on this shared machine includes waiting for a core.
    ok = cpu_one < BUDGET_ONE and cpu_many < BUDGET_MANY
    print(f"explain, {RULES:,}-rule iptables-save: one packet (whole CLI) median {wall_one:.2f} s wall, "
          f"{cpu_one:.2f} s CPU (budget {BUDGET_ONE} s); {PACKETS:,} packets with --packets median "
          f"{wall_many:.2f} s wall, {cpu_many:.2f} s CPU (budget {BUDGET_MANY} s) -> {'ok' if ok else 'OVER BUDGET'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
