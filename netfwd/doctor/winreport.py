"""Read the collector's JSON report of a Windows relay (see netfwd.doctor.windows_collector).

Windows PowerShell unrolls one-element arrays and turns empty ones into null, so every list
section is read as "a list, one item, or nothing". Bad input is one line naming the file and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netfwd.doctor.windows_collector import REPORT_MARKER
from netfwd.errors import InputError
from netfwd.windows import ExcludedRange, PortProxyEntry, decode_output, parse_excluded_ranges, parse_portproxy_show


@dataclass(frozen=True)
class FirewallRule:
    name: str
    display_name: str
    action: str  # Allow | Block
    protocol: str  # TCP | Any | ...
    local_port: tuple[str, ...]
    remote_address: tuple[str, ...]
    local_address: tuple[str, ...]
    profile: str = ""
    service: str = "Any"  # the service the rule is scoped to ("Any": every program)


@dataclass
class WindowsReport:
    file: str
    computer: str = ""
    os: str = ""
    portproxy: list[PortProxyEntry] | None = None  # None: the section is missing
    registry: dict[str, dict[str, str]] | None = None  # table -> {"addr/port": "addr/port"}
    iphlpsvc: dict[str, Any] | None = None
    excluded: dict[int, list[ExcludedRange]] = field(default_factory=dict)
    firewall: list[FirewallRule] | None = None
    addresses: list[tuple[str, str]] | None = None  # (interface, address)
    listeners: list[tuple[str, int, int]] | None = None  # (address, port, pid)
    profiles: list[tuple[str, bool]] | None = None  # (Domain|Private|Public, enforced on)
    errors: list[str] = field(default_factory=list)  # sections the collector could not read

    def error_for(self, section: str) -> str | None:
        for text in self.errors:
            if text.startswith(section + ":"):
                return text
        return None


def as_list(value: Any) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _lines(value: Any) -> str:
    return "\n".join(str(line) for line in as_list(value))


MAX_REPORT_BYTES = 64 << 20  # a relay with 10,000 forwards and firewall rules reports a few MB


def load_report(path: str | Path) -> WindowsReport:
    from netfwd.inputfile import read_capped

    file = str(path)
    data = read_capped(path, MAX_REPORT_BYTES, "netfwd Windows report")
    try:
        doc = json.loads(decode_output(data))
    except json.JSONDecodeError as problem:
        raise InputError(f"not a netfwd Windows report (invalid JSON: {problem.msg})", file=file,
                         line=problem.lineno) from None
    except RecursionError:  # json's C scanner recurses once per nesting level
        raise InputError("not a netfwd Windows report (JSON nested too deeply)", file=file) from None
    except ValueError as problem:  # a number of more than 4300 digits
        raise InputError(f"not a netfwd Windows report ({str(problem).split(':')[0]})", file=file) from None
    if not isinstance(doc, dict) or REPORT_MARKER not in doc:
        raise InputError(f"not a netfwd Windows report (no {REPORT_MARKER!r} field): produce it with "
                         "`netfwd render SPEC --dialect powershell --collector`", file=file)
    return parse_report(doc, file)


def parse_report(doc: dict, file: str) -> WindowsReport:
    report = WindowsReport(file, str(doc.get("computer") or ""), str(doc.get("os") or ""),
                           errors=[str(e) for e in as_list(doc.get("errors"))])
    section = "portproxy"
    try:
        if "portproxy" in doc:
            report.portproxy = parse_portproxy_show(_lines(doc["portproxy"]))
        section = "registry"
        if isinstance(doc.get("registry"), dict):
            report.registry = {str(t): {str(k): str(v) for k, v in (entries or {}).items()}
                               for t, entries in doc["registry"].items()}
        if isinstance(doc.get("iphlpsvc"), dict):
            report.iphlpsvc = doc["iphlpsvc"]
        for version in (4, 6):
            key = f"excluded_ipv{version}"
            if key in doc:
                report.excluded[version] = parse_excluded_ranges(_lines(doc[key]))
        if "firewall" in doc:
            report.firewall = [_rule(item) for item in as_list(doc["firewall"]) if isinstance(item, dict)]
        if "addresses" in doc:
            report.addresses = [(str(a.get("interface", "")), str(a.get("address", "")))
                                for a in as_list(doc["addresses"]) if isinstance(a, dict)]
        section = "profiles"
        if "profiles" in doc:
            report.profiles = [(str(p.get("name", "")), str(p.get("enabled", "")).lower() in ("true", "1"))
                               for p in as_list(doc["profiles"]) if isinstance(p, dict)]
        section = "listeners"
        if "listeners" in doc:
            report.listeners = [(str(a.get("address", "")), int(a.get("port", 0)), int(a.get("pid", 0)))
                                for a in as_list(doc["listeners"]) if isinstance(a, dict)]
    except (TypeError, ValueError, AttributeError, OverflowError) as problem:  # Overflow: `"port": Infinity`
        raise InputError(f"malformed report section ({problem})", file=file, field=section) from None
    return report


def _rule(item: dict) -> FirewallRule:
    def strings(key: str) -> tuple[str, ...]:
        return tuple(str(v) for v in as_list(item.get(key)))

    return FirewallRule(str(item.get("name", "")), str(item.get("display_name", "")), str(item.get("action", "")),
                        str(item.get("protocol", "Any")), strings("local_port") or ("Any",),
                        strings("remote_address") or ("Any",), strings("local_address") or ("Any",),
                        str(item.get("profile", "")), str(item.get("service") or "Any"))
