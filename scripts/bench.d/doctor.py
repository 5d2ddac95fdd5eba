"""Doctor timings: `netfwd doctor` on a healthy lab relay must finish in under 2 s.

Measures, on a lab relay with the spec applied (iptables-restore dialect; sysctl.d in a scratch root):
the CLI end to end (Python start-up, imports, every relay check), the checks alone in-process with
the slowest ones named, how the firewall checks scale with the number of forwards, the Windows
report checks, and `netfwd audit patch` on a stock kubeadm manifest. Needs root for the lab parts.
Exits 1 if the 2 s budget is exceeded (by the median), or the whole CLI on 1,000 forwards takes
more than 5x the same on 10. Usage: scripts/bench doctor [RUNS]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

BUDGET = 2.0
SCALE = (10, 100, 1000)
SCALE_TARGET = 5.0  # doctor on 1,000 forwards, whole CLI, within 5x of the same on 10 (linear)


def spec_text(lab, count: int) -> str:
    a = lab.addrs
    lines = ["version: 1", "cluster: bench", f"relay: {{os: linux, interface: {a.relay_outside_if}}}", "forwards:"]
    for i in range(count):
        lines += [f"  - name: f{i}", f"    listen: {{port: {16443 + i}}}",
                  f"    to: {{address: {a.onprem}, port: {6443 + i}}}", f"    allow: {{cidrs: [{a.allowed_cidr}]}}"]
    return "\n".join(lines) + "\n"


def apply(lab, text: str, root: Path) -> None:
    from netfwd.dialects import get_dialect
    from netfwd.spec import parse_spec

    script = get_dialect("iptables-restore").render(parse_spec(text, "bench.yaml"))
    lab.run("relay", ["env", f"NETFWD_ROOT={root}", "NETFWD_PERSIST=no", "bash", "-s"], input=script, timeout=120)


def line(label: str, samples: list[float], budget: float | None = None) -> bool:
    median, worst = statistics.median(samples), max(samples)
    ok = budget is None or median < budget
    limit = f"  (budget {budget:.1f} s: {'ok' if ok else 'EXCEEDED'})" if budget else ""
    print(f"{label:<52} median {median * 1000:8.1f} ms   max {worst * 1000:8.1f} ms   n={len(samples)}{limit}")
    return ok


def lab_part(runs: int) -> bool:
    from netfwd.doctor import doctor
    from netfwd.lab import Lab
    from netfwd.spec import parse_spec

    ok = True
    with tempfile.TemporaryDirectory() as tmp, Lab.up() as lab:
        root = Path(tmp)
        text = spec_text(lab, 1)
        (root / "spec.yaml").write_text(text)
        apply(lab, text, root)
        argv = [sys.executable, "-m", "netfwd", "doctor", str(root / "spec.yaml"), "--netns", lab.ns("relay"),
                "--root", str(root), "-o", "json"]
        cli = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(argv, capture_output=True, text=True)
            cli.append(time.perf_counter() - started)
            if done.returncode != 0:
                print(done.stdout[-2000:], done.stderr[-2000:])
                return False
        ok &= line("netfwd doctor (CLI, healthy relay, 1 forward)", cli, BUDGET)
        spec = parse_spec(text, "bench.yaml")
        inproc, per_check = [], {}
        for _ in range(runs):
            report = doctor(spec, netns=lab.ns("relay"), root=str(root))
            inproc.append(report.seconds)
            for result in report.results:
                per_check.setdefault(result.name, []).append(result.seconds)
        line("  checks only (in-process)", inproc)
        for name, samples in sorted(per_check.items(), key=lambda item: -statistics.median(item[1]))[:5]:
            line(f"    {name}", samples)
        whole: dict[int, float] = {}
        for count in SCALE:
            text = spec_text(lab, count)
            lab.run("relay", ["sh", "-c", "nft flush ruleset"])
            apply(lab, text, root)
            (root / "spec.yaml").write_text(text)
            spec = parse_spec(text, "bench.yaml")
            samples = [doctor(spec, netns=lab.ns("relay"), root=str(root)).seconds for _ in range(max(1, runs // 5))]
            line(f"  checks, {count} forwards ({3 * count + 1} owned rules)", samples)
            cli_samples = []
            for _ in range(max(3, runs // 3)):
                started = time.perf_counter()
                subprocess.run(argv, capture_output=True, check=False)
                cli_samples.append(time.perf_counter() - started)
            whole[count] = statistics.median(cli_samples)
            line(f"  whole CLI, {count} forwards", cli_samples)
        ratio = whole[SCALE[-1]] / whole[SCALE[0]]
        print(f"whole CLI: {SCALE[-1]} forwards take {ratio:.1f}x the time of {SCALE[0]} (target <= {SCALE_TARGET}x)")
        ok &= ratio <= SCALE_TARGET
    return ok


def offline_part(runs: int) -> None:
    from netfwd.audit.manifest import Settings
    from netfwd.audit.patch import patch_text

    spec = REPO / "tests/fixtures/windows/reports/relay.yaml"
    report = REPO / "tests/fixtures/windows/reports/healthy.json"
    argv = [sys.executable, "-m", "netfwd", "doctor", str(spec), "--windows-report", str(report), "-o", "json"]
    samples = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True)
        samples.append(time.perf_counter() - started)
    line("netfwd doctor --windows-report (CLI)", samples)
    manifest = (REPO / "tests/fixtures/audit/kubeadm-stock.yaml").read_text()
    settings = Settings(cluster_id="c0a1b2c3d4e5f60718293a4b5c6d7e8f9")
    samples = []
    for _ in range(runs * 10):
        started = time.perf_counter()
        patch_text(manifest, settings)
        samples.append(time.perf_counter() - started)
    line("audit patch (in-process, kubeadm manifest)", samples)


def main() -> int:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    offline_part(runs)
    if os.geteuid() != 0:
        print("doctor bench: the lab part needs root (network namespaces); skipped")
        return 0
    return 0 if lab_part(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
