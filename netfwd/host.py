"""One way onto the host: name a network namespace, enter it, run a program in it, read its facts.

Every part of netfwd that acts on or reads a relay — the backends, doctor, whitelist's live source,
probe, explain, the lab — goes through here, so there is one rule for namespace names, one
`setns(2)`, one `ip netns exec` prefix, one reading of a process's start time and one child
environment.

Entering costs one syscall; `ip netns exec NS cmd` costs a fork+exec and a mount namespace per
command (5-10 ms), so long-lived work enters once (:func:`enter`) and children inherit it.
/proc/sys/net and /proc/net follow the calling thread's namespace, so sysctls land there too.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

from netfwd.errors import EnvironmentProblem, InputError

if TYPE_CHECKING:  # netaddr is imported where an address is built: keep it off start-up paths
    from netaddr import IPAddress

NETNS_RUN = Path("/run/netns")
CLONE_NEWNET = 0x40000000
# What `ip netns add` accepts as a file name in /run/netns, minus anything a shell or a path could
# misread: letters, digits, '_', '.', '-', not starting with '-' (an option to `ip`) or '.'.
NETNS_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])
TIMEOUT = 20.0

T = TypeVar("T")
_entered: str | None = None


def check_netns(name: str, field: str = "--netns") -> str:
    """`name` if it can name a network namespace, else an InputError (exit 2) naming `field`."""
    if not isinstance(name, str) or not NETNS_NAME_RE.match(name) or name in (".", ".."):
        raise InputError(f"{name!r} is not a network namespace name", field=field)
    return name


def require_netns(name: str, field: str = "--netns") -> Path:
    """The /run/netns file of an existing namespace `name`."""
    path = NETNS_RUN / check_netns(name, field)
    if not path.exists():
        raise EnvironmentProblem(f"network namespace {name!r} does not exist (see `ip netns list`)")
    return path


def exec_prefix(netns: str | None) -> list[str]:
    """The argv prefix that runs a program inside `netns` (nothing for the current namespace)."""
    return ["ip", "netns", "exec", check_netns(netns)] if netns else []


def setns(name: str) -> None:
    """Move the calling *thread* into network namespace `name` (setns(2) is per thread)."""
    import ctypes

    path = require_netns(name)
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise EnvironmentProblem(f"cannot open {path}: acting in a network namespace needs root") from None
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise EnvironmentProblem(f"cannot enter network namespace {name!r}: {os.strerror(error)}"
                                     + (" (needs root)" if error == 1 else ""))
    finally:
        os.close(fd)


def enter(name: str) -> None:
    """Move this (single-threaded) process into `name` once; its children and libraries follow."""
    global _entered
    if _entered != name:
        setns(name)
        _entered = name


def current() -> str | None:
    """The namespace this process entered with :func:`enter` (None: the one it started in)."""
    return _entered


def in_namespace(netns: str | None, function: Callable[[], T], timeout: float = TIMEOUT) -> T:
    """Run `function` in a thread inside `netns` (the process itself never moves); its result or error."""
    if netns is None:
        return function()
    box: dict[str, Any] = {}

    def worker() -> None:
        try:
            setns(netns)
            box["value"] = function()
        except BaseException as problem:  # noqa: BLE001 - handed to the caller's thread
            box["error"] = problem

    thread = threading.Thread(target=worker, name=f"netfwd-in-{netns}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise EnvironmentProblem(f"work inside network namespace {netns} took over {timeout:.0f} s")
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


def run(argv: list[str], netns: str | None = None, timeout: float = TIMEOUT,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str] | None:
    """Run a read-only tool (inside `netns`); None when the tool is not installed."""
    import shutil

    if shutil.which(argv[0]) is None:
        return None
    try:
        return subprocess.run(exec_prefix(netns) + argv, capture_output=True, text=True, timeout=timeout,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"`{' '.join(argv)}` did not finish within {timeout:.0f} s") from None
    except OSError as problem:
        raise EnvironmentProblem(f"cannot run `{' '.join(argv)}`: {problem}") from None


def proc_start(pid: int) -> int | None:
    """The kernel start time of `pid` (clock ticks since boot): with the PID it names one process,
    since PIDs are reused. None when it is gone or a zombie (it has finished)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may hold spaces and ')'
    if not fields or fields[0] == "Z":
        return None
    return int(fields[19])


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child `python -m netfwd...`: this netfwd first on its import path, so
    a checkout, an editable and a wheel install all run the same code in the child."""
    env = dict(os.environ)
    env["PYTHONPATH"] = PACKAGE_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def local_facts(netns: str | None) -> tuple[list[str], str | None]:
    """The namespace's own addresses (text, without prefix) and the interface of its main table's
    default route: what rules' `-d`/`-i` matches and explain's routing decision compare with."""
    from pyroute2 import IPRoute, NetNS

    addresses: list[str] = []
    interface = None
    try:
        with (NetNS(check_netns(netns)) if netns else IPRoute()) as handle:
            for addr in handle.get_addr():
                addresses.append(addr.get_attr("IFA_ADDRESS"))
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in handle.get_links()}
            for route in handle.get_routes(table=254):
                if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                    interface = names.get(route.get_attr("RTA_OIF"))
                    break
    except InputError:
        raise
    except Exception as problem:
        raise EnvironmentProblem(f"cannot read network namespace {netns or '(current)'}: {problem}") from None
    return addresses, interface


# -- sockets of the namespace this process acts in ---------------------------------------------------

@dataclass(frozen=True, slots=True)
class Socket:
    protocol: str  # tcp | udp
    address: IPAddress
    port: int
    inode: int
    v6only_unknown: bool = False

    @property
    def wildcard(self) -> bool:
        return bool(self.address.value == 0)


def listening_sockets(read: Callable[[str], str | None] | None = None) -> list[Socket]:
    """Listening TCP and bound UDP sockets from /proc/net/{tcp,udp}{,6}, which follow the network
    namespace of the reading thread. `read` (path -> text or None) reads them some other way."""
    found = []
    for protocol in ("tcp", "udp"):
        for suffix in ("", "6"):
            path = f"/proc/net/{protocol}{suffix}"
            if read is not None:
                text = read(path)
            else:
                try:
                    text = Path(path).read_text()
                except OSError:
                    text = None
            if text:
                found += parse_proc_net(text, protocol)
    return found


def socket_owner(inode: int) -> str | None:
    """'name (PID n)' of the process holding socket `inode`, or None (scans /proc/*/fd)."""
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) == target:
                    name = (proc / "comm").read_text().strip()
                    return f"{name} (PID {proc.name})"
        except OSError:
            continue
    return None


def parse_proc_net(text: str, protocol: str) -> list[Socket]:
    """Listening (TCP state 0A) or bound (UDP state 07) sockets from /proc/net/{tcp,udp}{,6} text."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        state = fields[3]
        if (protocol == "tcp" and state != "0A") or (protocol == "udp" and state != "07"):
            continue
        hex_address, _, hex_port = fields[1].partition(":")
        try:
            found.append(Socket(protocol, _proc_address(hex_address), int(hex_port, 16), int(fields[9])))
        except ValueError:
            continue
    return found


def _proc_address(hex_address: str) -> IPAddress:
    """/proc/net addresses are 32-bit words in host (little-endian) order."""
    from netaddr import IPAddress

    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return IPAddress(int.from_bytes(words, "big"), 4 if len(raw) == 4 else 6)
