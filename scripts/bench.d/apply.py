"""Benchmark: `netfwd apply` on a live relay vs a bare restore vs one `iptables -A` per rule.

Every measurement runs in a fresh scratch network namespace (never the host's firewall). For 1,000,
5,000 and 10,000 forwards (half of them whitelisted to two CIDRs: ~3.5 rules per forward):

  bare      `ip netns exec NS iptables-restore --noflush < payload` of the same ruleset (nft: `nft -f`)
  cold      `netfwd apply SPEC --netns NS --yes`, first sight of the spec (parse + validate included)
  warm      the same after `netfwd plan SPEC` (apply reuses the desired state plan computed)
  no-change `netfwd apply` again with nothing to do
  change    one forward's target edited in the spec (cold: the spec text changed)
  per-rule  the vendor guide's way, one `iptables -t nat -A ...` process per rule (iptables only);
            measured in full at 1,000; at 5,000/10,000 extrapolated from 200 calls timed on a
            half-full table (each call costs more as the table grows, so the midpoint is the mean)

Then firewalld (lab relay with firewalld) at 100 and 1,000 forwards (--runs times, the sizes
interleaved, a fresh lab each; medians), each with firewalld's own load of the same permanent
configuration (its D-Bus `reload`, what `firewall-cmd --reload` calls, with netfwd's objects in it)
as the yardstick. Prints a markdown table for docs/performance.md and draws docs/apply-bench.svg.
Needs root.

Usage: .venv/bin/python scripts/bench.d/apply.py [--sizes 1000,5000,10000] [--runs 3] [--no-firewalld]
       .venv/bin/python scripts/bench.d/apply.py --backends "" --firewalld-sizes 100,1000   (firewalld only)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
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
SVG = REPO / "docs" / "apply-bench.svg"


def write_spec(path: Path, count: int, changed: bool = False) -> None:
    lines = ["version: 1", "cluster: bench", "relay: {os: linux, interface: eth0}", "forwards:"]
    for i in range(count):
        target = f"10.{i // 250}.{i % 250}.5" if not (changed and i == count // 2) else "10.250.0.9"
        lines += [f"  - name: fwd-{i}", f"    listen: {{port: {10000 + i}}}", f"    to: {{address: {target}, port: 6443}}"]
        if i % 2:
            lines.append("    allow: {cidrs: [203.0.113.0/24, 198.51.100.0/24]}")
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def namespace():
    name = f"nfb-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def timed(argv: list[str], stdin: Path | None = None, env: dict | None = None) -> float:
    started = time.perf_counter()
    with open(stdin or os.devnull, "rb") as source:
        done = subprocess.run(argv, stdin=source, capture_output=True, env=env)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... failed: {done.stderr.decode()[-500:]}")
    return elapsed


class Netfwd:
    def __init__(self, ns: str | None, backend: str, work: Path, wrap: list[str] | None = None) -> None:
        self.work, self.backend, self.ns, self.wrap = work, backend, ns, wrap or []
        (work / "root").mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "NETFWD_ROOT": str(work / "root"), "NETFWD_STATE_DIR": str(work / "state"),
                    "PYTHONPATH": str(REPO)}

    def __call__(self, *args: str) -> float:
        argv = [PYTHON, "-m", "netfwd", *args, "--backend", self.backend, *(["--netns", self.ns] if self.ns else [])]
        if self.wrap:
            argv = [*self.wrap, "env", *(f"{k}={self.env[k]}" for k in ("NETFWD_ROOT", "NETFWD_STATE_DIR", "PYTHONPATH")),
                    *argv]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, env=self.env, cwd=REPO)
        elapsed = time.perf_counter() - started
        if done.returncode not in (0, 4):
            raise SystemExit(f"netfwd {' '.join(args)} failed: {done.stderr.decode()[-800:]}")
        return elapsed


def bare_payload(backend: str, spec_file: Path, out: Path) -> list[str]:
    from netfwd import xtables
    from netfwd.dialects import nft
    from netfwd.spec import load_spec

    spec = load_spec(spec_file)
    if backend == "nft":
        out.write_text(nft.ruleset(spec))
        return ["nft", "-f", "-"]
    out.write_text(xtables.restore_payload(spec))
    flavour = "nft" if backend == "iptables" else "legacy"
    return [f"iptables-{flavour}-restore", "--noflush", "-w", "5"]


def per_rule_script(spec_file: Path, out: Path, limit: int | None = None, skip: int = 0) -> int:
    from netfwd import xtables
    from netfwd.spec import load_spec

    spec = load_spec(spec_file)
    rules = xtables.ruleset(spec)
    chosen = rules[skip:skip + limit] if limit else rules
    chains = [f"iptables -w -t {t} -N {c}" for t, cs in xtables.chains(spec.cluster).items() for c in cs] if not skip else []
    out.write_text("\n".join([*chains, *(f"iptables -w {r.shell_args()}" for r in chosen)]) + "\n")
    return len(rules)


def measure_iptables_family(backend: str, count: int, runs: int, work: Path) -> dict[str, float]:
    spec, changed = work / f"spec-{count}.yaml", work / f"spec-{count}-changed.yaml"
    write_spec(spec, count)
    write_spec(changed, count, changed=True)
    payload = work / f"payload-{backend}-{count}"
    bare_argv = bare_payload(backend, spec, payload)
    samples: dict[str, list[float]] = {}
    for run in range(runs):
        with namespace() as ns:
            samples.setdefault("bare", []).append(timed(["ip", "netns", "exec", ns, *bare_argv], stdin=payload))
        with namespace() as ns:
            netfwd = Netfwd(ns, backend, work / f"{backend}-{count}-cold-{run}")
            samples.setdefault("cold", []).append(netfwd("apply", str(spec), "--yes"))
            samples.setdefault("no-change", []).append(netfwd("apply", str(spec), "--yes"))
            samples.setdefault("change", []).append(netfwd("apply", str(changed), "--yes"))
        with namespace() as ns:
            netfwd = Netfwd(ns, backend, work / f"{backend}-{count}-warm-{run}")
            netfwd("plan", str(spec))
            samples.setdefault("warm", []).append(netfwd("apply", str(spec), "--yes"))
    result = {k: statistics.median(v) for k, v in samples.items()}
    if backend == "iptables":
        script = work / f"per-rule-{count}.sh"
        if count <= 1000:
            rules = per_rule_script(spec, script)
            with namespace() as ns:
                result["per-rule"] = timed(["ip", "netns", "exec", ns, "bash", str(script)])
            result["per-rule-rules"] = rules
        else:  # extrapolate: 200 calls on a half-full table
            half = work / f"spec-{count // 2}.yaml"
            write_spec(half, count // 2)
            half_payload = work / f"payload-half-{count}"
            argv = bare_payload("iptables", half, half_payload)
            sample = work / f"per-rule-sample-{count}.sh"
            total = per_rule_script(spec, sample, limit=200, skip=len(_rules(half)))
            with namespace() as ns:
                timed(["ip", "netns", "exec", ns, *argv], stdin=half_payload)
                seconds = timed(["ip", "netns", "exec", ns, "bash", str(sample)])
            result["per-rule"] = seconds / 200 * total
            result["per-rule-rules"] = total
            result["per-rule-extrapolated"] = 1
    return result


def _rules(spec_file: Path) -> list:
    from netfwd import xtables
    from netfwd.spec import load_spec

    return xtables.ruleset(load_spec(spec_file))


def measure_firewalld(count: int, work: Path, run: int = 0) -> dict[str, float]:
    from netfwd.lab import Lab

    spec, changed = work / f"fw-{count}.yaml", work / f"fw-{count}-changed.yaml"
    write_spec(spec, count)
    write_spec(changed, count, changed=True)
    with Lab.up() as lab:
        pid = lab.start_firewalld()
        wrap = ["nsenter", "-t", str(pid), "-m", "-n", f"--wd={REPO}", "--"]
        netfwd = Netfwd(None, "firewalld", work / f"firewalld-{count}-{run}", wrap=wrap)
        result = {"cold": netfwd("apply", str(spec), "--yes"), "no-change": netfwd("apply", str(spec), "--yes"),
                  "change": netfwd("apply", str(changed), "--yes")}
        # the yardstick: firewalld's own load of the same permanent configuration (netfwd's objects in it)
        # (the reload method firewall-cmd --reload calls, with a reply timeout that fits 1,000 ipsets:
        # firewall-cmd's own D-Bus timeout of 25 s is shorter than such a reload)
        result["reload"] = timed([*wrap, "dbus-send", "--system", "--print-reply", "--reply-timeout=900000",
                                  "--dest=org.fedoraproject.FirewallD1", "/org/fedoraproject/FirewallD1",
                                  "org.fedoraproject.FirewallD1.reload"])
        return result


# -- the picture -----------------------------------------------------------------------------------

def draw(series: dict[str, list[tuple[int, float]]], path: Path, title: str) -> None:
    """A log-scale line chart as hand-written SVG (no plotting library needed)."""
    import math

    width, height, left, right, top, bottom = 860, 440, 70, 300, 40, 50
    xs = sorted({x for points in series.values() for x, _ in points})
    ys = [y for points in series.values() for _, y in points if y > 0]
    lo, hi = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(x: int) -> float:
        return left + (math.log10(x) - math.log10(xs[0])) / max(1e-9, math.log10(xs[-1]) - math.log10(xs[0])) * plot_w

    def py(y: float) -> float:
        return top + plot_h - (math.log10(y) - lo) / max(1, hi - lo) * plot_h

    colours = ["#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
           f'font-size="12">', f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14" font-weight="bold">{title}</text>']
    for power in range(lo, hi + 1):
        y = py(10 ** power)
        label = f"{10 ** power:g} s"
        out += [f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#ddd"/>',
                f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{label}</text>']
    for x in xs:
        out += [f'<line x1="{px(x):.1f}" y1="{top}" x2="{px(x):.1f}" y2="{top + plot_h}" stroke="#eee"/>',
                f'<text x="{px(x):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{x:,}</text>']
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">forwards (~3.5 rules each)</text>')
    for index, (name, points) in enumerate(series.items()):
        colour = colours[index % len(colours)]
        dash = ' stroke-dasharray="6,4"' if "extrapolated" in name else ""
        path_d = " ".join(f"{'M' if i == 0 else 'L'}{px(x):.1f},{py(y):.1f}" for i, (x, y) in enumerate(points))
        out.append(f'<path d="{path_d}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>' for x, y in points]
        ly = top + 14 + index * 20
        out += [f'<line x1="{left + plot_w + 15}" y1="{ly - 4}" x2="{left + plot_w + 35}" y2="{ly - 4}" '
                f'stroke="{colour}" stroke-width="2"{dash}/>',
                f'<text x="{left + plot_w + 40}" y="{ly}">{name}</text>']
    out.append("</svg>")
    path.write_text("\n".join(out) + "\n")


def main() -> int:
    if os.geteuid() != 0:
        print("apply bench: needs root (network namespaces); skipped")
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="iptables,iptables-legacy,nft")
    parser.add_argument("--firewalld-sizes", default="100,1000")
    parser.add_argument("--no-firewalld", action="store_true")
    parser.add_argument("--no-svg", action="store_true")
    args = parser.parse_args(sys.argv[1:])
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    print(f"apply bench: {os.cpu_count()} CPU(s), load average {load:.1f} at start")
    results: dict[tuple[str, int], dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="netfwd-bench-") as tmp:
        work = Path(tmp)
        for backend in filter(None, args.backends.split(",")):  # --backends "": firewalld only
            for count in sizes:
                runs = args.runs if count < 10000 else max(1, args.runs - 1)
                results[(backend, count)] = r = measure_iptables_family(backend, count, runs, work)
                print(f"{backend:<16} {count:>6}: bare {r['bare']:.3f}  cold {r['cold']:.3f}  warm {r['warm']:.3f}  "
                      f"no-change {r['no-change']:.3f}  change {r['change']:.3f}"
                      + (f"  per-rule {r['per-rule']:.2f}" if "per-rule" in r else ""), flush=True)
        if not args.no_svg and any(b == "iptables" for b, _ in results):
            picture(results)
        if not args.no_firewalld and shutil.which("firewalld"):
            fw_sizes = [int(s) for s in args.firewalld_sizes.split(",")]
            runs_fw: dict[int, list[dict[str, float]]] = {count: [] for count in fw_sizes}
            for run in range(args.runs):  # the sizes interleaved, so both see the same load
                for count in fw_sizes:
                    r = measure_firewalld(count, work, run)
                    runs_fw[count].append(r)
                    print(f"{'firewalld':<16} {count:>6} (run {run + 1}): cold {r['cold']:.3f}  no-change "
                          f"{r['no-change']:.3f}  change {r['change']:.3f}  reload {r['reload']:.3f}", flush=True)
            for count in fw_sizes:
                results[("firewalld", count)] = r = {key: statistics.median(s[key] for s in runs_fw[count])
                                                     for key in runs_fw[count][0]}
                print(f"{'firewalld':<16} {count:>6}: cold {r['cold']:.3f}  no-change {r['no-change']:.3f}  "
                      f"change {r['change']:.3f}  firewall-cmd --reload {r['reload']:.3f} "
                      f"(cold {r['cold'] / r['reload']:.1f}x of it; median of {args.runs})", flush=True)
            if len(fw_sizes) > 1:
                small, big = results[("firewalld", min(fw_sizes))], results[("firewalld", max(fw_sizes))]
                print(f"firewalld cold apply: {max(fw_sizes)} forwards take {big['cold'] / small['cold']:.1f}x "
                      f"{min(fw_sizes)} (target for 10x the forwards: <= 12x); firewalld's own reload: "
                      f"{big['reload'] / small['reload']:.1f}x", flush=True)
    print()
    print("| backend | forwards | bare restore | netfwd apply (cold) | apply after plan | ratio cold / warm to bare "
          "| no-change re-apply | one forward changed | per-rule `iptables -A` | netfwd cold / warm speed-up vs per-rule |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (backend, count), r in results.items():
        bare = r.get("bare") or r.get("reload")  # firewalld: its own `firewall-cmd --reload`
        ratio = (f"{r['cold'] / bare:.1f}x / " + (f"{r['warm'] / bare:.1f}x" if "warm" in r else "-")) if bare else "-"
        per = (f"{r['per-rule']:.1f} s" + (" (extrapolated)" if r.get("per-rule-extrapolated") else "")
               if "per-rule" in r else "-")
        speed = f"{r['per-rule'] / r['cold']:.0f}x / {r['per-rule'] / r['warm']:.0f}x" if "per-rule" in r else "-"
        bare_text = (f"{bare:.2f} s" + (" (reload)" if "reload" in r else "")) if bare else "-"
        warm_text = f"{r['warm']:.2f} s" if "warm" in r else "-"
        print(f"| {backend} | {count:,} | {bare_text} | {r['cold']:.2f} s | {warm_text} | {ratio} | "
              f"{r['no-change']:.2f} s | {r['change']:.2f} s | {per} | {speed} |")
    return 0


def picture(results: dict[tuple[str, int], dict[str, float]]) -> None:
    points = sorted((n, r) for (backend, n), r in results.items() if backend == "iptables")
    extrapolated = any(r.get("per-rule-extrapolated") for _, r in points)
    series = {
        "per-rule iptables -A" + (" (5k/10k extrapolated)" if extrapolated else ""):
            [(n, r["per-rule"]) for n, r in points if "per-rule" in r],
        "netfwd apply, cold spec": [(n, r["cold"]) for n, r in points],
        "netfwd apply after plan": [(n, r["warm"]) for n, r in points],
        "bare iptables-restore": [(n, r["bare"]) for n, r in points],
        "no-change re-apply": [(n, r["no-change"]) for n, r in points],
    }
    draw(series, SVG, "netfwd apply vs bare restore vs per-rule iptables -A (iptables nf_tables, log scale)")
    print(f"wrote {SVG.relative_to(REPO)}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
