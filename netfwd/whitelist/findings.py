"""Findings with stable codes: what a whitelist admits that it should not, and traps in the catalog.

Codes (the CLI contract, see docs/whitelist.md): too-broad, unused, private-range, local-overlap,
catalog-duplicate; `unevaluated` comes from the source readers. Findings never change coverage;
they are warnings (or info) beside it. Each check looks only at the entries the screen flagged
for it, and computes what it reports with netaddr.
"""

from __future__ import annotations

from netaddr import IPSet

from netfwd.whitelist.coverage import Requirement
from netfwd.firewall.addresses import to_cidrs
from netfwd.whitelist.model import Entry, Finding, Origin
from netfwd.whitelist.screen import LOCAL, OTHER_REGIONS, REQUIRED, RFC1918, SHARED, Screen

PRIVATE_RFC = IPSet(["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"])  # + IPv6 ULA
SHARED_SPACE = IPSet(["100.64.0.0/10"])  # RFC 6598
SHOW = 8  # CIDRs quoted in one message


def make_screen(requirement: Requirement, local: IPSet | None) -> Screen:
    return Screen({REQUIRED: requirement.union, OTHER_REGIONS: requirement.others, RFC1918: PRIVATE_RFC,
                   SHARED: SHARED_SPACE, LOCAL: local or IPSet()})


PRIVATE_BLOCKS = list(PRIVATE_RFC.iter_cidrs())
SHARED_BLOCKS = list(SHARED_SPACE.iter_cidrs())


def _part(entry: Entry, blocks: list) -> tuple[tuple[str, ...], int]:
    """entry ∩ blocks as (minimal CIDRs, address count): clip the entry's ranges to each block."""
    spans = [(max(first, block.first), min(last, block.last)) for first, last in entry.ranges
             for block in blocks if block.version == entry.version and first <= block.last and last >= block.first]
    cidrs = tuple(str(n) for first, last in sorted(spans) for n in to_cidrs(entry.version, first, last))
    return cidrs, sum(last - first + 1 for first, last in spans)


def _quote(addresses: IPSet) -> tuple[str, ...]:
    return tuple(str(net) for net in addresses.iter_cidrs())


def _short(cidrs: tuple[str, ...]) -> str:
    return ", ".join(cidrs[:SHOW]) + (f" and {len(cidrs) - SHOW} more" if len(cidrs) > SHOW else "")


def too_broad(entries: list[Entry], masks: list[int], requirement: Requirement) -> list[Finding]:
    """Entries that admit required addresses *and* others (or everything): say how many others."""
    found = []
    for entry, mask in zip(entries, masks):
        if not (mask & REQUIRED or (entry.ranges[0][0] == 0 and entry.is_any)):
            continue
        beyond = entry.size - (entry.ipset() & requirement.union).size
        if beyond > 0:
            what = (f"every address ({beyond:,} beyond the requirement)" if entry.is_any
                    else f"{beyond:,} address(es) beyond the requirement of {requirement.names}")
            found.append(Finding("too-broad", "warning", f"{entry.text} admits {what}", entry.origin,
                                 tuple(str(n) for n in entry.cidrs()[:SHOW]), beyond))
    return found


def unused(entries: list[Entry], masks: list[int]) -> list[Finding]:
    """One finding per group listing entries that admit no address any requested region needs."""
    idle: list[Entry] = []
    size, elsewhere = 0, 0
    add = idle.append
    for entry, mask in zip(entries, masks):  # hot on big lists: flat, no generator per entry
        if mask & REQUIRED:
            continue
        ranges = entry[1]
        if ranges[0][0] == 0 and entry.is_any:
            continue
        add(entry)
        if len(ranges) == 1:
            size += ranges[0][1] - ranges[0][0] + 1
        else:
            size += sum(last - first + 1 for first, last in ranges)
        if mask & OTHER_REGIONS:
            elsewhere += 1
    if not idle:
        return []
    note = f" ({elsewhere} belong to catalog regions that were not requested)" if elsewhere else ""
    examples = ", ".join(f"{e.text} ({e.origin.file}:{e.origin.line})" if e.origin.line else e.text
                         for e in idle[:3]) + (", ..." if len(idle) > 3 else "")
    verb = "entry admits" if len(idle) == 1 else "entries admit"
    return [Finding("unused", "info", f"{len(idle):,} {verb} no address the requested regions need{note}: "
                    f"{examples}", idle[0].origin, tuple(e[2] for e in idle), size)]


def private_range(entries: list[Entry], masks: list[int], requirement: Requirement) -> list[Finding]:
    """Entries that admit RFC 1918 / ULA space, or shared space (RFC 6598) beyond the requirement."""
    found = []
    for entry, mask in zip(entries, masks):
        if mask & RFC1918:
            cidrs, size = _part(entry, PRIVATE_BLOCKS)
            required = ""
            if mask & REQUIRED and IPSet(cidrs) & requirement.union:
                required = " (the catalog requires part of it)"
            found.append(Finding("private-range", "warning",
                                 f"{entry.text} admits private (RFC 1918/ULA) addresses {_short(cidrs)}: "
                                 f"on-prem hosts may use them{required}", entry.origin, cidrs, size))
        elif mask & SHARED:
            shared, _ = _part(entry, SHARED_BLOCKS)
            extra = IPSet(shared) - requirement.union
            if extra:
                cidrs = _quote(extra)
                found.append(Finding("private-range", "warning",
                                     f"{entry.text} admits RFC 6598 shared address space no requested region "
                                     f"needs: {_short(cidrs)}", entry.origin, cidrs, extra.size))
    return found


def local_overlap(entries: list[Entry], masks: list[int], local: IPSet | None) -> list[Finding]:
    """Entries overlapping the relay's or on-prem networks: those hosts would be admitted too."""
    found = []
    for entry, mask in zip(entries, masks):
        if mask & LOCAL and local:
            part = entry.ipset() & local
            cidrs = _quote(part)
            found.append(Finding("local-overlap", "warning", f"{entry.text} overlaps local network(s) "
                                 f"{_short(cidrs)}", entry.origin, cidrs, part.size))
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


def group_findings(entries: list[Entry], masks: list[int], requirement: Requirement,
                   local: IPSet | None) -> list[Finding]:
    return (too_broad(entries, masks, requirement) + private_range(entries, masks, requirement)
            + local_overlap(entries, masks, local) + unused(entries, masks))
