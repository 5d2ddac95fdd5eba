"""Which dialects and backends a relay's firewall programs can run: docs/compat.md's support matrix, as data.

Decided from the versions the relay reports (capabilities, not distribution names). Pure: the caller
reads the versions (`iptables -V`, `nft -v`, `firewall-cmd --version`, `uname -r`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from netfwd.dialects.nft import KERNEL_MIN, NFT_MIN

IPTABLES_MIN = (1, 4, 7)  # the oldest whose manual lists `-C` (check-then-insert of the jumps): docs/compat.md
FIREWALLD_TESTED = ((0, 6, 3), (1, 3))  # the lab runs these (CentOS 7's and this machine's); others untested
IPTABLES_TESTED = ((1, 4, 21), (1, 8, 9))


@dataclass(frozen=True, slots=True)
class Versions:
    iptables: str | None  # "1.8.9"
    iptables_variant: str | None  # "nf_tables" | "legacy"
    nft: str | None  # "1.0.6"
    firewalld: str | None  # "0.6.3"
    kernel: str  # `uname -r`

    def describe(self) -> str:
        iptables = f"iptables {self.iptables} ({self.iptables_variant})" if self.iptables else "no iptables"
        return ", ".join([iptables, f"nft {self.nft}" if self.nft else "no nft",
                          f"firewalld {self.firewalld}" if self.firewalld else "no firewalld",
                          f"Linux {self.kernel}"])


@dataclass(frozen=True, slots=True)
class Support:
    usable: tuple[str, ...]  # dialects and backends that can run here
    refused: tuple[tuple[str, str], ...]  # (dialect or backend, why not)
    untested: tuple[str, ...]  # versions found that no lab test runs


def version(text: str | None) -> tuple[int, ...] | None:
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return None if found is None else tuple(int(n) for n in found.groups() if n is not None)


def _at_least(found: tuple[int, ...], minimum: tuple[int, ...]) -> bool:
    return found >= minimum


def _tested(found: tuple[int, ...], tested: tuple[tuple[int, ...], ...]) -> bool:
    return any(found[:len(t)] == t for t in tested)


def evaluate(v: Versions) -> Support:
    usable: list[str] = []
    refused: list[tuple[str, str]] = []
    untested: list[str] = []
    ipt = version(v.iptables)
    if ipt is None:
        refused.append(("iptables, iptables-restore, iptables backends", "iptables is not installed"))
    elif not _at_least(ipt, IPTABLES_MIN):
        refused.append(("iptables, iptables-restore", f"iptables {v.iptables} has no -C (needs >= 1.4.7)"))
    else:
        usable += ["iptables", "iptables-restore"]
        usable += ["iptables-legacy", "libiptc"] if v.iptables_variant != "nf_tables" else ["iptables (backend)"]
        if not _tested(ipt, IPTABLES_TESTED):
            untested.append(f"iptables {v.iptables}")
    nft, kernel = version(v.nft), version(v.kernel) or (0,)
    if nft is None:
        refused.append(("nft", f"nft is not installed (needs nftables >= {'.'.join(map(str, NFT_MIN))})"))
    elif not _at_least(nft, NFT_MIN):
        refused.append(("nft", f"nft {v.nft} is too old (needs >= {'.'.join(map(str, NFT_MIN))})"))
    elif not _at_least(kernel, KERNEL_MIN):
        refused.append(("nft", f"Linux {v.kernel} is too old for inet-family NAT (needs >= "
                               f"{'.'.join(map(str, KERNEL_MIN))})"))
    else:
        usable.append("nft")
    fwd = version(v.firewalld)
    if fwd is None:
        refused.append(("firewalld", "firewalld is not installed"))
    else:
        usable.append("firewalld")
        if not _tested(fwd, FIREWALLD_TESTED):
            untested.append(f"firewalld {v.firewalld}")
    return Support(tuple(usable), tuple(refused), tuple(untested))
