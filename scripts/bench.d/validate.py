"""`netfwd validate` of a 10,000-forward spec, whole CLI, against a bare libyaml parse of the same file.

Target (docs/performance.md): within 1.5x of `python -c "yaml.load(text, Loader=yaml.CSafeLoader)"`
(a process that starts, imports PyYAML and parses the file). Both run as whole processes, interleaved,
so the yardstick shares the machine's load; medians of RUNS. Also the in-process parts (parse,
model) and the JSON output. Usage: scripts/bench validate [RUNS]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
PYTHON = str(REPO / ".venv/bin/python") if (REPO / ".venv/bin/python").exists() else sys.executable
TARGET = 1.5


def big_spec(path: Path, count: int = 10_000) -> None:
    """The render bench's spec: half the forwards whitelisted to a region plus a CIDR."""
    lines = ["version: 1", "cluster: bench", "relay: {os: linux, interface: eth0}", "forwards:"]
    for i in range(count):
        lines += [f"  - name: fwd-{i}", f"    listen: {{port: {10000 + i}}}",
                  f"    to: {{address: 10.{i // 250}.{i % 250}.5, port: 6443}}"]
        if i % 2:
            lines.append("    allow: {regions: [cn-hangzhou], cidrs: [203.0.113.0/24]}")
    path.write_text("\n".join(lines) + "\n")


def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - started


def main() -> int:
    import os

    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "big.yaml"
        big_spec(spec)
        bare = [PYTHON, "-c", "import sys, yaml; yaml.load(open(sys.argv[1]).read(), Loader=yaml.CSafeLoader)",
                str(spec)]
        table = [PYTHON, "-m", "netfwd", "validate", str(spec)]
        as_json = [*table, "-o", "json"]
        samples: dict[str, list[float]] = {"bare": [], "table": [], "json": []}
        print(f"validate bench: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start")
        for _ in range(runs):  # interleaved: the yardstick sees the same load
            samples["bare"].append(timed(bare))
            samples["table"].append(timed(table))
            samples["json"].append(timed(as_json))

        from netfwd.spec import load_spec
        from netfwd.yamlsource import load_file

        parse = min(_cpu(lambda: load_file(spec)) for _ in range(5))
        load = min(_cpu(lambda: load_spec(spec)) for _ in range(5))
    bare_median = statistics.median(samples["bare"])
    print("| what (10,000 forwards, 1.2 MB) | wall median | vs bare libyaml |")
    print("|---|---:|---:|")
    print(f"| bare `yaml.load(..., CSafeLoader)` process | {bare_median:.2f} s | 1.00x |")
    ok = True
    for key, label in (("table", "`netfwd validate SPEC` (table)"), ("json", "`netfwd validate SPEC -o json`")):
        median = statistics.median(samples[key])
        ok &= median <= TARGET * bare_median
        print(f"| {label} | {median:.2f} s | **{median / bare_median:.2f}x** |")
    print(f"\nin-process CPU (best of 5): YAML parse {parse * 1000:.0f} ms, parse + model {load * 1000:.0f} ms; "
          f"load average {os.getloadavg()[0]:.1f} at end; target <= {TARGET}x: {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


def _cpu(work) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


if __name__ == "__main__":
    sys.exit(main())
