"""An old distribution's firewall userland in the lab's relay: `--userland centos7`.

CentOS 7 ships iptables 1.4.21 and firewalld 0.6.3 (iptables backend). scripts/build-centos7-userland
builds both from the vendored upstream release sources (cached); here the relay gets a private mount
namespace, held open by a `sleep` process, in which /usr/sbin and /usr/bin are read-only overlays:
`iptables*`/`ip6tables*` are the 1.4.21 binaries, `firewalld`/`firewall-cmd` are 0.6.3, and every
nf_tables tool (`nft`, `iptables-nft*`, `iptables-legacy*`, `xtables-*`, `ebtables*`, `arptables*`)
is hidden by an overlay whiteout. Every program the lab runs "in the relay" enters that mount namespace,
so scripts and netfwd itself see exactly what a CentOS 7 relay offers. The host's files are untouched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from netfwd.errors import EnvironmentProblem, InputError

if TYPE_CHECKING:
    from netfwd.lab.core import Lab

USERLANDS = ("modern", "centos7")
REPO = Path(__file__).resolve().parents[2]  # the checkout, when netfwd runs from one (a wheel has no scripts/)
SOURCES = ("scripts/build-centos7-userland", "vendor/iptables-1.4.21.tar.gz", "vendor/firewalld-0.6.3.tar.gz")
OVERLAID = ("/usr/sbin", "/usr/bin")
XTABLES_NAMES = ("iptables", "iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore")
HIDDEN_PREFIXES = ("nft", "iptables", "ip6tables", "xtables", "ebtables", "arptables", "firewall")

HOLDER = """set -e
{mounts}
echo ready
exec sleep infinity
"""


def check(userland: str) -> None:
    """Refuse an unknown userland, and centos7 without its sources, before the lab creates anything."""
    if userland not in USERLANDS:
        raise InputError(f"unknown userland {userland!r} (one of: {', '.join(USERLANDS)})", field="--userland")
    if userland == "centos7":
        build_script()


def build_script() -> Path:
    """The checkout's build script; its vendored tarballs beside it. An installed wheel ships neither."""
    missing = [name for name in SOURCES if not (REPO / name).is_file()]
    if missing:
        raise EnvironmentProblem(f"--userland centos7 needs a netfwd source checkout (it builds iptables 1.4.21 and "
                                 f"firewalld 0.6.3 from its vendor/ sources); looked in {REPO}: no "
                                 f"{', '.join(missing)}")
    return REPO / SOURCES[0]


def build() -> Path:
    """The built CentOS 7 userland (built now on first use, ~15-30 s; cached afterwards)."""
    done = subprocess.run([str(build_script())], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise EnvironmentProblem(f"building the centos7 userland failed: {done.stderr.strip()[-1500:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def _layer(top: Path, lower: str, built: Path) -> None:
    """The upper layer for `lower`: whiteouts for every firewall tool there, links to the old ones."""
    top.mkdir(parents=True, exist_ok=True)
    for entry in os.listdir(lower):
        if entry.startswith(HIDDEN_PREFIXES):
            os.mknod(top / entry, 0o600 | 0o020000, os.makedev(0, 0))  # char 0:0 = overlay whiteout
    if lower == "/usr/sbin":
        for name in XTABLES_NAMES:
            _replace(top / name, built / "bin" / "xtables-multi")  # dispatches on its own name
        _replace(top / "firewalld", built / "firewalld" / "bin" / "firewalld")
    else:
        _replace(top / "firewall-cmd", built / "firewalld" / "bin" / "firewall-cmd")


def _replace(path: Path, target: Path) -> None:
    if path.exists() or path.is_char_device():
        path.unlink()
    path.symlink_to(target)


def start(lab: "Lab") -> int:
    """Give the relay the CentOS 7 userland; returns the PID of the process holding its mount namespace."""
    from netfwd.lab import core

    built = build()
    base = lab.workdir / "userland"
    mounts = []
    for index, lower in enumerate(OVERLAID):
        top = base / f"layer{index}"
        _layer(top, lower, built)
        mounts.append(f"mount -t overlay netfwd-userland -o ro,lowerdir={top}:{lower} {lower}")
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", HOLDER.format(mounts="\n".join(mounts))]
    child = subprocess.Popen(core.netns.exec_argv(lab.ns("relay"), argv), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    lab.adopt(child, "relay", "userland", argv)
    line = core._read_line(child, 10.0)
    if line != "ready":
        error = child.stderr.read().decode(errors="replace").strip() if child.poll() is not None and child.stderr else ""
        raise EnvironmentProblem(f"the centos7 userland did not come up in lab {lab.name}: {error or line or 'no answer'}")
    for stream in (child.stdout, child.stderr):
        if stream:
            stream.close()
    return child.pid


def firewalld_defaults() -> Path:
    """firewalld 0.6.3's own default configuration (zones, services...) for --default-config."""
    return build() / "firewalld" / "defaults"


def firewalld_conf() -> Path:
    return build() / "firewalld" / "firewalld.conf"
