"""Checks of a Windows relay, offline, from the collector's report (docs/facts.md#windows-portproxy).

A port proxy works only when: the IP Helper service runs (and starts at boot), the entry exists
for the same listen address spelling (``*`` and ``0.0.0.0`` are different entries) and target,
it is in the registry (what survives a reboot), its port is outside the ranges Windows reserves,
nothing else holds the port, the listen address is on the host, and an inbound firewall rule
admits the spec's sources - portproxy opens no firewall hole by itself.
"""

from __future__ import annotations

from netaddr import IPSet

from netfwd.doctor.context import DoctorContext
from netfwd.doctor.framework import Outcome, Skip, error, found, warning
from netfwd.dialects.winbase import IPHLPSVC
from netfwd.doctor.winreport import FirewallRule, WindowsReport
from netfwd.firewall.addresses import parse_token, to_cidrs
from netfwd.firewall.model import UNIVERSE
from netfwd.windows import WILDCARD, normalise_address


class WindowsCheck:
    group = "windows"
    name = ""
    doc = ""


def _report(ctx: DoctorContext) -> WindowsReport:
    if ctx.windows is None:
        raise Skip("needs --windows-report FILE")
    return ctx.windows


def _section(report: WindowsReport, value, section: str):
    if value is None:
        why = report.error_for(section)
        raise Skip(f"the report has no {section} section" + (f" (the collector said: {why})" if why else ""))
    return value


def _plan(ctx: DoctorContext):
    from netfwd.dialects.winbase import plan

    spec = ctx.need_spec()
    if spec.relay.os != "windows":
        raise Skip("the spec describes a Linux relay (relay.os: linux)")
    return plan(spec)


class IpHelper(WindowsCheck):
    name = "win-iphlpsvc"
    doc = "the IP Helper service (iphlpsvc), which runs portproxy, is running and starts automatically"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        svc = report.iphlpsvc
        if svc is None:
            why = report.error_for("iphlpsvc")
            if why:
                raise Skip(f"the collector could not read the service: {why}")
            return found([error("the IP Helper service (iphlpsvc) is not installed: port proxies never listen",
                                "install/enable IP Helper (it is part of Windows; check the Services console)")])
        state, mode = str(svc.get("state", "")), str(svc.get("start_mode", ""))
        summary = f"iphlpsvc {state}, start {mode}"
        problems = []
        if state.lower() != "running":
            problems.append(error(f"the IP Helper service is {state}: port proxies are stored but nothing listens "
                                  "(netsh says nothing)", "Start-Service iphlpsvc"))
        if mode.lower() not in ("auto", "automatic"):
            problems.append(warning(f"the IP Helper service starts {mode}: after a reboot no port proxy listens",
                                    "Set-Service iphlpsvc -StartupType Automatic"))
        return found(problems, summary)


class PortProxy(WindowsCheck):
    name = "win-portproxy"
    doc = "each forward has its port proxy (same listen address spelling, same target)"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        entries = _section(report, report.portproxy, "portproxy")
        problems, seen = [], []
        for fwd in _plan(ctx):
            same_port = [e for e in entries if e.listen_port == fwd.listen_port and
                         (e.table is None or e.table.startswith(f"v{fwd.family}to"))]
            exact = [e for e in same_port if e.listen_address == fwd.listen_address]
            want = (normalise_address(fwd.connect_address), fwd.connect_port)
            add = (f"netsh interface portproxy add {fwd.table} listenport={fwd.listen_port} "
                   f"listenaddress={fwd.listen_address} connectaddress={fwd.connect_address} "
                   f"connectport={fwd.connect_port}")
            if exact and (exact[0].connect_address, exact[0].connect_port) == want:
                if exact[0].table not in (None, fwd.table):
                    problems.append(error(f"forward {fwd.name}: the port proxy is in {exact[0].table}, not {fwd.table}",
                                          f"netsh interface portproxy delete {exact[0].table} listenport="
                                          f"{fwd.listen_port} listenaddress={fwd.listen_address}; then {add}"))
                else:
                    seen.append(f"{fwd.name}: {fwd.listen_text()} -> {fwd.target_text()}")
            elif exact:
                got = exact[0]
                problems.append(error(f"forward {fwd.name}: {fwd.listen_text()} proxies to {got.connect_address}:"
                                      f"{got.connect_port}, not {fwd.target_text()}", add.replace(" add ", " set ")))
            elif same_port:
                other = same_port[0]
                problems.append(error(f"forward {fwd.name}: port {fwd.listen_port} is proxied on listen address "
                                      f"{other.listen_address}, not {fwd.listen_address} (netsh keeps them as different "
                                      "entries)", f"netsh interface portproxy delete {other.table or fwd.table} "
                                                  f"listenport={fwd.listen_port} listenaddress={other.listen_address}; "
                                                  f"then {add}"))
            else:
                problems.append(error(f"forward {fwd.name}: no port proxy listens on {fwd.listen_text()}", add))
        return found(problems, "; ".join(seen))


