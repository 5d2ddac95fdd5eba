"""The shapes every whitelist source is read into, and every check reads from.

A source (a list file, a spec, a firewall dump) becomes one or more *groups*: the sources admitted
to one forward or port. Each group holds *entries*: sets of addresses, each remembering the
file line or firewall rule it came from, so a finding can point at the line to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from netaddr import IPNetwork, IPSet

from netfwd.firewall.addresses import BITS, to_cidrs
from netfwd.firewall.model import Origin


class Entry(NamedTuple):
    """A set of admitted addresses of one IP version, as integer ranges (sorted, disjoint)."""

    version: int
    ranges: tuple[tuple[int, int], ...]
    text: str  # how the source spells it: "10.0.0.0/8", "! -s 10.0.0.0/8", "any"
    origin: Origin

    @property
    def size(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    @property
    def is_any(self) -> bool:
        return self.ranges == ((0, (1 << BITS[self.version]) - 1),)

    def cidrs(self) -> list[IPNetwork]:
        return [net for first, last in self.ranges for net in to_cidrs(self.version, first, last)]

    def ipset(self) -> IPSet:
        return IPSet(self.cidrs())

    @classmethod
    def single(cls, version: int, first: int, last: int, text: str, origin: Origin) -> "Entry":
        return cls(version, ((first, last),), text, origin)


def entries_from_ipset(addresses: IPSet, text: str, origin: Origin) -> list[Entry]:
    """One entry per IP version present in `addresses` (an evaluated rule's effective sources)."""
    by_version: dict[int, list[tuple[int, int]]] = {}
    for span in addresses.iter_ipranges():
        by_version.setdefault(span.version, []).append((span.first, span.last))
    return [Entry(version, tuple(ranges), text, origin) for version, ranges in sorted(by_version.items())]


@dataclass(frozen=True, slots=True)
class Finding:
    """One stable-coded observation. Codes are part of the CLI contract (docs/whitelist.md)."""

    code: str  # too-broad | catalog-duplicate | private-range | local-overlap | unused | unevaluated
    severity: str  # warning | info
    message: str
    origin: Origin | None = None
    cidrs: tuple[str, ...] = ()
    count: int | None = None  # addresses involved (too-broad: beyond the requirement)


@dataclass(frozen=True, slots=True)
class Group:
    """The sources admitted to one forward (spec), one port (firewall dump) or one list file."""

    label: str
    entries: tuple[Entry, ...]
    protocol: str | None = None
    port: int | None = None
    notes: tuple[Finding, ...] = ()  # what the reader could not evaluate, and why


@dataclass(frozen=True, slots=True)
class Parsed:
    """A whole source: its detected format and its groups."""

    format: str
    file: str
    groups: tuple[Group, ...]
    notes: tuple[Finding, ...] = field(default=())
