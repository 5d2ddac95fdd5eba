"""A typical relay: the bundled example (one whitelisted forward), every command a user runs, whole CLI.

So that a regression at small scale shows too (the other benches are about 1,000-10,000 forwards).
In a lab (its relay's outside interface named as in the example), with a scratch root and state
directory: validate and render the bundled file as it is; plan, cold apply, no-change apply and
status of the example adapted to the lab (its target becomes the lab's on-prem API-server stand-in,
the lab's client range joins the whitelist) on the iptables, iptables-legacy and nft backends; then
`netfwd probe` from the lab's client through the relay to the stand-in (a healthy path, TLS
included). Medians of RUNS runs; the yardstick `python -c pass` is measured in the same run.
Needs root for the lab part. Usage: .venv/bin/python scripts/bench.d/typical.py [RUNS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PYTHON = str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable
EXAMPLE = REPO / "rules" / "example.yaml"
BACKENDS = ("iptables", "iptables-legacy", "nft")


def timed(argv: list[str], env: dict | None = None, ok: tuple[int, ...] = (0,)) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO)
    elapsed = time.perf_counter() - started
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(argv[2:6])} failed ({done.returncode}): {done.stderr[-600:]}")
    return elapsed


def netfwd(*args: str) -> list[str]:
    return [PYTHON, "-m", "netfwd", *args]


def row(label: str, samples: list[float]) -> None:
    print(f"| {label} | {statistics.median(samples) * 1000:.0f} ms | {min(samples) * 1000:.0f}-"
          f"{max(samples) * 1000:.0f} ms |")


def offline(runs: int, work: Path) -> None:
    floor = [timed([PYTHON, "-c", "pass"]) for _ in range(runs)]
    row("`python -c pass` (yardstick: interpreter start-up)", floor)
    row("`netfwd validate rules/example.yaml`", [timed(netfwd("validate", str(EXAMPLE))) for _ in range(runs)])
    row("`netfwd render rules/example.yaml --dialect all --out DIR`",
        [timed(netfwd("render", str(EXAMPLE), "--dialect", "all", "--out", str(work / "out"))) for _ in range(runs)])


def lab_spec(lab) -> str:
    a = lab.addrs
    text = EXAMPLE.read_text().replace("192.168.10.5", a.onprem)
    return text.replace("cidrs: [203.0.113.0/24]", f"cidrs: [203.0.113.0/24, {a.allowed_cidr}]")


def live(runs: int, work: Path) -> None:
    from netfwd.lab import Lab

    with Lab.up(relay_outside_if="eth0") as lab:
        spec = work / "lab-example.yaml"
        spec.write_text(lab_spec(lab))
        relay = lab.ns("relay")
        for backend in BACKENDS:
            if backend == "iptables-legacy" and not shutil.which("iptables-legacy-restore"):
                continue
            samples: dict[str, list[float]] = {}
            for run in range(runs):
                lab.run("relay", ["sh", "-c", "nft flush ruleset; iptables-legacy -t nat -F 2>/dev/null; "
                                              "iptables-legacy -t nat -X 2>/dev/null; iptables-legacy -F 2>/dev/null; "
                                              "iptables-legacy -X 2>/dev/null; true"])
                place = work / f"{backend}-{run}"
                (place / "root").mkdir(parents=True)
                env = {**os.environ, "NETFWD_ROOT": str(place / "root"), "NETFWD_STATE_DIR": str(place / "state"),
                       "NETFWD_PERSIST": "no"}
                common = ("--backend", backend, "--netns", relay)
                samples.setdefault("plan", []).append(timed(netfwd("plan", str(spec), *common), env, ok=(0, 4)))
                samples.setdefault("cold", []).append(timed(netfwd("apply", str(spec), "--yes", *common), env))
                samples.setdefault("again", []).append(timed(netfwd("apply", str(spec), "--yes", *common), env))
                samples.setdefault("status", []).append(timed(netfwd("status", *common), env, ok=(0, 1)))
            row(f"`netfwd plan` ({backend})", samples["plan"])
            row(f"`netfwd apply`, cold ({backend})", samples["cold"])
            row(f"`netfwd apply`, no change ({backend})", samples["again"])
            row(f"`netfwd status` ({backend})", samples["status"])
        a = lab.addrs
        lab.start_server("onprem", 6443, kind="apiserver")
        probe = netfwd("probe", "--netns", lab.ns("client"), "--via", f"{a.relay_outside}:16443",
                       "--target", f"{a.onprem}:6443", "--ca", str(lab.ca_file), "--server-name", "kubernetes",
                       "--timeout", "2", "-o", "json")
        row("`netfwd probe` through the relay (healthy path: TCP, TLS, API)", [timed(probe) for _ in range(runs)])


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    print(f"typical relay bench: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start")
    print("| command (bundled example: 1 forward, region + CIDR whitelist) | median | min-max |")
    print("|---|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="netfwd-typical-") as tmp:
        offline(runs, Path(tmp))
        if os.geteuid() != 0:
            print("typical relay bench: the lab part needs root (network namespaces); skipped")
            return 0
        live(runs, Path(tmp))
    print(f"\nload average {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