class PortProxyRegistry(WindowsCheck):
    name = "win-portproxy-persisted"
    doc = "each port proxy is in the registry (HKLM\\...\\PortProxy), so it survives a reboot"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        registry = _section(report, report.registry, "registry")
        problems, seen = [], []
        for fwd in _plan(ctx):
            table = {normalise_address(k.rpartition("/")[0]) + "/" + k.rpartition("/")[2]: v
                     for k, v in registry.get(fwd.table, {}).items()}
            key = f"{fwd.listen_address}/{fwd.listen_port}"
            value = table.get(key)
            want = f"{normalise_address(fwd.connect_address)}/{fwd.connect_port}"
            if value is None:
                problems.append(error(f"forward {fwd.name}: no registry value {key} under "
                                      f"HKLM\\SYSTEM\\CurrentControlSet\\Services\\PortProxy\\{fwd.table}\\tcp: it is "
                                      "gone after a reboot", "re-add it with netsh (netsh writes the registry): "
                                                             "netfwd render SPEC --dialect netsh"))
            elif normalise_address(value.rpartition("/")[0]) + "/" + value.rpartition("/")[2] != want:
                problems.append(error(f"forward {fwd.name}: the registry maps {key} to {value}, not {want}: a reboot "
                                      "restores the wrong target", "re-apply the spec (netfwd render SPEC --dialect "
                                                                   "netsh), which replaces the entry"))
            else:
                seen.append(f"{fwd.name}: {fwd.table}\\tcp\\{key}")
        return found(problems, "; ".join(seen))


class ExcludedPorts(WindowsCheck):
    name = "win-excluded-ports"
    doc = "no listen port is inside a TCP port range Windows reserves (Hyper-V, WinNAT)"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        if not report.excluded:
            raise Skip("the report has no excludedportrange sections")
        problems = []
        for fwd in _plan(ctx):
            for reserved in report.excluded.get(fwd.family, []):
                if fwd.listen_port in reserved:
                    problems.append(error(f"forward {fwd.name}: port {fwd.listen_port} is inside the reserved range "
                                          f"{reserved.start}-{reserved.end}: portproxy cannot listen there (silently)",
                                          "choose another listen.port; or free the range (reserve yours first with "
                                          f"netsh int ipv{fwd.family} add excludedportrange protocol=tcp "
                                          f"startport={fwd.listen_port} numberofports=1)"))
                    break
        ranges = sum(len(v) for v in report.excluded.values())
        return found(problems, f"{ranges} reserved range(s); no listen port inside one")


class ListenAddress(WindowsCheck):
    name = "win-listen-address"
    doc = "each forward's listen address is an address of the Windows host (the cloud public-IP trap)"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        addresses = _section(report, report.addresses, "addresses")
        local = {normalise_address(a.split("%")[0]) for _, a in addresses}
        problems, seen = [], []
        for fwd in _plan(ctx):
            if fwd.listen_address == WILDCARD:
                continue
            if fwd.listen_address in local:
                seen.append(fwd.listen_address)
            else:
                problems.append(error(f"forward {fwd.name}: listenaddress {fwd.listen_address} is not an address of "
                                      f"{report.computer or 'the host'}: on a cloud VM the public IP never reaches "
                                      "the NIC, so nothing connects", "listen on the private address "
                                                                      "(Get-NetIPAddress) or on * (omit listen.address)"))
        return found(problems, ", ".join(seen) or "every forward listens on * (all addresses)")


class Listener(WindowsCheck):
    name = "win-listener"
    doc = "the IP Helper service itself listens on each forward's port (nothing else took it)"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        listeners = _section(report, report.listeners, "listeners")
        pid = int((report.iphlpsvc or {}).get("pid") or 0)
        problems, seen = [], []
        for fwd in _plan(ctx):
            on_port = [(a, p) for a, port, p in listeners if port == fwd.listen_port and _covers(a, fwd)]
            others = [(a, p) for a, p in on_port if p != pid]
            if others and pid:
                address, owner = others[0]
                problems.append(error(f"forward {fwd.name}: PID {owner} (not iphlpsvc, PID {pid}) listens on "
                                      f"{address}:{fwd.listen_port}: the port proxy cannot bind the port",
                                      f"Get-Process -Id {owner}; stop or move it, or choose another listen.port"))
            elif not on_port:
                problems.append(error(f"forward {fwd.name}: nothing listens on port {fwd.listen_port}: the port proxy "
                                      "is missing, iphlpsvc is stopped, or it could not bind (see the other checks)",
                                      "Restart-Service iphlpsvc, then netstat -ano | findstr :" + str(fwd.listen_port)))
            else:
                seen.append(f"{fwd.name}: port {fwd.listen_port} (PID {on_port[0][1]})")
        return found(problems, "; ".join(seen))


def _covers(address: str, fwd) -> bool:
    address = normalise_address(address)
    if fwd.listen_address == WILDCARD:
        return True
    return address in (fwd.listen_address, "0.0.0.0", "::")


