"""Lab timings: `lab up` and `lab down` must each stay under 2 s. Needs root.

Prints one line per measurement (median and max of N runs) and exits 1 if a budget is exceeded.
Usage: .venv/bin/python scripts/bench.d/lab.py [RUNS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from netfwd.lab import Lab  # noqa: E402

BUDGET = 2.0


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def line(label: str, samples: list[float], budget: float | None = None) -> bool:
    median, worst = statistics.median(samples), max(samples)
    ok = budget is None or worst < budget
    limit = f"  (budget {budget:.1f} s: {'ok' if ok else 'EXCEEDED'})" if budget else ""
    print(f"{label:<44} median {median * 1000:7.1f} ms   max {worst * 1000:7.1f} ms   n={len(samples)}{limit}")
    return ok


def main() -> int:
    if os.geteuid() != 0:
        print("lab bench: needs root (network namespaces); skipped")
        return 0
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    results: dict[str, list[float]] = {}
    for router in (False, True):
        tag = "router" if router else "basic"
        for _ in range(runs):
            seconds, lab = timed(lambda: Lab.up(router=router))
            results.setdefault(f"Lab.up ({tag})", []).append(seconds)
            if not router:
                seconds, pid = timed(lambda: lab.start_server("onprem", 6443, kind="apiserver"))
                results.setdefault("start_server apiserver (cert + process)", []).append(seconds)
                lab.start_server("relay", 7000)
                seconds, _ = timed(lambda: lab.connect("client", lab.addrs.relay_outside, 7000))
                results.setdefault("connect client -> relay (whoami)", []).append(seconds)
            seconds, _ = timed(lab.down)
            results.setdefault(f"Lab.down ({tag}{', 2 servers' if not router else ''})", []).append(seconds)
    for _ in range(max(1, runs // 5)):
        lab = Lab.up()
        seconds, _ = timed(lab.start_firewalld)
        results.setdefault("start_firewalld (until --state running)", []).append(seconds)
        seconds, _ = timed(lab.down)
        results.setdefault("Lab.down (with firewalld)", []).append(seconds)
    netfwd = [sys.executable, "-m", "netfwd", "lab"]
    for _ in range(max(1, runs // 5)):
        name = f"b{os.getpid() % 10000}"
        seconds, _ = timed(lambda: subprocess.run([*netfwd, "up", "--name", name, "-o", "json"], check=True,
                                                  capture_output=True))
        results.setdefault("netfwd lab up (CLI, with stand-in)", []).append(seconds)
        seconds, _ = timed(lambda: subprocess.run([*netfwd, "down", "--name", name], check=True,
                                                  capture_output=True))
        results.setdefault("netfwd lab down (CLI)", []).append(seconds)
        seconds, _ = timed(lambda: subprocess.run([*netfwd, "up", "--name", name, "--no-apiserver", "-o", "json"],
                                                  check=True, capture_output=True))
        results.setdefault("netfwd lab up --no-apiserver (CLI)", []).append(seconds)
        subprocess.run([*netfwd, "down", "--name", name], check=True, capture_output=True)
        seconds, _ = timed(lambda: subprocess.run([*netfwd, "demo", "-o", "json"], check=True, capture_output=True))
        results.setdefault("netfwd lab demo (CLI, whole flow)", []).append(seconds)
    ok = True
    for label, samples in results.items():
        budgeted = label.startswith(("Lab.up", "Lab.down", "netfwd lab up", "netfwd lab down"))
        ok &= line(label, samples, BUDGET if budgeted else None)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
