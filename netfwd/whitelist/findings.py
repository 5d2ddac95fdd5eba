"""Findings with stable codes: what a whitelist admits that it should not, and traps in the catalog.

Codes (the CLI contract, see docs/whitelist.md): too-broad, unused, private-range, local-overlap,
catalog-duplicate; `unevaluated` comes from the source readers. Findings never change coverage;
they are warnings (or info) beside it.
"""

from __future__ import annotations

from netaddr import IPSet

from netfwd.whitelist.coverage import Intervals, Requirement
from netfwd.whitelist.model import Finding, Group, Origin

RFC1918 = IPSet(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"])  # + IPv6 ULA
SHARED = IPSet(["100.64.0.0/10"])  # RFC 6598
PRIVATE = RFC1918 | SHARED
_PRIVATE_INTERVALS = Intervals(PRIVATE)
SHOW = 8  # CIDRs quoted in one message


def _quote(addresses: IPSet) -> tuple[str, ...]:
    return tuple(str(net) for net in addresses.iter_cidrs())


def _short(cidrs: tuple[str, ...]) -> str:
    return ", ".join(cidrs[:SHOW]) + (f" and {len(cidrs) - SHOW} more" if len(cidrs) > SHOW else "")


def too_broad(group: Group, requirement: Requirement) -> list[Finding]:
    """Entries that admit required addresses *and* others (or everything): say how many others."""
    found = []
    names = ", ".join(rid for rid, _, _ in requirement.regions)
    for entry in group.entries:
        if not (entry.is_any or requirement.intervals.touches(entry)):
            continue
        needed = (entry.ipset() & requirement.union).size
        beyond = entry.size - needed
        if beyond > 0:
            what = "every address" if entry.is_any else f"{beyond:,} address(es) beyond what {names} need"
            found.append(Finding("too-broad", "warning", f"{entry.text} admits {what}"
                                 + (f" ({beyond:,} beyond the requirement)" if entry.is_any else ""),
                                 entry.origin, tuple(str(n) for n in entry.cidrs()[:SHOW]), beyond))
    return found


def unused(group: Group, requirement: Requirement, others: Intervals | None = None) -> list[Finding]:
    """One finding per group listing entries that admit no address any requested region needs."""
    touches = requirement.intervals.touches
    idle = [e for e in group.entries if not e.is_any and not touches(e)]
    if not idle:
        return []
    elsewhere = sum(1 for e in idle if others is not None and others.touches(e))
    note = f" ({elsewhere} belong to catalog regions that were not requested)" if elsewhere else ""
    examples = ", ".join(f"{e.text} ({e.origin.file}:{e.origin.line})" if e.origin.line else e.text
                         for e in idle[:3]) + (", ..." if len(idle) > 3 else "")
    verb = "entry admits" if len(idle) == 1 else "entries admit"
    return [Finding("unused", "info", f"{len(idle):,} {verb} no address the requested regions need{note}: "
                    f"{examples}", idle[0].origin, tuple(e.text for e in idle), sum(e.size for e in idle))]


def private_range(group: Group, requirement: Requirement) -> list[Finding]:
    """Entries that admit RFC 1918 / ULA space, or shared space (RFC 6598) beyond the requirement."""
    found = []
    for entry in group.entries:
        if not _PRIVATE_INTERVALS.touches(entry):
            continue
        part = entry.ipset() & PRIVATE
        rfc = part & RFC1918
        extra_shared = (part & SHARED) - requirement.union
        if rfc:
            required = " (the catalog requires part of it)" if rfc & requirement.union else ""
            cidrs = _quote(rfc)
            found.append(Finding("private-range", "warning",
                                 f"{entry.text} admits private (RFC 1918/ULA) addresses {_short(cidrs)}: "
                                 f"on-prem hosts may use them{required}", entry.origin, cidrs, rfc.size))
        elif extra_shared:
            cidrs = _quote(extra_shared)
            found.append(Finding("private-range", "warning",
                                 f"{entry.text} admits RFC 6598 shared address space no requested region "
                                 f"needs: {_short(cidrs)}", entry.origin, cidrs, extra_shared.size))
    return found


def local_overlap(group: Group, local: IPSet | None) -> list[Finding]:
    """Entries overlapping the relay's or on-prem networks: those hosts would be admitted too."""
    if not local:
        return []
    screen = Intervals(local)
    found = []
    for entry in group.entries:
        if screen.touches(entry):
            part = entry.ipset() & local
            cidrs = _quote(part)
            found.append(Finding("local-overlap", "warning",
                                 f"{entry.text} overlaps local network(s) {_short(cidrs)}",
                                 entry.origin, cidrs, part.size))
    return found


def catalog_findings(catalog, region_ids: list[str]) -> list[Finding]:
    """The vendor table's own traps, for the regions requested: shared CIDRs, RFC 1918 blocks."""
    wanted = set(region_ids)
    found = []
    for anomaly in catalog.anomalies():
        if not wanted & set(anomaly.regions) or anomaly.code not in ("catalog-duplicate", "private-range"):
            continue
        others = [r for r in anomaly.regions if r not in wanted]
        extra = (f"; admitting it for {', '.join(r for r in anomaly.regions if r in wanted)} also admits "
                 f"{', '.join(others)}") if anomaly.code == "catalog-duplicate" and others else ""
        found.append(Finding(anomaly.code, "warning", anomaly.note + extra, Origin(catalog.file),
                             (str(anomaly.cidr),), anomaly.cidr.size))
    return found


def group_findings(group: Group, requirement: Requirement, local: IPSet | None,
                   others: Intervals | None) -> list[Finding]:
    return (too_broad(group, requirement) + private_range(group, requirement)
            + local_overlap(group, local) + unused(group, requirement, others) + list(group.notes))

