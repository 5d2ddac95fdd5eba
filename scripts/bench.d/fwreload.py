"""Benchmark: what firewalld's own reload costs per ipset and per rich rule (why netfwd shares ipsets).

In a lab relay running firewalld (private D-Bus and /etc/firewalld; never the host's), the
permanent configuration is written as files in one of these shapes, then firewalld's D-Bus `reload`
(what `firewall-cmd --reload` calls) is timed, twice per shape and size (the median is printed):

  per-forward  N ipsets, one forward-port rich rule naming each (netfwd's layout before ipsets were
               shared)
  ipsets       N ipsets, no rule
  shared       N forward-port rich rules naming one ipset (netfwd's layout for N forwards with the
               same allow list)
  addresses    N forward-port rich rules with a source address, no ipset

Every ipset holds the two halves of the IPv4 space, as netfwd's ipset of an open forward does.

Then (modern userland) why: before firewalld starts, the relay's namespace gets 1,000 sets the way
firewalld 1.3.3 loads them on a reload (`set_restore`: one libnftables call per set, adding it,
flushing it and adding its entries), and the cost per call is printed for the first and the last
hundred: libnftables reads the table's existing sets into its cache on every call.

Usage: .venv/bin/python scripts/bench.d/fwreload.py [--sizes 100,1000] [--shapes ...]
       [--userland modern|centos7]   (centos7: firewalld 0.6.3 with its iptables backend)
Needs root.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SHAPES = ("per-forward", "ipsets", "shared", "addresses")
ZONE = """<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>Public</short>
  <service name="ssh"/>
{rules}</zone>
"""
IPSET = """<?xml version="1.0" encoding="utf-8"?>
<ipset type="hash:net">
  <option name="family" value="inet"/>
  <entry>0.0.0.0/1</entry>
  <entry>128.0.0.0/1</entry>
</ipset>
"""


def rule(i: int, ipset: str | None) -> str:
    source = f'<source ipset="{ipset}"/>' if ipset else f'<source address="203.0.{i // 250}.{i % 250}/32"/>'
    return (f'  <rule family="ipv4">{source}<forward-port port="{10000 + i}" protocol="tcp" to-port="6443" '
            f'to-addr="10.{i // 250}.{i % 250}.5"/></rule>\n')


def write_shape(etc: Path, shape: str, count: int) -> None:
    """The permanent configuration: netfwd-style ipsets in ipsets/, the rules in the public zone."""
    for folder in ("ipsets", "zones"):
        (etc / folder).mkdir(exist_ok=True)
    for old in (etc / "ipsets").glob("netfwd-*.xml"):
        old.unlink()
    sets = {"per-forward": count, "ipsets": count, "shared": 1}.get(shape, 0)
    for i in range(sets):
        (etc / "ipsets" / f"netfwd-bench-{i}.xml").write_text(IPSET)
    rules = {"per-forward": [rule(i, f"netfwd-bench-{i}") for i in range(count)],
             "shared": [rule(i, "netfwd-bench-0") for i in range(count)],
             "addresses": [rule(i, None) for i in range(count)]}.get(shape, [])
    (etc / "zones" / "public.xml").write_text(ZONE.format(rules="".join(rules)))


NFT_SETS = r"""
import time, nftables
nft = nftables.Nftables()
table = {"family": "inet", "table": "netfwd-bench"}
nft.json_cmd({"nftables": [{"add": {"table": {"family": "inet", "name": "netfwd-bench"}}}]})
started, at = time.perf_counter(), {}
for k in range(1, 1001):
    ref = {**table, "name": f"s{k}"}
    halves = [{"prefix": {"addr": "0.0.0.0", "len": 1}}, {"prefix": {"addr": "128.0.0.0", "len": 1}}]
    rc, _, error = nft.json_cmd({"nftables": [{"metainfo": {"json_schema_version": 1}},
        {"add": {"set": {**ref, "type": "ipv4_addr", "flags": ["interval"]}}}, {"flush": {"set": ref}},
        {"add": {"element": {**ref, "elem": halves}}}]})
    assert rc == 0, error
    at[k] = time.perf_counter() - started
nft.json_cmd({"nftables": [{"delete": {"table": {"family": "inet", "name": "netfwd-bench"}}}]})
print(f"{at[100] * 10:.1f} {(at[1000] - at[900]) * 10:.1f}")
"""


def main() -> int:
    if os.geteuid() != 0:
        print("fwreload bench: needs root (a lab relay); skipped")
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--userland", default="modern", choices=("modern", "centos7"))
    args = parser.parse_args(sys.argv[1:])
    from netfwd.lab import Lab

    print(f"fwreload bench: {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f} at start, "
          f"userland {args.userland}", flush=True)
    results: dict[tuple[str, int], float] = {}
    with Lab.up(userland=args.userland) as lab:
        if args.userland == "modern":  # firewalld's Python has python3-nftables
            first, last = lab.run("relay", ["/usr/bin/python3", "-c", NFT_SETS]).stdout.split()
            print(f"libnftables, one call per set as firewalld's reload makes them: sets 1-100 {first} ms "
                  f"per set, sets 901-1,000 {last} ms per set", flush=True)
        pid = lab.start_firewalld()
        etc = lab.workdir / "firewalld" / "etc"
        reload = ["nsenter", "-t", str(pid), "-m", "-n", "--", "dbus-send", "--system", "--print-reply",
                  "--reply-timeout=900000", "--dest=org.fedoraproject.FirewallD1", "/org/fedoraproject/FirewallD1",
                  "org.fedoraproject.FirewallD1.reload"]

        def timed_reload() -> float:
            started = time.perf_counter()
            subprocess.run(reload, check=True, capture_output=True)
            return time.perf_counter() - started

        version = subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "--", "firewall-cmd", "--version"],
                                 capture_output=True, text=True).stdout.strip()
        print(f"firewalld {version}", flush=True)
        for count in [int(s) for s in args.sizes.split(",")]:
            for shape in args.shapes.split(","):
                write_shape(etc, shape, count)
                results[(shape, count)] = seconds = statistics.median(timed_reload() for _ in range(2))
                print(f"{shape:<12} {count:>6}: reload {seconds:.2f} s", flush=True)
        write_shape(etc, "addresses", 0)
        timed_reload()
    sizes = sorted({n for _, n in results})
    print()
    print("| layout | " + " | ".join(f"{n:,}" for n in sizes) + (" | largest / smallest |" if len(sizes) > 1 else " |"))
    print("|---|" + "---:|" * (len(sizes) + (len(sizes) > 1)))
    for shape in args.shapes.split(","):
        cells = [f"{results[(shape, n)]:.2f} s" for n in sizes]
        ratio = [f"{results[(shape, sizes[-1])] / results[(shape, sizes[0])]:.0f}x"] if len(sizes) > 1 else []
        print(f"| {shape} | " + " | ".join(cells + ratio) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