class FirewallProfiles(WindowsCheck):
    name = "win-firewall-profiles"
    doc = "Windows Firewall is on for every profile (Domain, Private, Public): a profile that is off admits every source"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        profiles = _section(report, report.profiles, "profiles")
        off = [name for name, on in profiles if not on]
        if not off:
            return found([], "on for " + ", ".join(name for name, _ in profiles))
        return found([error(f"Windows Firewall is off for the {', '.join(off)} profile(s): every source reaches the "
                            "forwarded ports there, the whitelist does not hold",
                            "Set-NetFirewallProfile -All -Enabled True (or the group policy that turns it off)")])


class Firewall(WindowsCheck):
    name = "win-firewall"
    doc = "an enabled inbound allow rule admits each forward's sources (and only them) to its port"

    def run(self, ctx: DoctorContext) -> Outcome:
        report = _report(ctx)
        rules = _section(report, report.firewall, "firewall")
        problems, seen = [], []
        for fwd in _plan(ctx):
            universe = UNIVERSE[fwd.family]
            wanted = IPSet(fwd.sources) if fwd.sources is not None else universe
            allowed, blocked, unknown, names, unscoped = IPSet(), IPSet(), [], [], []
            for rule in rules:
                if not _rule_hits(rule, fwd.listen_port) or rule.service.lower() not in ("any", "", IPHLPSVC):
                    continue  # a rule scoped to another service does not apply to portproxy's connections
                remote = _remote(rule.remote_address)
                if remote is None:
                    unknown.append(f"{rule.display_name or rule.name} ({', '.join(rule.remote_address)})")
                    continue
                if rule.action.lower() == "block":
                    blocked |= remote
                elif rule.action.lower() == "allow":
                    allowed |= remote
                    names.append(rule.display_name or rule.name)
                    if rule.service.lower() != IPHLPSVC:
                        unscoped.append(rule.display_name or rule.name)
            admitted = (allowed - blocked) & universe
            create = (f"New-NetFirewallRule -DisplayName 'netfwd {fwd.name}' -Direction Inbound -Action Allow "
                      f"-Service {IPHLPSVC} -Protocol TCP -LocalPort {fwd.listen_port} -RemoteAddress "
                      f"{','.join(fwd.sources) if fwd.sources else 'Any'} -Profile Any")
            missing = wanted - admitted
            if missing:
                note = f" (rules with host-dependent addresses not counted: {', '.join(unknown[:2])})" if unknown else ""
                what = "no enabled inbound rule admits TCP port" if not admitted else "the inbound rules do not admit"
                problems.append(error(f"forward {fwd.name}: {what} {fwd.listen_port} from "
                                      f"{_describe(missing, universe)}: portproxy opens no firewall hole{note}", create))
                continue
            extra = admitted - wanted
            if extra:
                problems.append(warning(f"forward {fwd.name}: the inbound rules ({', '.join(names[:3])}) also admit "
                                        f"{_describe(extra, universe)} to port {fwd.listen_port}, beyond the spec's "
                                        "whitelist", "narrow -RemoteAddress to the spec's sources "
                                                     "(netfwd render SPEC --dialect powershell)"))
                continue
            if unscoped:
                problems.append(warning(f"forward {fwd.name}: the inbound rule(s) {', '.join(unscoped[:3])} admitting "
                                        f"port {fwd.listen_port} are not scoped to the IP Helper service ({IPHLPSVC}): "
                                        "they admit the whitelist to any program that listens on the port",
                                        f"Set-NetFirewallRule -DisplayName '{unscoped[0]}' -Service {IPHLPSVC} (or "
                                        "re-apply: netfwd render SPEC --dialect powershell)"))
                continue
            seen.append(f"{fwd.name}: {', '.join(names[:2])}")
        return found(problems, "; ".join(seen))


def _rule_hits(rule: FirewallRule, port: int) -> bool:
    if rule.protocol.upper() not in ("TCP", "ANY", "6"):
        return False
    for value in rule.local_port:
        if value.lower() == "any":
            return True
        low, _, high = value.partition("-")
        if low.strip().isdigit() and int(low) <= port <= int(high or low):
            return True
    return False


def _remote(values: tuple[str, ...]) -> IPSet | None:
    """Remote addresses as a set; None when a keyword (LocalSubnet, Internet, ...) makes it host-dependent."""
    out = IPSet()
    for value in values:
        for token in filter(None, (t.strip() for t in value.split(","))):
            if token.lower() == "any":
                return UNIVERSE[4] | UNIVERSE[6]
            if token[0].isalpha() and ":" not in token:
                return None
            try:
                version, first, last = parse_token(token, strict=False)
            except ValueError:
                return None
            out.update(to_cidrs(version, first, last))
    return out


def _describe(addresses: IPSet, universe: IPSet) -> str:
    if addresses == universe:
        return "any source"
    cidrs = [str(c) for c in addresses.iter_cidrs()]
    return ", ".join(cidrs[:4]) + (f" and {len(cidrs) - 4} more" if len(cidrs) > 4 else "")


CHECKS = (IpHelper(), PortProxy(), PortProxyRegistry(), ExcludedPorts(), ListenAddress(), Listener(), FirewallProfiles(),
          Firewall())

__all__ = ["CHECKS"]
