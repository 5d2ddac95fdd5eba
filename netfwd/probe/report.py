"""Three renderings of the same results: a JSON document, a table for people, JUnit XML for CI.

The JSON document is the contract (docs/probe.md): `verdict`, `stages`, `findings` at the top
(for one endpoint: its own; for several: per-stage tallies and every finding, each naming its
endpoint), `probes` with the full detail per endpoint, and the options that shaped the probe.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Sequence

from netfwd import __version__
from netfwd.probe.model import STAGE_ORDER, Options, ProbeResult

VERDICT_ORDER = ("unreachable", "impaired", "reachable")


def overall(results: Sequence[ProbeResult]) -> str:
    """The worst verdict of all."""
    return min((r.verdict for r in results), key=VERDICT_ORDER.index, default="unreachable")


def all_ok(results: Sequence[ProbeResult], options: Options) -> bool:
    return bool(results) and all(r.ok(options.strict) for r in results)


def document(results: Sequence[ProbeResult], options: Options, elapsed_s: float) -> dict[str, Any]:
    verdicts: Counter[str] = Counter(r.verdict for r in results)
    doc: dict[str, Any] = {
        "tool": "netfwd probe", "version": __version__,
        "verdict": overall(results),
        "exit_code": 0 if all_ok(results, options) else 1,
        "options": options.as_dict(),
        "elapsed_ms": round(elapsed_s * 1000, 3),
        "summary": {"endpoints": len(results), **{v: verdicts.get(v, 0) for v in reversed(VERDICT_ORDER)}},
    }
    if len(results) == 1:
        single = results[0].as_dict()
        doc["stages"], doc["findings"] = single["stages"], single["findings"]
    else:
        doc["stages"] = _tallies(results)
        doc["findings"] = [dict(f.as_dict(), endpoint=r.endpoint.label) for r in results for f in r.findings]
    doc["probes"] = [r.as_dict() for r in results]
    return doc


def _tallies(results: Sequence[ProbeResult]) -> list[dict[str, Any]]:
    counts: dict[str, Counter] = {}
    for result in results:
        for stage in result.stages:
            counts.setdefault(stage.name, Counter())[stage.status] += 1
    return [{"name": name, "ok": counts[name]["ok"], "fail": counts[name]["fail"],
             "skipped": counts[name]["skipped"]} for name in STAGE_ORDER if name in counts]


# -- table -------------------------------------------------------------------------------------------

def summary_line(stage) -> str:
    """The one-line gist of a stage for the table."""
    d = stage.detail
    if stage.name == "resolve":
        return d.get("address", d.get("error", ""))
    if stage.name == "tcp":
        parts = [d.get("state", "")]
        if "rtt_ms" in d:
            r = d["rtt_ms"]
            parts.append(f"rtt {r['min']}/{r['avg']}/{r['max']}/{r['stddev']} ms")
        parts.append(f"loss {d.get('loss_pct', 0)}% of {d.get('sent', 0)}")
        if "icmp" in d:
            parts.append(f"{d['icmp']['kind']} from {d['icmp']['from']}")
        return ", ".join(p for p in parts if p)
    if stage.name == "trace":
        path = d.get("path", {})
        hops = " ".join(f"{h['ttl']}:{h['reply']}" + (f"@{h['from']}" if h.get("from") else "") for h in d.get("hops", []))
        route = d.get("route")
        via = f"; route {route.get('interface')} via {route.get('gateway') or 'on-link'} src {route.get('source')}" \
            if route and "error" not in route else ""
        return f"{d.get('method')}: {path.get('note', '')}; hops {hops}{via}"
    if stage.name == "tls":
        if stage.status != "ok":
            return d.get("error", "")
        sans = ", ".join(d.get("sans", []))
        chain = {True: "chain verified", False: "chain NOT verified", None: ""}.get(d.get("chain_verified"), "")
        return (f"{d.get('version')} {d.get('cipher')}; {d.get('subject', '')}; SANs: {sans}; "
                f"dialled address in SANs: {'yes' if d.get('dialled_in_sans') else 'no'}; "
                f"expires {str(d.get('not_after', ''))[:10]} ({d.get('days_left')} d)"
                + (f"; {chain}" if chain else ""))
    if stage.name == "http":
        codes = ", ".join(f"{p} {a.get('status', a.get('error'))}" for p, a in d.get("paths", {}).items())
        return codes + (f"; gitVersion {d['gitVersion']}" if d.get("gitVersion") else "")
    if stage.name == "relay":
        parts = [f"ip_forward {'on' if d.get('ip_forward') else 'off' if d.get('ip_forward') is False else '?'}"]
        if "direct" in d:
            parts.append(f"direct {d['direct']['target']}: {d['direct']['reason']}")
        if "conntrack" in d:
            c = d["conntrack"]
            parts.append(f"conntrack {c['entries']} entr(ies), {c['unreplied']} unreplied, {c['assured']} assured")
        elif d.get("conntrack_error"):
            parts.append(f"conntrack: {d['conntrack_error']}")
        return "; ".join(parts)
    return ""


def render_table(results: Sequence[ProbeResult], options: Options, console) -> None:
    from rich.table import Table

    if len(results) == 1:
        result = results[0]
        ep = result.endpoint
        title = f"netfwd probe {ep.dial}" + (f" -> {ep.target_text}" if ep.target_text else "") + \
            f": {result.verdict}"
        table = Table(title=title, title_justify="left")
        for column in ("stage", "status", "reason", "ms", "detail"):
            table.add_column(column, overflow="fold")
        for stage in result.stages:
            table.add_row(stage.name, _status(stage.status), stage.reason, f"{stage.elapsed_ms:.1f}",
                          summary_line(stage))
        console.print(table)
    else:
        table = Table(title=f"netfwd probe: {len(results)} endpoints, {overall(results)}", title_justify="left")
        rows = [_row(r) for r in results]
        columns = ("endpoint", "dial", "target", "verdict", "tcp", "rtt ms", "tls", "http", "relay", "findings")
        keep = [i for i, _ in enumerate(columns) if any(row[i] for row in rows)]  # no empty columns
        for i in keep:
            table.add_column(columns[i], overflow="fold")
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        console.print(table)
    findings = [(r, f) for r in results for f in r.findings]
    for result, finding in findings:
        where = f"{result.endpoint.label}: " if len(results) > 1 else ""
        console.print(f"[bold]{finding.severity}[/bold] {where}[bold]{finding.code}[/bold]: {finding.message}",
                      highlight=False)
        console.print(f"    fix: {finding.fix}", highlight=False, markup=False)
    if not findings:
        console.print("no findings", highlight=False)


def _row(result: ProbeResult) -> tuple[str, ...]:
    tcp, tls, http, relay = (result.stage(n) for n in ("tcp", "tls", "http", "relay"))
    rtt = tcp.detail.get("rtt_ms", {}).get("avg", "") if tcp else ""
    return (result.endpoint.name or "", result.endpoint.dial, result.endpoint.target_text or "", result.verdict,
            tcp.reason if tcp else "", str(rtt), tls.reason if tls else "",
            (http.detail.get("gitVersion") or http.reason) if http else "", relay.reason if relay else "",
            " ".join(f.code for f in result.findings))


def _status(status: str) -> str:
    return {"ok": "[green]ok[/green]", "fail": "[red]fail[/red]"}.get(status, status)


# -- JUnit -------------------------------------------------------------------------------------------

def render_junit(results: Sequence[ProbeResult], options: Options, elapsed_s: float) -> str:
    """One <testsuite> per endpoint, one <testcase> per stage; findings as failures of a
    `diagnosis` case (errors, and warnings under --strict)."""
    from xml.etree import ElementTree as ET

    suites = ET.Element("testsuites", name="netfwd probe", time=f"{elapsed_s:.3f}")
    total_fail = 0
    for result in results:
        suite = ET.SubElement(suites, "testsuite", name=f"probe {result.endpoint.label}",
                              time=f"{result.elapsed_ms / 1000:.3f}")
        props = ET.SubElement(suite, "properties")
        for key, value in (("dial", result.endpoint.dial), ("target", result.endpoint.target_text or ""),
                           ("verdict", result.verdict), *((k, str(v)) for k, v in options.as_dict().items())):
            ET.SubElement(props, "property", name=key, value=value)
        failures = skipped = 0
        cases = [(s.name, s.status, s.reason, s.elapsed_ms, summary_line(s)) for s in result.stages]
        blocking = [f for f in result.findings
                    if f.severity == "error" or (options.strict and f.severity == "warning")]
        cases.append(("diagnosis", "fail" if blocking else "ok", ", ".join(f.code for f in blocking) or "ok", 0.0,
                      "\n".join(f"{f.severity} {f.code}: {f.message}\nfix: {f.fix}" for f in result.findings)))
        for name, status, reason, ms, text in cases:
            case = ET.SubElement(suite, "testcase", classname=f"netfwd.probe.{result.endpoint.label}", name=name,
                                 time=f"{ms / 1000:.3f}")
            if status == "fail":
                failures += 1
                ET.SubElement(case, "failure", message=reason, type=reason).text = text
            elif status == "skipped":
                skipped += 1
                ET.SubElement(case, "skipped", message=reason)
            elif text:
                ET.SubElement(case, "system-out").text = text
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(failures))
        suite.set("errors", "0")
        suite.set("skipped", str(skipped))
        total_fail += failures
    suites.set("tests", str(sum(int(s.get("tests", 0)) for s in suites)))
    suites.set("failures", str(total_fail))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
