"""Forget tracked connections that still point at a target netfwd no longer forwards to.

A changed (or removed) forward only affects *new* connections: an existing conntrack entry keeps
its old DNAT mapping, and a steady UDP flow never ends. After a change netfwd deletes exactly the
entries whose original destination port is the forward's listen port and whose reply comes from
the old target — nothing else on the relay is touched.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from netfwd.model import Essence

_DELETED = re.compile(r"(\d+) flow entr(?:y|ies) ha(?:s|ve) been deleted")


def stale(before: list[Essence], after: list[Essence]) -> list[Essence]:
    """Forwards of `before` whose target is gone or different in `after` (keyed on identity)."""
    now = {(e.listen_address, e.listen_port, e.protocol): (e.to_address, e.to_port) for e in after}
    return [e for e in before
            if now.get((e.listen_address, e.listen_port, e.protocol)) != (e.to_address, e.to_port)]


def forget(forwards: list[Essence]) -> list[str]:
    """Delete the tracked connections of `forwards` (their old targets); one note per forward that had any."""
    if not forwards:
        return []
    from netfwd.engine.sysctl import kernel_dir

    stand_in = kernel_dir()
    if stand_in is not None:  # the engine's test seam: log what would be forgotten
        with open(stand_in / "conntrack-forgotten", "a") as log:
            log.writelines(f"{e.protocol} {e.listen_port} {e.to_address}:{e.to_port}\n" for e in forwards)
        return []
    if shutil.which("conntrack") is None:
        return ["conntrack (conntrack-tools) is not installed: open connections to a changed target keep "
                "their old mapping until they time out"]
    notes = []
    for old in forwards:
        family = "ipv6" if ":" in old.to_address else "ipv4"
        argv = ["conntrack", "-D", "-f", family, "-p", old.protocol, "--orig-port-dst", str(old.listen_port),
                "--reply-src", old.to_address, "--reply-port-src", str(old.to_port)]
        try:  # exit status 1 just means "no such entries"
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        match = _DELETED.search(done.stderr + done.stdout)
        if match and int(match.group(1)):
            notes.append(f"forgot {match.group(1)} tracked connection(s) from port {old.listen_port}/{old.protocol} "
                         f"to the old target {old.to_address}:{old.to_port}")
    return notes
