"""Act inside a named network namespace: `setns(2)` this process once, so every child inherits it.

`ip netns exec NS cmd` costs a fork+exec (and a mount namespace) per command, 5-10 ms each; entering
the namespace once costs one syscall, and then iptables-restore, nft, the commit-confirm timer and
in-process libraries (python-iptables, netlink sockets) all act inside it with no per-command cost.
/proc/sys/net and /proc/net follow the calling thread's namespace, so sysctls land there too.
"""

from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

from netfwd.errors import EnvironmentProblem, InputError

NETNS_RUN = Path("/run/netns")
CLONE_NEWNET = 0x40000000
NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_entered: str | None = None


def enter(name: str) -> None:
    """Move this (single-threaded) process into network namespace `name` (as made by `ip netns add`)."""
    global _entered
    if _entered == name:
        return
    if not NAME_RE.match(name) or name in (".", ".."):
        raise InputError(f"{name!r} is not a network namespace name", field="--netns")
    path = NETNS_RUN / name
    if not path.exists():
        raise EnvironmentProblem(f"network namespace {name!r} does not exist (see `ip netns list`)")
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
    _entered = name


def current() -> str | None:
    """The namespace this process entered with :func:`enter` (None: the one it started in)."""
    return _entered
