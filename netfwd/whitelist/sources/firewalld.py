"""firewalld zone XML files and `firewall-cmd --list-all` (or `--list-all-zones`) output.

Both become `zone.Zone` objects; `zone.py` decides what they admit. Rich rules are read from
their XML elements or from their one-line text form with the same rules.
"""

from __future__ import annotations

import re
from pathlib import Path
from xml.parsers import expat

from netaddr import IPSet

from netfwd.errors import InputError
from netfwd.firewall import rich
from netfwd.firewall.addresses import digits, parse_token, to_cidrs
from netfwd.whitelist.model import Origin, Parsed
from netfwd.whitelist.sources.zone import RichRule, Zone, zone_groups


class _Node:
    def __init__(self, tag: str, attrs: dict[str, str], line: int) -> None:
        self.tag, self.attrs, self.line, self.text = tag, attrs, line, ""
        self.children: list[_Node] = []

    def find(self, tag: str) -> "_Node | None":
        return next((c for c in self.children if c.tag == tag), None)


def _xml(text: str, file: str) -> _Node:
    """Parse XML keeping line numbers; refuse DTDs (entity expansion) outright."""
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise InputError("XML with a DOCTYPE/ENTITY is not accepted", file=file, line=1)
    parser = expat.ParserCreate()
    stack: list[_Node] = [_Node("#root", {}, 0)]

    def start(tag, attrs):
        node = _Node(tag, attrs, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(tag):
        stack.pop()

    def data(chunk):
        stack[-1].text += chunk

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, data
    try:
        parser.Parse(text, True)
    except expat.ExpatError as problem:
        raise InputError(f"invalid XML: {expat.ErrorString(problem.code)}", file=file, line=problem.lineno) from None
    return stack[0].children[0]


def _addresses(value: str, file: str, line: int | None, field: str) -> IPSet:
    nets = []
    for token in filter(None, (t.strip() for t in value.split(","))):
        try:
            version, first, last = parse_token(token, strict=False)
        except ValueError as problem:
            raise InputError(str(problem), file=file, line=line, field=field) from None
        nets += to_cidrs(version, first, last)
    return IPSet(nets)


def _ports(value: str, protocol: str, file: str, line: int | None) -> tuple[int, int, str]:
    low, _, high = value.partition("-")
    if not digits(low) or (high and not digits(high)):
        raise InputError(f"{value!r} is not a port or port range", file=file, line=line, field="port")
    return int(low), int(high or low), protocol


class _IpsetFiles:
    """firewalld keeps ipsets beside zones: /etc/firewalld/{zones,ipsets}/NAME.xml."""

    def __init__(self, file: str) -> None:
        here = Path(file).resolve().parent
        self.dirs = [here, here.parent / "ipsets"]

    def members(self, name: str) -> IPSet | None:
        for folder in self.dirs:
            path = folder / f"{name}.xml"
            if path.is_file() and re.fullmatch(r"[A-Za-z0-9_.-]+", name):
                root = _xml(path.read_text(encoding="utf-8"), str(path))
                if root.tag != "ipset" or not root.attrs.get("type", "").startswith("hash:"):
                    return None
                result = IPSet()
                for entry in (c for c in root.children if c.tag == "entry"):
                    result |= _addresses(entry.text.strip(), str(path), entry.line, "entry")
                return result
        return None


def _rule(fields: dict[str, dict[str, str]], action: str, origin: Origin, file: str, ipsets) -> RichRule:
    """A rich rule from its parts: {"rule": {...}, "source": {...}, "port": {...}, ...}."""
    rule = RichRule(origin, family=fields.get("rule", {}).get("family"), action=action)
    line = origin.line
    source = fields.get("source")
    if source is not None:
        invert = rich.inverted(source)
        if "address" in source:
            members = _addresses(source["address"], file, line, "source address")
            rule.source_text = f"source {'NOT ' if invert else ''}address={source['address']}"
        elif "ipset" in source:
            members = ipsets.members(source["ipset"]) if ipsets else None
            rule.source_text = f"source {'NOT ' if invert else ''}ipset={source['ipset']}"
            if members is None:
                rule.source_unknown = f"ipset {source['ipset']}"
        else:
            members, rule.source_unknown = None, "a source firewalld matches by MAC"
        if members is not None:
            rule.source = (IPSet(["0.0.0.0/0", "::/0"]) - members) if invert else members
    for kind in ("forward-port", "port", "service"):
        if kind in fields:
            rule.kind = kind
            body = fields[kind]
            if kind == "service":
                from netfwd.whitelist.sources.zone import SERVICES

                rule.kind = "port" if body.get("name") in SERVICES else "service"
                rule.ports = [(p, p, proto) for p, proto in SERVICES.get(body.get("name", ""), [])]
            else:
                rule.ports = [_ports(body.get("port", ""), body.get("protocol", "tcp"), file, line)]
                rule.to = f"{body.get('to-addr', 'local')}:{body.get('to-port', body.get('port'))}"
            break
    else:
        if any(k in fields for k in ("protocol", "icmp-block", "icmp-type", "masquerade", "source-port",
                                     "destination")):
            rule.kind = "other"
    if rule.kind == "forward-port" and not rule.action:
        rule.action = "accept"
    return rule


# -- zone XML ---------------------------------------------------------------------------------------
def parse_xml(text: str, file: str, context) -> Parsed:
    root = _xml(text, file)
    if root.tag != "zone":
        raise InputError(f"expected a firewalld <zone>, found <{root.tag}>", file=file, line=root.line, field="zone")
    zone = Zone(Path(file).stem, Origin(file, root.line, "<zone>"), target=root.attrs.get("target", "default"))
    ipsets = _IpsetFiles(file)
    for node in root.children:
        origin = Origin(file, node.line, f"<{node.tag}>")
        attrs = node.attrs
        if node.tag == "interface":
            zone.interfaces.append(attrs.get("name", ""))
        elif node.tag == "source":
            if "address" in attrs:
                zone.sources |= _addresses(attrs["address"], file, node.line, "source")
            elif "ipset" in attrs:
                zone.sources |= ipsets.members(attrs["ipset"]) or IPSet()
        elif node.tag == "port":
            zone.ports.append((*_ports(attrs.get("port", ""), attrs.get("protocol", "tcp"), file, node.line), origin))
        elif node.tag == "forward-port":
            low, high, proto = _ports(attrs.get("port", ""), attrs.get("protocol", "tcp"), file, node.line)
            to = f"{attrs.get('to-addr', 'local')}:{attrs.get('to-port', attrs.get('port'))}"
            zone.forward_ports.append((low, high, proto, to, origin))
        elif node.tag == "service":
            zone.services.append((attrs.get("name", ""), origin))
        elif node.tag == "rule":
            fields = {"rule": attrs} | {c.tag: c.attrs for c in node.children}
            action = next((c.tag for c in node.children if c.tag in ("accept", "reject", "drop", "mark")), "")
            zone.rules.append(_rule(fields, action, Origin(file, node.line, "<rule>"), file, ipsets))
    found, notes = zone_groups([zone], context)
    return Parsed("firewalld-xml", file, tuple(found), tuple(notes))


# -- firewall-cmd --list-all ------------------------------------------------------------------------
_HEADER = re.compile(r"^(\S+)(\s+\(([^)]*)\))?\s*$")
_KEY = re.compile(r"^\s+([a-z][a-z -]*):\s*(.*)$")


def parse_rich(text: str, origin: Origin, file: str) -> RichRule:
    """`rule family="ipv4" source NOT address="1.2.3.4" forward-port port="1" ...` -> RichRule."""
    if text.count('"') % 2 or text.count("'") % 2:
        raise InputError("cannot read rich rule: no closing quotation", file=file, line=origin.line,
                         field="rich rules")
    fields = rich.elements(text)
    return _rule(fields, rich.action(fields), origin, file, None)


def parse_list_all(text: str, file: str, context) -> Parsed:
    zones: list[Zone] = []
    zone: Zone | None = None
    key = ""
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        header = _HEADER.match(raw)
        if header and not raw[0].isspace():
            zone = Zone(header.group(1), Origin(file, number, header.group(1)),
                        active="active" in (header.group(3) or "") or not zones)
            zones.append(zone)
            continue
        if zone is None:
            raise InputError("expected a zone name line (as `firewall-cmd --list-all` prints)", file=file,
                             line=number, field="zone")
        match = _KEY.match(raw)
        if match and match.group(1) in KEYS:
            key, value = match.group(1), match.group(2).strip()
        else:
            value = raw.strip()  # a continuation line (forward-ports, rich rules)
        _apply(zone, key, value, Origin(file, number, value[:120]), file)
    for zone in zones:
        if zone.interfaces or zone.sources:
            zone.active = True
    found, notes = zone_groups(zones, context)
    return Parsed("firewalld", file, tuple(found), tuple(notes))


KEYS = {"target", "icmp-block-inversion", "interfaces", "sources", "services", "ports", "protocols", "forward",
        "masquerade", "forward-ports", "source-ports", "icmp-blocks", "rich rules", "ingress-priority",
        "egress-priority", "summary", "description"}


def _apply(zone: Zone, key: str, value: str, origin: Origin, file: str) -> None:
    if not value:
        return
    if key == "target":
        zone.target = value.strip("%")
    elif key == "interfaces":
        zone.interfaces += value.split()
    elif key == "sources":
        for item in value.split():
            if not item.startswith("ipset:"):
                zone.sources |= _addresses(item, file, origin.line, "sources")
    elif key == "services":
        zone.services += [(name, origin) for name in value.split()]
    elif key == "ports":
        for item in value.split():
            port, _, proto = item.partition("/")
            zone.ports.append((*_ports(port, proto or "tcp", file, origin.line), origin))
    elif key == "forward-ports":
        for item in value.split():
            parts = dict(p.partition("=")[::2] for p in item.split(":"))
            low, high, proto = _ports(parts.get("port", ""), parts.get("proto", "tcp"), file, origin.line)
            to = f"{parts.get('toaddr', 'local') or 'local'}:{parts.get('toport') or parts.get('port')}"
            zone.forward_ports.append((low, high, proto, to, origin))
    elif key == "rich rules":
        zone.rules.append(parse_rich(value, origin, file))
