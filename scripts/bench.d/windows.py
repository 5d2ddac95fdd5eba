"""Benchmark for the Windows dialects: render a 10,000-forward Windows spec to netsh and
PowerShell (apply + remove), and read the scripts back.

Target (docs/performance.md): rendering 10,000 forwards to all dialects < 1 s, peak memory < 200 MB.
Parsing back is not budgeted (tests only) but is reported.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def big_spec(path: Path, count: int = 10_000) -> None:
    lines = ["version: 1", "cluster: bench", "relay: {os: windows}", "forwards:"]
    for i in range(count):
        target = f"10.{i // 250}.{i % 250}.5" if i % 4 else f'"fd00::{i:x}"'  # a quarter v4tov6
        lines += [f"  - name: fwd-{i}", f"    listen: {{port: {10000 + i}}}",
                  f"    to: {{address: {target}, port: 6443}}"]
        if i % 2:  # half of them whitelisted: a region plus an office range
            lines.append("    allow: {regions: [cn-hangzhou], cidrs: [203.0.113.0/24]}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    from netfwd.dialects import dialects_for, render_files
    from netfwd.spec import load_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec_file, small_file = Path(tmp) / "big.yaml", Path(tmp) / "small.yaml"
        big_spec(spec_file)
        big_spec(small_file, 1_000)
        fresh = lambda: load_spec(spec_file)  # noqa: E731 - a new Spec object defeats the plan cache
        small = load_spec(small_file)
        dialects = dialects_for("windows")
        rows = []
        for dialect in dialects:
            spec = fresh()
            start = time.perf_counter()
            size = sum(map(len, render_files(spec, [dialect]).values()))
            rendered = time.perf_counter() - start
            start = time.perf_counter()
            essences = dialect.parse(dialect.render(small))
            parsed = time.perf_counter() - start
            assert essences == dialect.expected(small)
            rows.append((dialect.name, rendered, parsed, size))
        spec = fresh()
        start, cpu = time.perf_counter(), time.process_time()
        render_files(spec, dialects)  # what `netfwd render --dialect all` does for a Windows spec
        total, total_cpu = time.perf_counter() - start, time.process_time() - cpu
        spec = fresh()
        tracemalloc.start()
        render_files(spec, dialects)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    print("| dialect | render + remove, 10,000 forwards | output | parse back 1,000 forwards (tests only) |")
    print("|---|---:|---:|---:|")
    for name, rendered, parsed, chars in rows:
        print(f"| {name} | {rendered * 1000:.0f} ms | {chars / 1e6:.1f} MB | {parsed * 1000:.0f} ms |")
    print(f"| **both Windows dialects** | **{total * 1000:.0f} ms** ({total_cpu * 1000:.0f} ms CPU) | | |")
    print(f"\n- Python heap peak while rendering both (tracemalloc): {peak / 1e6:.0f} MB")
    print(f"- load average while measuring: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
