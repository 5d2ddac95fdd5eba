"""Namespaces, veth links, addresses and routes through pyroute2 (netlink), plus `ip netns exec`.

pyroute2 builds the topology (one netlink socket per namespace, no process per step); iproute2's
`ip netns exec` is used only to *run* programs inside a namespace, which netlink cannot do.
Veths are created directly inside their namespaces, so a crash never leaves a link in the host's
namespace: deleting a namespace deletes its links.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from netfwd import host
from netfwd.errors import EnvironmentProblem

NETNS_RUN = Path("/run/netns")


def check_environment() -> None:
    """Refuse early, with a clear reason, on a host that cannot run a lab."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("netfwd lab needs root (network namespaces); run it with sudo")
    if shutil.which("ip") is None:
        raise EnvironmentProblem("iproute2's `ip` is missing (needed for `ip netns exec`); "
                                 "install the iproute2 package")
    if not Path("/proc/self/ns/net").exists():
        raise EnvironmentProblem("this kernel has no network namespaces (CONFIG_NET_NS)")
    from importlib.util import find_spec

    if find_spec("pyroute2") is None:  # installed is enough here: it is imported where it is used
        raise EnvironmentProblem("pyroute2 is not installed; run scripts/bootstrap")


def host_networks() -> list[str]:
    """Every IPv4 route destination and address of the host's namespace (read only)."""
    from pyroute2 import IPRoute

    found: list[str] = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2):
            dst = route.get("RTA_DST") or route.get("dst")
            if dst:
                found.append(f"{dst}/{route['dst_len']}")
        for addr in ipr.get_addr(family=2):
            found.append(f"{addr.get('IFA_ADDRESS') or addr.get('address')}/{addr['prefixlen']}")
    return found


def exists(name: str) -> bool:
    return (NETNS_RUN / name).exists()


def create(name: str) -> None:
    from pyroute2 import netns

    if exists(name):
        raise EnvironmentProblem(f"network namespace {name} already exists; pick another lab name "
                                 "or run `netfwd lab down` for it")
    try:
        netns.create(name)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot create network namespace {name}: {problem}") from None


def remove(name: str) -> None:
    """Delete a namespace (and with it its links). Missing is fine: down must be repeatable."""
    from pyroute2 import netns

    if not exists(name):
        return
    try:
        netns.remove(name)
    except OSError:
        # a half-made namespace (crash between mkfile and bind mount) is a plain file: remove it
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)
        if (NETNS_RUN / name).exists() and not os.path.ismount(NETNS_RUN / name):
            (NETNS_RUN / name).unlink(missing_ok=True)


@contextmanager
def netlink(name: str) -> Iterator:
    """An IPRoute-like netlink socket inside namespace `name`."""
    from pyroute2 import NetNS

    sock = NetNS(name)
    try:
        yield sock
    finally:
        sock.close()


def veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with one end in each namespace; it never appears in the host namespace."""
    from pyroute2 import NetlinkError

    with netlink(ns_a) as a:
        try:
            a.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})
        except NetlinkError as problem:
            raise EnvironmentProblem(f"cannot create a veth pair {ns_a}/{if_a} <-> {ns_b}/{if_b}: "
                                     f"{problem} (is the veth kernel module available?)") from None


def configure(name: str, interfaces: dict[str, list[str]], gateway: str | None = None) -> None:
    """Bring up lo and each interface with its addresses (``"10.0.0.1/24"``); add a default route."""
    with netlink(name) as sock:
        sock.link("set", index=sock.link_lookup(ifname="lo")[0], state="up")
        for ifname, addresses in interfaces.items():
            index = sock.link_lookup(ifname=ifname)[0]
            for cidr in addresses:
                address, _, prefix = cidr.partition("/")
                sock.addr("add", index=index, address=address, prefixlen=int(prefix))
            sock.link("set", index=index, state="up")
        if gateway:
            sock.route("add", dst="0.0.0.0/0", gateway=gateway)


def exec_argv(name: str, argv: list[str]) -> list[str]:
    return host.exec_prefix(name) + argv


def sysctl(name: str, key: str, value: str) -> None:
    """Set a (network-namespaced) sysctl inside `name` only."""
    subprocess.run(exec_argv(name, ["sysctl", "-qw", f"{key}={value}"]), check=True,
                   capture_output=True, timeout=10)


def pids_in(name: str) -> list[int]:
    """PIDs whose network namespace is `name` (what `ip netns pids` prints)."""
    try:
        target = os.stat(NETNS_RUN / name)
    except OSError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue
        if (st.st_ino, st.st_dev) == (target.st_ino, target.st_dev) and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def terminate(pids: list[int], grace: float = 1.0) -> None:
    """SIGTERM, wait up to `grace` seconds, then SIGKILL whatever is left; reap our own children."""
    live = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            live.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = [pid for pid in live if _running(pid)]
        if live:
            time.sleep(0.02)
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in pids:
        _reap(pid, 0.5)


def _running(pid: int) -> bool:
    _reap(pid, 0)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _reap(pid: int, wait: float) -> None:
    """waitpid our own children (so no zombie stays in the process table); others are init's job."""
    deadline = time.monotonic() + wait
    while True:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done or time.monotonic() >= deadline:
            return
        time.sleep(0.01)
