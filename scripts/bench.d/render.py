"""Benchmark: render a 10,000-forward spec to every Linux dialect; CLI start-up time.

Targets (docs/performance.md): rendering 10,000 forwards to all dialects < 1 s with peak memory
< 200 MB; `netfwd --help` < 2x `python -c "import click"`.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
# the CLI runs this checkout's netfwd (a worktree's), not the one the virtualenv's install points at
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def big_spec(path: Path, count: int = 10_000, relay_os: str = "linux") -> None:
    lines = ["version: 1", "cluster: bench", f"relay: {{os: {relay_os}, interface: eth0}}", "forwards:"]
    for i in range(count):
        lines += [f"  - name: fwd-{i}", f"    listen: {{port: {10000 + i}}}",
                  f"    to: {{address: 10.{i // 250}.{i % 250}.5, port: 6443}}"]
        if i % 2:  # half of them whitelisted: a region plus an office range
            lines.append("    allow: {regions: [cn-hangzhou], cidrs: [203.0.113.0/24]}")
    path.write_text("\n".join(lines) + "\n")


def median_seconds(argv: list[str], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=ENV)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    from netfwd.dialects import dialects_for, render_files
    from netfwd.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec_file = Path(tmp) / "big.yaml"
        big_spec(spec_file)
        start = time.perf_counter()
        spec = load_spec(spec_file)
        load = time.perf_counter() - start
        dialects = dialects_for("linux")
        gc.collect()
        rows, size = [], 0
        for dialect in dialects:  # each alone (a fresh spec object defeats the shared ruleset cache)
            fresh = load_spec(spec_file) if dialect is not dialects[0] else spec
            start = time.perf_counter()
            text = "".join(render_files(fresh, [dialect]).values())
            rows.append((dialect.name, time.perf_counter() - start, len(text)))
            size += len(text)
        spec = load_spec(spec_file)
        start = time.perf_counter()
        render_files(spec, dialects)  # what `netfwd render --dialect all` does
        total = time.perf_counter() - start
        spec = load_spec(spec_file)
        tracemalloc.start()
        render_files(spec, dialects)
        _, peak_render = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        out_dir = Path(tmp) / "out"
        walls, cpus = [], []
        for _ in range(5):  # whole CLI: wall (what the target is about) and CPU (what the load does not stretch)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            subprocess.run([str(REPO / ".venv/bin/netfwd"), "render", str(spec_file), "--dialect", "all",
                            "--out", str(out_dir)], check=True, capture_output=True, env=ENV)
            walls.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        cli_total, cli_cpu = statistics.median(walls), statistics.median(cpus)
        peak_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print("| dialect | render + remove, 10,000 forwards | output |")
    print("|---|---|---|")
    for name, elapsed, chars in rows:
        print(f"| {name} | {elapsed * 1000:.0f} ms | {chars / 1e6:.1f} MB |")
    print(f"| **all Linux dialects** | **{total * 1000:.0f} ms** | {size / 1e6:.1f} MB |")
    with tempfile.TemporaryDirectory() as tmp:
        windows_file = Path(tmp) / "windows.yaml"
        big_spec(windows_file, relay_os="windows")
        windows = load_spec(windows_file)
        start = time.perf_counter()
        text = "".join(render_files(windows, dialects_for("windows")).values())
        print(f"| **all Windows dialects** (netsh, powershell) | **{(time.perf_counter() - start) * 1000:.0f} ms**"
              f" | {len(text) / 1e6:.1f} MB |")
    print()
    print(f"- load + validate the 10,000-forward spec: {load * 1000:.0f} ms")
    print(f"- Python heap peak while rendering all dialects (tracemalloc): {peak_render / 1e6:.0f} MB")
    print(f"- whole CLI `netfwd render --dialect all --out DIR` (median of 5): {cli_total:.2f} s wall, "
          f"{cli_cpu:.2f} s CPU, peak RSS {peak_rss_mb:.0f} MB (target < 1 s; load average "
          f"{os.getloadavg()[0]:.1f})")

    click = median_seconds([sys.executable, "-c", "import click"])
    help_ = median_seconds([str(REPO / ".venv/bin/netfwd"), "--help"])
    print(f"- `python -c 'import click'`: {click * 1000:.0f} ms; `netfwd --help`: {help_ * 1000:.0f} ms "
          f"({help_ / click:.2f}x, target < 2x)")


if __name__ == "__main__":
    main()
