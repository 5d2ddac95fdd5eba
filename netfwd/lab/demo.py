"""`netfwd lab demo`: the whole rehearsal in one go - up, apply a rendered spec on the relay, probe
from the client, report, down.

The spec is adapted to the lab, and only in memory: each target becomes the lab's on-prem address
(the real one is unreachable by design) and the lab's allowed client range joins every whitelist,
so the allowed client address must get through and the other one must not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from netfwd.errors import InputError
from netfwd.lab.core import Lab
from netfwd.model import Spec


@dataclass
class Check:
    name: str
    expect: str
    got: str
    ok: bool
    note: str = ""


@dataclass
class DemoReport:
    lab: str
    dialect: str
    spec: str
    addrs: dict
    checks: list[Check] = field(default_factory=list)
    applied: str = ""
    probes: list[dict] = field(default_factory=list)  # `netfwd probe -o json` documents, one per forward

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict:
        return {"lab": self.lab, "dialect": self.dialect, "spec": self.spec, "ok": self.ok,
                "addrs": self.addrs, "checks": [dataclasses.asdict(c) for c in self.checks],
                "probes": self.probes}


def adapt(spec: Spec, lab: Lab) -> Spec:
    """The spec with the lab's on-prem address as every target and the lab's client range allowed."""
    from netaddr import IPAddress, IPNetwork, cidr_merge

    from netfwd.model import Allow, Endpoint

    lab_cidr = IPNetwork(lab.allowed_cidr)
    forwards = []
    for forward in spec.forwards:
        if forward.family != 4:
            continue  # the lab is IPv4-only
        allow = forward.allow
        if allow is not None:
            allow = Allow(allow.regions, (*allow.cidrs, lab_cidr),
                          tuple(cidr_merge([*allow.sources, lab_cidr])))
        forwards.append(dataclasses.replace(forward, to=Endpoint(forward.to.port, IPAddress(lab.addrs.onprem)),
                                            listen=Endpoint(forward.listen.port), allow=allow))
    if not forwards:
        raise InputError("has no IPv4 forward the lab can rehearse", file=spec.origin, field="forwards")
    relay = dataclasses.replace(spec.relay, address=None)
    return dataclasses.replace(spec, relay=relay, forwards=tuple(forwards))


def run_demo(spec_path: str | Path, dialect_name: str = "iptables", keep: bool = False,
             progress: Callable[[str], None] = lambda _: None) -> tuple[DemoReport, Lab | None]:
    """Up, apply, probe, (down). Returns the report and, with keep=True, the still-running lab."""
    from netfwd.dialects import get_dialect
    from netfwd.spec import load_spec

    spec = load_spec(spec_path)
    if spec.relay.os != "linux":
        raise InputError("the lab rehearses Linux relays; this spec is for a windows relay",
                         file=str(spec_path), field="relay.os")
    dialect = get_dialect(dialect_name)
    if dialect.relay_os != "linux":
        raise InputError(f"{dialect_name} is not a Linux dialect", field="--dialect")
    lab = Lab.up(relay_outside_if=spec.relay.interface or "ext0")
    try:
        progress(f"lab {lab.name} is up (relay {lab.addrs.relay_outside}, on-prem {lab.addrs.onprem})")
        report = _rehearse(lab, adapt(spec, lab), dialect, str(spec_path), progress)
    except BaseException:
        lab.down()
        raise
    if not keep:
        lab.down()
        progress(f"lab {lab.name} is down")
        return report, None
    return report, lab


def _rehearse(lab: Lab, spec: Spec, dialect, origin: str, progress: Callable[[str], None]) -> DemoReport:
    a = lab.addrs
    report = DemoReport(lab.name, dialect.name, origin, a.as_dict())
    for port in sorted({f.to.port for f in spec.forwards if f.protocol == "tcp"}):
        lab.start_server("onprem", port, kind="apiserver")
    for port in sorted({f.to.port for f in spec.forwards if f.protocol == "udp"}):
        lab.start_server("onprem", port, udp=True)
    progress("API-server stand-in started on on-prem (certificate without the relay's address)")
    script = dialect.render(spec)
    env = ["env", f"NETFWD_ROOT={lab.workdir / 'root'}", "NETFWD_PERSIST=no", "bash", "-s"]
    if dialect.name == "firewalld":
        lab.start_firewalld()
        done = lab.relay_exec_fw(env, input=script, check=False)
    else:
        done = lab.run("relay", env, input=script, check=False)
    report.applied = done.stderr
    report.checks.append(Check("apply", "exit 0", f"exit {done.returncode}", done.returncode == 0,
                               done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""))
    progress(f"applied the {dialect.name} script on the relay")
    for forward in spec.forwards:
        report.checks += _probe(lab, forward)
        if forward.protocol == "tcp":
            report.checks.append(_netfwd_probe(lab, forward, report))
    return report


def _netfwd_probe(lab: Lab, forward, report: DemoReport) -> Check:
    """What an engineer would run from outside: `netfwd probe` from the client's namespace."""
    import json
    import subprocess
    import sys

    name = f"{forward.name}: netfwd probe from the client"
    a = lab.addrs
    argv = [sys.executable, "-m", "netfwd", "probe", "--netns", lab.ns("client"),
            "--via", f"{a.relay_outside}:{forward.listen.port}", "--target", f"{a.onprem}:{forward.to.port}",
            "--ca", str(lab.ca_file), "--server-name", "kubernetes", "--timeout", "2", "-o", "json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    try:
        document = json.loads(done.stdout)
    except ValueError:
        return Check(name, "reachable", f"exit {done.returncode}", False, done.stderr.strip()[-300:])
    report.probes.append(document)
    stages = "; ".join(f"{st.get('name')} {st.get('status')}" for st in document.get("stages", []))
    verdict = document.get("verdict", f"exit {done.returncode}")
    return Check(name, "reachable", verdict, verdict == "reachable", stages)


def _probe(lab: Lab, forward) -> list[Check]:
    a = lab.addrs
    port, tag = forward.listen.port, f"{forward.name}"
    checks = []
    if forward.protocol == "udp":
        got = lab.connect("client", a.relay_outside, port, source=a.client_allowed, udp=True)
        return [Check(f"{tag}: udp from allowed {a.client_allowed}", "reply", got.reason, got.ok)]
    ok = lab.connect("client", a.relay_outside, port, source=a.client_allowed, read=False)
    checks.append(Check(f"{tag}: tcp from allowed {a.client_allowed}", "open", ok.reason, ok.ok))
    if forward.sources is not None:
        denied = lab.connect("client", a.relay_outside, port, source=a.client_denied, timeout=1.0,
                             read=False)
        forwarded = denied.ok
        checks.append(Check(f"{tag}: tcp from denied {a.client_denied}", "not forwarded",
                            denied.reason, not forwarded,
                            "conn-refused = the relay answered itself: no rule matched this source"))
    version = lab.https_get("client", a.relay_outside, port, "/version", source=a.client_allowed,
                            server_name="kubernetes")
    git = version.json().get("gitVersion") if version.ok and version.status == 200 else None
    checks.append(Check(f"{tag}: GET /version (tls-server-name kubernetes)", "200",
                        f"{version.status or version.reason}", version.status == 200,
                        f"gitVersion {git}" if git else (version.detail or "")))
    by_ip = lab.https_get("client", a.relay_outside, port, "/livez", source=a.client_allowed)
    checks.append(Check(f"{tag}: TLS by relay IP {a.relay_outside}", "cert-verify",
                        by_ip.reason if not by_ip.ok else str(by_ip.status), by_ip.reason == "cert-verify",
                        "expected: the API server's certificate lacks the relay's IP; add it to "
                        "apiServer.certSANs or set tls-server-name in the kubeconfig"))
    peers = [line.split()[1] for pid in _pids(lab, forward.to.port) for line in lab.server_log(pid)
             if line.startswith("https ")]
    checks.append(Check(f"{tag}: source seen by the API server", a.relay_inside if forward.masquerade
                        else a.client_allowed, ", ".join(sorted(set(peers))) or "nothing",
                        bool(peers) and set(peers) == {a.relay_inside if forward.masquerade else a.client_allowed}))
    return checks


def _pids(lab: Lab, port: int) -> list[int]:
    return [p.pid for p in lab.processes() if p.node == "onprem" and p.port == port]
