"""One pass that tells, per entry, which reference sets it touches (requirement, other regions,
private space, local networks), so that the exact netaddr arithmetic runs only where it matters.

The reference sets are cut into disjoint segments, each labelled with a bit mask; an entry's
mask is the OR over the segments its ranges overlap (one bisect per range). A 100,000-entry
whitelist is screened in ~0.1 s, where building a netaddr IPSet per entry would take seconds.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from netaddr import IPSet

from netfwd.whitelist.model import Entry

REQUIRED, OTHER_REGIONS, RFC1918, SHARED, LOCAL = 1, 2, 4, 8, 16


class Screen:
    def __init__(self, labelled: dict[int, IPSet]) -> None:
        self._segments: dict[int, tuple[list[int], list[int], list[int]]] = {}
        for version in (4, 6):
            spans = [(r.first, r.last, bit) for bit, addresses in labelled.items()
                     for r in addresses.iter_ipranges() if r.version == version]
            cuts = sorted({c for first, last, _ in spans for c in (first, last + 1)})
            starts, ends, masks = [], [], []
            for start, nxt in zip(cuts, cuts[1:]):
                mask = 0
                for first, last, bit in spans:
                    if first <= start <= last:
                        mask |= bit
                if mask:
                    starts.append(start)
                    ends.append(nxt - 1)
                    masks.append(mask)
            self._segments[version] = (starts, ends, masks)

    def mask(self, entry: Entry) -> int:
        return self.masks([entry])[0]

    def masks(self, entries) -> list[int]:
        """The mask of every entry: the hot loop of a big whitelist, kept flat on purpose.

        Segments are disjoint and sorted, so those overlapping [first, last] are the contiguous
        run from bisect_left(ends, first) to bisect_right(starts, last) - 1: two C bisects and,
        almost always, no Python loop."""
        out: list[int] = []
        add = out.append
        segments = self._segments
        for entry in entries:
            starts, ends, masks = segments[entry[0]]
            result = 0
            for first, last in entry[1]:
                high = bisect_right(starts, last) - 1
                low = bisect_left(ends, first)
                if low == high:
                    result |= masks[low]
                elif low < high:
                    for index in range(low, high + 1):
                        result |= masks[index]
            add(result)
        return out
