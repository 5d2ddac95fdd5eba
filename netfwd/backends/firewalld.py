"""`firewalld` backend: netfwd's ipsets and rich rules, runtime and permanent kept in step.

The objects are the firewalld dialect's (one ``netfwd-<tag>-<hash of what it is made of>`` hash:net ipset
per distinct source list, shared by the forwards that have it; per forward a forward-port rich rule
with that ipset as its source in the zone traffic arrives in, a masquerade rich rule in the zone
toward the target), so a rendered script and a live apply make the same thing. They are read and
written through firewalld's D-Bus API by one helper process (netfwd.netfilter.fwdbus, run by
firewalld's own Python), not by one firewall-cmd per object.

Canonical owned-state text, one object per line, sorted; both configurations must say the same:

    permanent ipset netfwd-1a2b3c4d-5e6f7a8b9c inet 10.200.1.8/29
    permanent rule public rule family="ipv4" source ipset="netfwd-..." forward-port ...
    runtime ipset ...
    runtime rule ...

firewalld has no multi-object transaction; see fwdbus for the order that keeps the live runtime
either old or new (a reload when ipsets come or go, otherwise adds before removals).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

from netfwd import owned
from netfwd.backends import Context
from netfwd.backends.base import BaseBackend, Live, TransactionError, run
from netfwd.dialects import firewalld as dialect
from netfwd.errors import EnvironmentProblem
from netfwd.model import Essence, Spec

HELPER = str(Path(__file__).parent.parent / "netfilter" / "fwdbus.py")
CONFIGS = ("permanent", "runtime")


def firewalld_python() -> str:
    """The interpreter firewall-cmd runs with (it has firewalld's modules and python3-dbus)."""
    path = shutil.which("firewall-cmd")
    if path is None:
        raise EnvironmentProblem("firewall-cmd not found: install firewalld, or choose another --backend")
    try:
        first = Path(path).read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        first = ""
    words = first[2:].split() if first.startswith("#!") else []
    if words and Path(words[0]).name == "env" and len(words) > 1:
        return shutil.which(words[1]) or "/usr/bin/python3"
    if words and Path(words[0]).name.startswith("python"):
        return words[0]
    return "/usr/bin/python3"  # a wrapper script (e.g. `#!/bin/sh`): the system's Python has python3-dbus


def canonical(state: dict[str, Any]) -> str:
    lines = []
    for config in CONFIGS:
        part = state.get(config) or {}
        for name, ipset in sorted((part.get("ipsets") or {}).items()):
            lines.append(f"{config} ipset {name} {ipset['family']} {' '.join(sorted(ipset['entries']))}".rstrip())
        for zone, rules in sorted((part.get("rules") or {}).items()):
            lines += [f"{config} rule {zone} {rule}" for rule in sorted(rules)]
    return "\n".join(lines) + "\n" if lines else ""


def parse(text: str) -> dict[str, Any]:
    state: dict[str, Any] = {config: {"ipsets": {}, "rules": {}} for config in CONFIGS}
    for line in text.splitlines():
        words = line.split(" ", 3)
        if len(words) < 3 or words[0] not in CONFIGS:
            continue
        config, kind = words[0], words[1]
        if kind == "ipset":
            family, *entries = (words[3] if len(words) > 3 else "inet").split()
            state[config]["ipsets"][words[2]] = {"family": family, "entries": sorted(entries)}
        elif kind == "rule" and len(words) == 4:
            state[config]["rules"].setdefault(words[2], []).append(words[3])
    return state


class FirewalldBackend(BaseBackend):
    name = "firewalld"
    desired_depends_on_live = True  # zones come from the live firewall, not from the spec

    def __init__(self, context: Context) -> None:
        from netfwd import host

        if host.current():  # the system bus in this mount namespace belongs to the host's firewalld
            raise EnvironmentProblem(
                "--netns cannot reach a firewalld inside a network namespace (its D-Bus lives in its own "
                "mount namespace) and would change the host's firewalld instead: run netfwd inside it, "
                "e.g. nsenter -t <firewalld pid> -m -n netfwd ...")
        self.context = context
        self.python = firewalld_python()

    def _helper(self, op: str, request: dict) -> dict:
        lock = () if self.context.lock_fd is None else (self.context.lock_fd,)
        done = run([self.python, HELPER, op], input=json.dumps(request), check=False, pass_fds=lock,
                   what=f"firewalld D-Bus helper ({op})")
        try:
            answer = json.loads(done.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise TransactionError(f"firewalld D-Bus helper ({op}) failed: "
                                   f"{(done.stderr or done.stdout).strip()[-500:] or 'no output'}") from None
        if os.environ.get("NETFWD_TIMING") and "timings" in answer:
            print(f"netfwd: timing: firewalld helper {op}: " +
                  ", ".join(f"{what} at {at:.2f} s" for what, at in answer["timings"]), file=sys.stderr)
        if "refused" in answer:  # a reload would drop other admins' runtime-only configuration
            raise EnvironmentProblem(answer["refused"])
        if "error" in answer:
            if done.returncode == 3:
                raise EnvironmentProblem(f"{answer['error']}: start firewalld, or choose another --backend")
            raise TransactionError(f"firewalld refused the change: {answer['error']}")
        return answer

    def _owned(self) -> dict[str, Any]:
        """Which ipsets (and rich rules naming them) are this cluster's, for the helper."""
        return {"prefix": owned.ipset_prefix(self.context.cluster), "legacy": list(self.context.legacy())}

    def check(self, spec: Spec) -> None:
        dialect.DIALECT.check(spec)

    def read(self) -> Live:
        interfaces = [name for _, name in socket.if_nameindex()]
        answer = self._helper("read", {"interfaces": interfaces, **self._owned()})
        return Live(canonical(answer), None, {"zones_of": answer["zones_of"], "default_zone": answer["default_zone"]})

    def desired(self, spec: Spec, live: Live) -> str:
        zones_of, default = live.extra.get("zones_of", {}), live.extra.get("default_zone", "public")
        routes = _route_devices([str(f.to.address) for f in spec.forwards if f.masquerade])
        ingress = spec.relay.interface or routes.get("default")
        zone_in = zones_of.get(ingress or "", default)
        names, found = dialect.forward_ipsets(spec)
        sets = {name: {"family": family, "entries": sorted(entries)} for name, (family, entries) in found.items()}
        rules: dict[str, dict[str, None]] = {}  # per zone, in order, once (forwards may share a masquerade rule)
        for forward, name in zip(spec.forwards, names):
            rules.setdefault(zone_in, {})[dialect.forward_rule(forward, name)] = None
            if forward.masquerade:
                zone_out = zones_of.get(routes.get(str(forward.to.address)) or "", default)
                rules.setdefault(zone_out, {})[dialect.masquerade_rule(forward, name)] = None
        part: dict[str, Any] = {"ipsets": sets, "rules": {zone: list(found) for zone, found in rules.items()}}
        return canonical({config: part for config in CONFIGS})

    def forwards(self, text: str) -> list[Essence]:
        """The runtime's forwards (what is live), read by the dialect's parser."""
        runtime = parse(text)["runtime"]
        lines = [f"want_set {name} {shlex.quote(' '.join([s['family'], *s['entries']]))}"
                 for name, s in runtime["ipsets"].items()]
        lines += [rule for rules in runtime["rules"].values() for rule in rules]
        return dialect.parse_rich_rules("\n".join(lines))

    def write(self, target: str, live: Live) -> int | None:
        answer = self._helper("write", {"current": parse(live.text), "target": parse(target), **self._owned(),
                                        "allow_runtime_loss": self.context.allow_runtime_loss})
        return answer.get("commits")

    def fingerprint(self) -> str | None:
        return None

    def persist(self, target: str) -> list[str]:
        return []  # the permanent configuration is written with every change


def _route_devices(addresses: list[str]) -> dict[str, str]:
    """{address: device of the route to it, "default": device of the IPv4 default route}: one
    `ip -batch` for all lookups (a route lookup sends nothing)."""
    if shutil.which("ip") is None:
        return {}
    queries = ["route show default", *(f"route get {a}" for a in dict.fromkeys(addresses))]
    done = run(["ip", "-o", "-force", "-batch", "-"], input="\n".join(queries) + "\n", check=False)
    found: dict[str, str] = {}
    for line in done.stdout.splitlines():
        words = line.split()
        if "dev" not in words[:-1]:
            continue
        device = words[words.index("dev") + 1]
        key = "default" if words[0] == "default" else words[0]
        found.setdefault(key, device)
    return found


def make(context: Context) -> FirewalldBackend:
    return FirewalldBackend(context)
