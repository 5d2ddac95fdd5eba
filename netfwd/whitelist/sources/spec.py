"""A netfwd spec as a whitelist source: one group per forward, from its resolved `allow` list.

A forward without `allow` admits any source; it is read as 0.0.0.0/0 (or ::/0), which the
too-broad check then reports.
"""

from __future__ import annotations

from netfwd.firewall.addresses import BITS
from netfwd.whitelist.model import Entry, Group, Origin, Parsed


def parse(text: str, file: str, context) -> Parsed:
    from netfwd.spec import build_spec
    from netfwd.yamlsource import load_text

    doc = load_text(text, file)
    spec = build_spec(doc, context.catalog)
    groups = []
    for index, forward in enumerate(spec.forwards):
        if context.port is not None and forward.listen.port != context.port:
            continue
        where = f"forwards[{index}].allow"
        origin = Origin(file, doc.line_of(where), f"forward {forward.name}")
        if forward.sources is None:
            version = forward.family
            entries: tuple[Entry, ...] = (Entry.single(version, 0, (1 << BITS[version]) - 1, "any source (no allow list)", origin),)
        else:
            entries = tuple(Entry.single(net.version, net.first, net.last, str(net), origin)
                            for net in forward.sources)
        groups.append(Group(forward.name, entries, forward.protocol, forward.listen.port))
    return Parsed("spec", file, tuple(groups))
