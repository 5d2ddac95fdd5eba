"""firewalld inside the lab's relay: its own D-Bus, mount namespace and /etc/firewalld.

The host's firewalld (if any) and its configuration are never touched: firewalld runs in the relay's
network namespace, inside a private mount namespace where /run/dbus is a fresh tmpfs (a private
system bus) and /etc/firewalld is a bind mount of a copy in the lab's work directory.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess

import time
from pathlib import Path
from typing import TYPE_CHECKING

from netfwd.errors import EnvironmentProblem

if TYPE_CHECKING:
    from netfwd.lab.core import Lab

SCRIPT = """set -e
mount -t tmpfs tmpfs /run/dbus
[ -d /run/firewalld ] && mount -t tmpfs tmpfs /run/firewalld
mount --bind {etc} /etc/firewalld
dbus-daemon --system --fork --print-pid
exec firewalld --nofork --nopid --log-file {log}{extra} >/dev/null 2>>{log}
"""


def start(lab: "Lab", timeout: float, node: str = "relay") -> int:
    """Start firewalld in `node` and wait until `firewall-cmd --state` says running; return its PID."""
    from netfwd.lab import core

    for tool in ("firewalld", "firewall-cmd", "dbus-daemon", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            raise EnvironmentProblem(f"{tool} is not installed (firewalld in the lab needs firewalld, "
                                     "dbus and util-linux)")
    if not Path("/run/dbus").is_dir():
        raise EnvironmentProblem("/run/dbus does not exist: install dbus (the lab mounts a private bus there)")
    for process in lab.processes():
        if process.kind == "firewalld" and process.node == node and process.alive():
            return process.pid
    base = lab.workdir / ("firewalld" if node == "relay" else f"firewalld-{node}")
    etc, log = base / "etc", base / "firewalld.log"
    shutil.rmtree(base, ignore_errors=True)
    extra = " --log-target file"  # (0.6.3 has no --log-target: --log-file alone logs to the file)
    if lab.userland == "centos7":  # 0.6.3 with its own defaults and FirewallBackend=iptables
        from netfwd.lab import userland

        etc.mkdir(parents=True)
        shutil.copy(userland.firewalld_conf(), etc / "firewalld.conf")
        extra = f" --default-config {shlex.quote(str(userland.firewalld_defaults()))}"
    elif Path("/etc/firewalld").is_dir():
        shutil.copytree("/etc/firewalld", etc, symlinks=True)
    else:
        etc.mkdir(parents=True)
    script = SCRIPT.format(etc=shlex.quote(str(etc)), log=shlex.quote(str(log)), extra=extra)
    argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", script]
    child = subprocess.Popen(lab.exec_argv(node, argv), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    # `ip netns exec` (or nsenter), `unshare` and `sh` all exec: the child's PID becomes firewalld's
    lab.adopt(child, node, "firewalld", argv, None, str(log))
    dbus_line = core._read_line(child, 10.0)
    if dbus_line.isdigit():
        dbus = int(dbus_line)
        lab.record_process(dbus, node, "dbus-daemon", ["dbus-daemon", "--system"])
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            error = child.stderr.read().decode(errors="replace").strip() if child.stderr else ""
            logged = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            raise EnvironmentProblem(f"firewalld in lab {lab.name} exited ({child.returncode}): "
                                     f"{error or ' / '.join(logged) or 'no output'}")
        done = lab.relay_exec_fw(["firewall-cmd", "--state"], check=False, timeout=10, node=node)
        if done.stdout.strip() == "running":
            break
        if time.monotonic() > deadline:
            raise EnvironmentProblem(f"firewalld in lab {lab.name} did not answer within {timeout:.0f} s "
                                     f"(firewall-cmd --state: {(done.stdout + done.stderr).strip()})")
        time.sleep(0.1)
    for stream in (child.stdout, child.stderr):
        if stream:
            stream.close()
    return child.pid


