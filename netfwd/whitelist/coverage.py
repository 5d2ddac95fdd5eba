"""Coverage arithmetic: which of each region's required addresses a group admits.

Exact answers come from netaddr (IPSet difference, minimal CIDRs). To stay fast on 100,000-entry
whitelists, entries are first screened with an integer interval test against the (small)
requirement: only entries that overlap it can cover anything, so only they become netaddr sets.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from netaddr import IPSet

from netfwd.whitelist.model import Entry, Group


class Intervals:
    """Sorted, disjoint integer ranges per IP version, with a fast overlap test."""

    def __init__(self, addresses: IPSet) -> None:
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for span in addresses.iter_ipranges():  # sorted and merged by netaddr
            self._starts[span.version].append(span.first)
            self._ends[span.version].append(span.last)

    def overlaps(self, version: int, first: int, last: int) -> bool:
        starts = self._starts[version]
        index = bisect_right(starts, last) - 1
        return index >= 0 and self._ends[version][index] >= first

    def touches(self, entry: Entry) -> bool:
        return any(self.overlaps(entry.version, first, last) for first, last in entry.ranges)


@dataclass(frozen=True, slots=True)
class Requirement:
    """The addresses each requested region connects from (from the catalog)."""

    regions: tuple[tuple[str, str, IPSet], ...]  # (id, name, required addresses)
    union: IPSet
    intervals: Intervals

    @classmethod
    def build(cls, catalog, region_ids: list[str]) -> "Requirement":
        regions = tuple((rid, catalog.region(rid).name, IPSet(catalog.region(rid).networks)) for rid in region_ids)
        union = IPSet()
        for _, _, required in regions:
            union |= required
        return cls(regions, union, Intervals(union))


@dataclass(frozen=True, slots=True)
class RegionCoverage:
    region: str
    name: str
    status: str  # covered | partial | missing
    required: tuple[str, ...]  # minimal CIDRs
    missing: tuple[str, ...]  # minimal CIDRs not admitted
    missing_addresses: int


def relevant(group: Group, requirement: Requirement) -> list[Entry]:
    """The entries that admit at least one required address."""
    touches = requirement.intervals.touches
    return [entry for entry in group.entries if touches(entry)]


def admitted(entries: list[Entry]) -> IPSet:
    result = IPSet()
    for entry in entries:
        result |= entry.ipset()
    return result


def cover(group: Group, requirement: Requirement) -> list[RegionCoverage]:
    """Per region: covered, partial (with the exact missing CIDRs) or missing."""
    allowed = admitted(relevant(group, requirement))
    out = []
    for rid, name, required in requirement.regions:
        missing = required - allowed
        status = "covered" if not missing else ("missing" if missing == required else "partial")
        out.append(RegionCoverage(rid, name, status, tuple(str(n) for n in required.iter_cidrs()),
                                  tuple(str(n) for n in missing.iter_cidrs()), missing.size))
    return out
