"""A script netfwd rendered (any dialect: iptables, iptables-restore, nft, firewalld, netsh,
powershell) as a whitelist source: the dialect that wrote it reads it back (its round-trip `parse`),
one group per forward, so what was rendered is verified before it is run."""

from __future__ import annotations

from netfwd.errors import InputError
from netfwd.firewall.addresses import BITS, parse_token
from netfwd.whitelist.detect import sniff
from netfwd.whitelist.model import Entry, Group, Origin, Parsed


def parse(text: str, file: str, context) -> Parsed:
    from netfwd.dialects import MODULES, get_dialect

    header = sniff(text)
    if header is None:
        raise InputError("no `netfwd ...: DIALECT apply script` header: not a script netfwd rendered",
                         file=file, line=1, field="header")
    name, what = header.group(1).lower(), header.group(2).lower()
    if name not in MODULES:
        raise InputError(f"names the unknown dialect {name!r}", file=file, line=1, field="header")
    if what != "apply":
        raise InputError("is a remove script: it admits nothing (pass the apply script)", file=file, line=1,
                         field="header")
    line = text[:header.start()].count("\n") + 1
    try:  # the dialects' parsers read back what they wrote; an edited script is not that
        essences = get_dialect(name).parse(text)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise InputError(f"the {name} dialect cannot read this script back: it is not as netfwd rendered "
                         "it (edited or cut?); render it again", file=file, line=line, field="body") from None
    groups = []
    for essence in essences:
        if context.port is not None and essence.listen_port != context.port:
            continue
        label = f"{essence.protocol}/{essence.listen_port} -> {essence.to_address}:{essence.to_port}"
        origin = Origin(file, line, f"{name} forward {label}")
        groups.append(Group(label, _entries(essence, origin, file), essence.protocol, essence.listen_port))
    return Parsed(f"script:{name}", file, tuple(groups))


def _entries(essence, origin: Origin, file: str) -> tuple[Entry, ...]:
    if essence.sources is None:
        version = 6 if ":" in essence.to_address else 4
        return (Entry.single(version, 0, (1 << BITS[version]) - 1, "any source (no allow list)", origin),)
    entries = []
    for source in essence.sources:
        try:
            version, first, last = parse_token(source, strict=False)
        except ValueError:
            raise InputError(f"source {source!r} is not an address (an ipset whose members the script "
                             "does not hold?)", file=file, line=origin.line, field="sources") from None
        entries.append(Entry.single(version, first, last, source, origin))
    return tuple(entries)
