"""Doctor (and `audit check`) reports as a table for people, one JSON document, or JUnit XML for CI."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from netfwd.doctor.framework import Report, Result
from netfwd.errors import visible as _v  # findings quote hostile input: no raw ESC/NUL/bidi out

MARK = {"ok": "[green]ok[/]", "warning": "[yellow]warning[/]", "error": "[red]error[/]",
        "skipped": "[dim]skipped[/]"}


def to_dict(report: Report, title: str = "netfwd doctor") -> dict:
    return {
        "title": title,
        "verdict": "fail" if report.exit_code else "pass",
        "exit_code": report.exit_code,
        "counts": report.counts(),
        "ignored": list(report.ignored),
        "seconds": round(report.seconds, 3),
        "checks": [_result_dict(r) for r in report.results],
    }


def _result_dict(result: Result) -> dict:
    return {"name": result.name, "group": result.group, "status": result.status, "summary": result.summary,
            "seconds": round(result.seconds, 4),
            "findings": [{"severity": f.severity, "message": f.message, "fix": f.fix, "ignored": f.ignored}
                         for f in result.findings]}


def to_json(report: Report, title: str = "netfwd doctor") -> str:
    return json.dumps(to_dict(report, title), indent=2) + "\n"


def to_junit(report: Report, title: str = "netfwd doctor") -> str:
    """One test case per check: errors are <failure>s, skips <skipped>, warnings go to <system-out>."""
    counts = report.counts()
    suites = ET.Element("testsuites", name=title, tests=str(len(report.results)),
                        failures=str(counts["error"]), skipped=str(counts["skipped"]),
                        time=f"{report.seconds:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=title, tests=str(len(report.results)),
                          failures=str(counts["error"]), skipped=str(counts["skipped"]),
                          time=f"{report.seconds:.3f}")
    for result in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"{title.replace(' ', '.')}.{result.group}",
                             name=_v(result.name), time=f"{result.seconds:.4f}")
        if result.status == "error":
            first = result.errors[0]
            failure = ET.SubElement(case, "failure", type="error", message=_v(first.message))
            failure.text = "\n".join(f"{f.severity}: {_v(f.message)}\nfix: {_v(f.fix)}" for f in result.findings)
        elif result.status == "skipped":
            ET.SubElement(case, "skipped", message=_v(result.summary))
        lines = ([_v(result.summary)] if result.summary and result.status != "skipped" else []) + [
            f"{f.severity}{' (ignored)' if f.ignored else ''}: {_v(f.message)} -- fix: {_v(f.fix)}"
            for f in result.findings if result.status != "error"]
        if lines:
            ET.SubElement(case, "system-out").text = "\n".join(lines)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def print_table(report: Report, title: str = "netfwd doctor", verbose: bool = False) -> None:
    """A table on stdout: one row per check; each finding below it with its fix."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(_v(title)), show_lines=False, expand=False)
    table.add_column("check", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("details", overflow="fold")
    for result in report.results:
        lines = []
        if result.summary and (verbose or not result.findings or result.status == "skipped"):
            lines.append(escape(_v(result.summary)))
        for f in result.findings:
            tag = "[red]error[/]" if f.severity == "error" else \
                ("[yellow]warning (ignored error)[/]" if f.ignored else "[yellow]warning[/]")
            lines.append(f"{tag}: {escape(_v(f.message))}\n  [bold]fix:[/] {escape(_v(f.fix))}")
        table.add_row(escape(_v(result.name)), MARK[result.status], "\n".join(lines))
    console = Console()
    console.print(table)
    counts = report.counts()
    verdict = "[red]FAIL[/]" if report.exit_code else "[green]PASS[/]"
    console.print(f"{verdict}: {counts['error']} error(s), {counts['warning']} warning(s), "
                  f"{counts['ok']} ok, {counts['skipped']} skipped in {report.seconds:.2f} s"
                  + (f"; ignored: {', '.join(report.ignored)}" if report.ignored else ""))
