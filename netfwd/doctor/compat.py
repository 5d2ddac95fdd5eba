"""The `compat` check: the relay's firewall programs against docs/compat.md's support matrix."""

from __future__ import annotations

import re

from netfwd.compat import Versions, evaluate
from netfwd.doctor.context import DoctorContext
from netfwd.doctor.framework import Outcome, error, found, warning


class Compat:
    group = "relay"
    name = "compat"
    doc = "the relay's iptables, nft, firewalld and kernel versions against docs/compat.md's support matrix"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        iptables = relay.iptables_version
        versions = Versions(iptables[0] if iptables else None, iptables[1] if iptables else None,
                            _first_version(relay.run(["nft", "-v"])), _firewalld_version(relay),
                            _kernel(relay))
        support = evaluate(versions)
        summary = f"{versions.describe()}: can run {', '.join(support.usable) or 'nothing of netfwd'}"
        findings = [warning(f"{what} cannot run here: {why}", "use one of: " + ", ".join(support.usable))
                    for what, why in support.refused if support.usable and "not installed" not in why]
        findings += [warning(f"{what} is a version no netfwd lab test runs", "see docs/compat.md; test a "
                             "rehearsal in a lab first") for what in support.untested]
        if not support.usable:
            findings.append(error("no dialect or backend of netfwd can run on this relay",
                                  "install iptables >= 1.4.7, nftables >= 0.9.1 or firewalld (docs/compat.md)"))
        return found(findings, summary)


def _first_version(done) -> str | None:
    if done is None or done.returncode != 0:
        return None
    match = re.search(r"\d+\.\d+(?:\.\d+)?", done.stdout)
    return match[0] if match else None


def _firewalld_version(relay) -> str | None:
    """firewall-cmd's own version (firewalld 1.x asks D-Bus even for that; then its Python module says)."""
    found = _first_version(relay.run(["firewall-cmd", "--version"]))
    for python in ("/usr/bin/python3", "python3"):
        found = found or _first_version(relay.run([python, "-c", "import firewall.config as c; print(c.VERSION)"]))
    return found


def _kernel(relay) -> str:
    done = relay.run(["uname", "-r"])
    return done.stdout.strip() if done is not None and done.returncode == 0 else "unknown"


CHECKS = (Compat(),)
