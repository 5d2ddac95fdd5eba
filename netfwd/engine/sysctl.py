"""Kernel forwarding: on now (in the namespace netfwd acts in) and after reboot (ROOT/etc/sysctl.d).

Same file (one per cluster, netfwd.owned.sysctl_file) and content as the shell dialects write, so
a relay set up by a rendered script and one set up by `netfwd apply` look the same. Removing one
cluster removes only its file: forwarding stays persisted while another cluster's file asks for it.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from netfwd import owned, trust
from netfwd.safefiles import remove_file, write_atomic
from netfwd.errors import EnvironmentProblem

if TYPE_CHECKING:
    from netfwd.model import Spec

HEADER = "# written by netfwd for cluster "  # = netfwd.dialects.shell.sysctl_header (a test holds them equal)


def path(root: Path, cluster: str) -> Path:
    return root / owned.sysctl_file(cluster)


def kernel_dir() -> Path | None:
    """``NETFWD_KERNEL``: a directory that stands in for the kernel (sysctls as files under it,
    conntrack deletions logged to it) so the engine can be tested without root or side effects."""
    folder = os.environ.get("NETFWD_KERNEL")
    return Path(folder) if folder else None


def _proc(key: str) -> Path:
    stand_in = kernel_dir()
    # a key with a '/' is a path already (interface names may hold dots: net/ipv6/conf/eth0.100/accept_ra)
    return (stand_in / "sys" if stand_in else Path("/proc/sys")) / (key if "/" in key else key.replace(".", "/"))


def ra_keys() -> list[str]:
    """accept_ra of every interface that takes router advertisements now (1, or 2 already).

    With IPv6 forwarding on, the kernel ignores RAs where accept_ra is 1, and a default route learned
    from them expires (docs/apply.md): such interfaces get 2 ("even when forwarding") before
    forwarding is turned on, now and in the persisted file."""
    base = _proc("net.ipv6.conf")
    try:
        names = sorted(entry.name for entry in base.iterdir())
    except OSError:
        return []
    keys = []
    for name in names:
        if name in ("all", "default", "lo"):
            continue
        key = f"net/ipv6/conf/{name}/accept_ra"
        if current(key) in ("1", "2"):
            keys.append(key)
    return keys


def current(key: str) -> str | None:
    try:
        return _proc(key).read_text().strip()
    except OSError:
        return None


def file_text(spec: "Spec") -> str:
    from netfwd.dialects.shell import sysctl_keys

    keys = sysctl_keys(spec)
    ra = ra_keys() if "net.ipv6.conf.all.forwarding" in keys else []
    return "".join([f"{HEADER}{spec.cluster}\n", *(f"{key} = 2\n" for key in ra),
                    *(f"{key} = 1\n" for key in keys)])


def items_of(text: str) -> list[tuple[str, str]]:
    """The (key, value) pairs a sysctl.d file text sets (`key = value` lines), in order."""
    pairs = (line.split(" = ", 1) for line in text.splitlines() if " = " in line and line[0] != "#")
    return [(key.strip(), value.strip()) for key, value in pairs]


def keys_of(text: str) -> list[str]:
    """The keys a sysctl.d file text sets."""
    return [key for key, _ in items_of(text)]


def pending(text: str, root: Path, cluster: str) -> list[tuple[str, str, str]]:
    """[(what, now, wanted)] that differ from the sysctl.d `text`: live sysctls and the persisted file."""
    out = []
    for key, wanted in items_of(text):
        value = current(key)
        if value != wanted:
            out.append((key, value or "missing", wanted))
    where = path(root, cluster)
    try:
        have = trust.read_text(where)
    except OSError:
        have = None
    if have != text:
        out.append((str(where), "missing" if have is None else "different", "netfwd's"))
    return out


def set_key(key: str, value: str = "1") -> None:
    try:
        _proc(key).write_text(value + "\n")
    except OSError as problem:
        raise EnvironmentProblem(f"cannot set {key}={value}: {problem}") from None


def write_file(root: Path, text: str, cluster: str) -> None:
    write_atomic(path(root, cluster), text)
    forget_legacy(root, cluster)


def forget(root: Path, cluster: str) -> bool:
    """Remove the cluster's persisted file (forwarding stays on until reboot: others may need it)."""
    legacy = forget_legacy(root, cluster)
    return remove_file(path(root, cluster)) or legacy


def forget_legacy(root: Path, cluster: str) -> bool:
    """The global file of earlier versions goes once its cluster has its own (its first line names it)."""
    legacy = root / owned.LEGACY_SYSCTL_FILE
    try:
        first = trust.read_text(legacy).split("\n", 1)[0]
    except OSError:
        return False
    return first == f"{HEADER}{cluster}" and remove_file(legacy)
