"""Machine-readable reports: one JSON document, or JUnit XML for CI (one test case per group x region)."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from netfwd.whitelist.model import Finding
from netfwd.whitelist.verify import Report


def finding_dict(finding: Finding) -> dict:
    """Built by hand: dataclasses.asdict would deep-copy 100,000 `unused` entries one by one."""
    origin = finding.origin
    return {"code": finding.code, "severity": finding.severity, "message": finding.message,
            "origin": None if origin is None else {"file": origin.file, "line": origin.line, "text": origin.text},
            "cidrs": list(finding.cidrs), "count": finding.count}


def to_json(report: Report, strict: bool = False) -> dict:
    return {
        "source": report.source,
        "format": report.format,
        "regions": list(report.regions),
        "covered": report.covered,
        "exit_code": report.exit_code(strict),
        "local_networks": list(report.local_networks),
        "groups": [{
            "label": g.label, "protocol": g.protocol, "port": g.port, "entries": g.entries, "covered": g.covered,
            "regions": [{"region": r.region, "name": r.name, "status": r.status, "required": list(r.required),
                         "missing": list(r.missing), "missing_addresses": r.missing_addresses}
                        for r in g.regions],
            "findings": [finding_dict(f) for f in g.findings],
        } for g in report.groups],
        "findings": [finding_dict(f) for f in report.findings],
    }


def to_junit(report: Report) -> str:
    """Failures are coverage gaps; findings go to <system-out> of their group's test cases."""
    cases = [(g, r) for g in report.groups for r in g.regions]
    failures = sum(1 for _, r in cases if r.status != "covered")
    suites = ET.Element("testsuites", name="netfwd whitelist verify", tests=str(len(cases)), failures=str(failures))
    for group in report.groups:
        suite = ET.SubElement(suites, "testsuite", name=f"{report.source} [{group.label}]",
                              tests=str(len(group.regions)),
                              failures=str(sum(r.status != "covered" for r in group.regions)))
        for region in group.regions:
            case = ET.SubElement(suite, "testcase", classname=f"whitelist.{group.label}", name=region.region)
            if region.status != "covered":
                failure = ET.SubElement(case, "failure", type=region.status,
                                        message=f"{region.region} is {region.status}: missing "
                                                f"{', '.join(region.missing)}")
                failure.text = "\n".join(region.missing)
        out = [f"{f.code}: {f.message}" + (f" [{f.origin}]" if f.origin else "")
               for f in list(report.findings) + list(group.findings)]
        if out:
            ET.SubElement(suite, "system-out").text = "\n".join(out)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
