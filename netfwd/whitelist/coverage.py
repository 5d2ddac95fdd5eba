"""Coverage arithmetic: which of each region's required addresses a group admits.

Exact answers come from netaddr (IPSet difference, minimal CIDRs). Only the entries the screen
(`screen.py`) marks as touching the requirement can cover anything, so only they become netaddr
sets: that keeps a 100,000-entry whitelist well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

from netaddr import IPSet

from netfwd.whitelist.model import Entry


@dataclass(frozen=True, slots=True)
class Requirement:
    """The addresses each requested region connects from (from the catalog)."""

    regions: tuple[tuple[str, str, IPSet], ...]  # (id, name, required addresses)
    union: IPSet
    others: IPSet  # what catalog regions that were not requested need (and these do not)

    @classmethod
    def build(cls, catalog, region_ids: list[str]) -> "Requirement":
        regions = tuple((rid, catalog.region(rid).name, IPSet(catalog.region(rid).networks)) for rid in region_ids)
        union = IPSet()
        for _, _, required in regions:
            union |= required
        others = catalog.networks([r for r in catalog.ids if r not in region_ids]) - union
        return cls(regions, union, others)

    @property
    def names(self) -> str:
        return ", ".join(rid for rid, _, _ in self.regions)


@dataclass(frozen=True, slots=True)
class RegionCoverage:
    region: str
    name: str
    status: str  # covered | partial | missing
    required: tuple[str, ...]  # minimal CIDRs
    missing: tuple[str, ...]  # minimal CIDRs not admitted
    missing_addresses: int


def admitted(entries: list[Entry]) -> IPSet:
    result = IPSet()
    for entry in entries:
        result |= entry.ipset()
    return result


def cover(relevant: list[Entry], requirement: Requirement) -> list[RegionCoverage]:
    """Per region: covered, partial (with the exact missing CIDRs) or missing.

    `relevant` are the entries that touch the requirement (the others cannot cover anything)."""
    allowed = admitted(relevant)
    out = []
    for rid, name, required in requirement.regions:
        missing = required - allowed
        status = "covered" if not missing else ("missing" if missing == required else "partial")
        out.append(RegionCoverage(rid, name, status, tuple(str(n) for n in required.iter_cidrs()),
                                  tuple(str(n) for n in missing.iter_cidrs()), missing.size))
    return out
