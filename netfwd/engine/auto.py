"""`--backend auto`: use the firewall the host already uses, and refuse to guess between two.

Order: firewalld when it is running (raw rules would be wiped by its next reload); else the
iptables flavour that holds rules; if both legacy and nf_tables hold iptables rules (both are
evaluated, docs/facts.md#iptables-backends), refuse unless told which; else native nftables when its tables exist;
else the flavour `iptables -V` reports; else nft. The engine asks this only when its state does
not already name the backend of the last change.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from netfwd.backends.base import run
from netfwd.errors import EnvironmentProblem

XTABLES_TABLES = {"filter", "nat", "mangle", "raw", "security"}
SYSTEM_BUS = Path("/run/dbus/system_bus_socket")


def firewalld_running() -> bool:
    from netfwd import host

    if host.current():  # a firewalld on this mount namespace's bus is the host's, not the namespace's
        return False
    if shutil.which("firewall-cmd") is None or not SYSTEM_BUS.exists():
        return False
    done = run(["firewall-cmd", "--state"], check=False, timeout=30)
    return done.returncode == 0 and done.stdout.strip() == "running"


def xtables_in_use(save: str) -> bool:
    """`iptables-*-save` output shows rules, user chains, or a policy other than ACCEPT."""
    if shutil.which(save) is None:
        return False
    done = run([save], check=False)
    for line in done.stdout.splitlines():
        if line.startswith("-A "):
            return True
        if line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            if rest.split(" ", 1)[0] not in ("ACCEPT", ""):  # "-" = a user chain; DROP = a policy
                return True
    return False


def native_nft_tables() -> list[str]:
    """nftables tables that iptables-nft did not make (e.g. nftables.service's, or netfwd's own)."""
    if shutil.which("nft") is None:
        return []
    done = run(["nft", "list", "tables"], check=False)
    found = []
    for line in done.stdout.splitlines():
        words = line.split()
        if len(words) == 3 and words[0] == "table":
            if not (words[1] in ("ip", "ip6") and words[2] in XTABLES_TABLES):
                found.append(f"{words[1]} {words[2]}")
    return found


def choose() -> tuple[str, str]:
    """(backend name, the reason, for the log)."""
    if firewalld_running():
        return "firewalld", "firewalld is running"
    legacy = xtables_in_use("iptables-legacy-save")
    nft = xtables_in_use("iptables-nft-save")
    if legacy and nft:
        raise EnvironmentProblem("both iptables-legacy and iptables-nft hold rules on this host, and the kernel "
                                 "evaluates both: choose one with --backend iptables (nf_tables) or "
                                 "--backend iptables-legacy")
    if legacy:
        return "iptables-legacy", "the legacy iptables tables hold rules"
    if nft:
        return "iptables", "iptables-nft (nf_tables) holds rules"
    native = native_nft_tables()
    if native:
        return "nft", f"nftables tables exist ({', '.join(native)})"
    if shutil.which("iptables"):
        version = run(["iptables", "--version"], check=False).stdout
        if "legacy" in version:
            return "iptables-legacy", "`iptables` is the legacy flavour"
        if "nf_tables" in version:
            return "iptables", "`iptables` is the nf_tables flavour"
        found = re.match(r"iptables v(\d+)\.(\d+)", version)
        if found and (int(found[1]), int(found[2])) < (1, 8):
            # before 1.8 there was one flavour, the x_tables kernel interface (e.g. CentOS 7's 1.4.21)
            return "iptables-legacy", f"`iptables` is v{found[1]}.{found[2]}, which drives only the legacy tables"
    if shutil.which("nft"):
        return "nft", "nft is installed (no iptables)"
    raise EnvironmentProblem("no firewall tool found (firewall-cmd, iptables, nft): install one, "
                             "or name the backend with --backend")
