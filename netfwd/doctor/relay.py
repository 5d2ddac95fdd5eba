"""Checks of a Linux relay: the kernel, the firewall around netfwd's rules, and each forward's path.

Every check only reads. Each one looks at one thing, names it stably (the `--ignore` key and the
docs/doctor.md heading) and, for each problem, says the one command or edit that fixes it.
"""

from __future__ import annotations

import re

from netaddr import IPAddress, IPNetwork

SYSCTL_FILE = "etc/sysctl.d/90-ip-forward.conf"  # suggested by hand-fix hints (netfwd writes one per cluster)
from netfwd.doctor import firewall as fwa
from netfwd.doctor.context import DoctorContext
from netfwd.listeners import serves
from netfwd.doctor.framework import Finding, Outcome, Skip, error, found, passed, warning
from netfwd.model import Forward

RP_NAMES = {0: "off", 1: "strict", 2: "loose"}
RA_FILE = "etc/sysctl.d/60-accept-ra.conf"  # a file of its own: netfwd rewrites its sysctl.d file
SAMPLE_SOURCES = 8  # route lookups per forward for rp_filter (one per whitelisted CIDR, at most)


class RelayCheck:
    group = "relay"
    name = ""
    doc = ""


def _forwards(ctx: DoctorContext) -> tuple[Forward, ...]:
    spec = ctx.need_spec()
    if spec.relay.os != "linux":
        raise Skip("the spec describes a Windows relay (use --windows-report)")
    return spec.forwards


# -- kernel --------------------------------------------------------------------------------------

def _forwarding_keys(ctx: DoctorContext) -> list[tuple[str, tuple[str, ...]]]:
    """(label, sysctl aliases) for each forwarding setting the spec needs."""
    keys: list[tuple[str, tuple[str, ...]]] = [("net.ipv4.ip_forward", ("net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"))]
    if ctx.spec is not None and any(f.family == 6 for f in ctx.spec.forwards):
        keys.append(("net.ipv6.conf.all.forwarding", ("net.ipv6.conf.all.forwarding",)))
    return keys


class IpForward(RelayCheck):
    name = "ip-forward"
    doc = "the kernel forwards packets now (net.ipv4.ip_forward = 1; IPv6 forwarding for IPv6 forwards)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        problems, seen = [], []
        for label, _aliases in _forwarding_keys(ctx):
            value = relay.sysctl(label)
            seen.append(f"{label} = {value}")
            if value != "1":
                problems.append(error(f"{label} is {value} ({relay.where}): DNATed packets are dropped, "
                                      "not forwarded", f"sysctl -w {label}=1 (and persist it: see "
                                                       "ip-forward-persisted)"))
        return found(problems, ", ".join(seen))


class IpForwardPersisted(RelayCheck):
    name = "ip-forward-persisted"
    doc = "forwarding stays on after a reboot (a sysctl.d entry, not only `echo 1 > /proc/...`)"

    def run(self, ctx: DoctorContext) -> Outcome:
        from netfwd.doctor.sysctlconf import persisted

        relay = ctx.need_relay()
        problems, seen = [], []
        for label, aliases in _forwarding_keys(ctx):
            setting = persisted(relay.root, aliases)
            if setting is None:
                problems.append(error(f"{label} is not set in any sysctl.d file under {relay.root}: forwarding "
                                      "stops at the next reboot", f"echo '{label} = 1' > /{SYSCTL_FILE} "
                                                                  f"&& sysctl -p /{SYSCTL_FILE}"))
            elif setting.value != "1":
                problems.append(error(f"{setting.file}:{setting.line} sets {label} = {setting.value}: "
                                      "forwarding is off after a reboot",
                                      f"set {label} = 1 in {setting.file} (or remove that line)"))
            else:
                seen.append(f"{label} = 1 in {setting.file}:{setting.line}")
        return found(problems, "; ".join(seen))


class AcceptRa(RelayCheck):
    name = "accept-ra"
    doc = "with IPv6 forwarding on, an interface whose default route came from router advertisements keeps it"

    def run(self, ctx: DoctorContext) -> Outcome:
        from netfwd.doctor.sysctlconf import persisted

        relay = ctx.need_relay()
        conf = relay.ipv6_conf
        if not conf:
            raise Skip(f"IPv6 is off in {relay.where} (no net.ipv6.conf)")
        interfaces = relay.ra_default_interfaces
        if not interfaces:
            return passed("no IPv6 default route learned from router advertisements (proto ra)")
        problems, seen = [], []
        forwarding_at_boot = persisted(relay.root, ("net.ipv6.conf.all.forwarding",))
        for name in interfaces:
            values = conf.get(name, {})
            accept_ra = values.get("accept_ra")
            forwarding = [key for key, value in (("net.ipv6.conf.all.forwarding", conf.get("all", {}).get("forwarding")),
                                                 (f"net.ipv6.conf.{name}.forwarding", values.get("forwarding")))
                          if value == "1"]
            seen.append(f"{name}: accept_ra = {accept_ra}, forwarding = {values.get('forwarding')}")
            key = f"net/ipv6/conf/{name}/accept_ra" if "." in name else f"net.ipv6.conf.{name}.accept_ra"
            fix = f"sysctl -w {key}=2, and persist it: echo '{key} = 2' > /{RA_FILE}"
            if accept_ra == "1" and forwarding:
                problems.append(error(f"{name} has an IPv6 default route learned from router advertisements, "
                                      f"accept_ra = 1 and {forwarding[0]} = 1: a forwarding interface ignores "
                                      "RAs unless accept_ra is 2, so the route is lost when it expires", fix))
            elif accept_ra == "2" and forwarding_at_boot is not None and forwarding_at_boot.value == "1":
                kept = persisted(relay.root, (key, "net.ipv6.conf.default.accept_ra"))
                if kept is None or kept.value != "2":
                    problems.append(warning(f"{name}: accept_ra = 2 now, but no sysctl.d file under {relay.root} "
                                            f"keeps it while {forwarding_at_boot.file}:{forwarding_at_boot.line} "
                                            "turns IPv6 forwarding on at boot: after a reboot the RA-learned "
                                            "default route is lost when it expires", fix))
        return found(problems, "; ".join(seen))


class RpFilter(RelayCheck):
    name = "rp-filter"
    doc = "reverse-path filtering does not drop clients whose replies leave by another interface"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        forwards = _forwards(ctx)
        values = relay.rp_filter
        if not values:
            raise Skip("cannot read net.ipv4.conf.*.rp_filter")
        problems, seen = [], {}
        for forward in forwards:
            if forward.family != 4:
                continue  # rp_filter is IPv4 only
            ingress = ctx.ingress(forward)
            if ingress is None:
                continue
            mode = max(values.get("all", 0), values.get(ingress, 0))
            seen[ingress] = mode
            if mode != 1:
                continue
            for source, route in self._return_routes(ctx, forward):
                if route.problem or route.interface == ingress:
                    continue
                problems.append(error(
                    f"forward {forward.name}: rp_filter is strict on {ingress} (max of all="
                    f"{values.get('all', 0)} and {ingress}={values.get(ingress, 0)}), but replies to {source} "
                    f"leave by {route.interface}: the kernel drops the clients' packets as spoofed",
                    f"sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.{ingress}.rp_filter=2 (loose), "
                    f"or route {source} back via {ingress}"))
                break
        summary = ", ".join(f"{name}: {RP_NAMES.get(mode, mode)}" for name, mode in seen.items())
        return found(problems, summary or "no IPv4 forward with a known ingress interface")

    @staticmethod
    def _return_routes(ctx: DoctorContext, forward: Forward):
        """Routes back to the clients: one address per whitelisted CIDR, or the default route."""
        relay = ctx.need_relay()
        if forward.sources is None:
            interface = relay.default_interface
            if interface is not None:
                from netfwd.relayfacts import Route

                yield "clients (default route)", Route("0.0.0.0/0", interface)
            return
        for network in list(forward.sources)[:SAMPLE_SOURCES]:
            net = IPNetwork(network)
            host = IPAddress(net.first + 1 if net.size > 2 else net.first, net.version)
            yield str(network), relay.route(host)


# -- the firewall around netfwd ------------------------------------------------------------------

class IptablesVersion(RelayCheck):
    name = "iptables-version"
    doc = "the iptables command is not 1.8.1-1.8.3 on nf_tables (their `-C` check is broken)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        version = relay.iptables_version
        if version is None:
            raise Skip("iptables is not installed")
        text, variant = version
        numbers = tuple(int(n) for n in text.split(".")[:3])
        summary = f"iptables v{text} ({variant})"
        if variant == "nf_tables" and (1, 8, 1) <= numbers <= (1, 8, 3):
            return found([error(f"{summary}: `iptables -C` gives wrong answers on nf_tables in 1.8.1-1.8.3, so "
                                "check-then-insert scripts add duplicate rules", "upgrade iptables to 1.8.4 or "
                                "later, or use the iptables-restore or nft dialect (no -C)")], summary)
        if numbers < (1, 6, 2):
            return found([warning(f"{summary}: iptables-restore has no -w (xtables lock) before 1.6.2, so a "
                                  "concurrent firewall change can fail the apply (netfwd then runs it without "
                                  "the wait, docs/compat.md)", "retry a failed apply; or upgrade iptables")], summary)
        return passed(summary)


class IptablesBackends(RelayCheck):
    name = "iptables-backends"
    doc = "rules live in one backend: not both iptables-legacy and nf_tables"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        legacy = [v for v, text in relay.saves.get("legacy", {}).items() if _holds_rules(text)]
        nft = [v for v, text in relay.saves.get("nft", {}).items() if _holds_rules(text)]
        compat = relay.compat_tables
        native = sorted({f"{r['rule'].get('family')} {r['rule'].get('table')}" for r in relay.nft_objects or []
                         if "rule" in r and (r["rule"].get("family"), r["rule"].get("table")) not in compat})
        holders = (["iptables-legacy"] if legacy else []) + (["iptables-nft"] if nft else []) + \
            [f"nft table {t}" for t in native]
        summary = f"rules in: {', '.join(holders)}" if holders else "no rules in any backend"
        if legacy and (nft or native):
            return found([error(f"both iptables-legacy and nf_tables hold rules ({', '.join(holders)}): the kernel "
                                "runs both, while each tool shows only its own half",
                                "move the legacy rules to nf_tables (iptables-legacy-save | iptables-nft-restore, "
                                "then flush legacy), or keep only legacy; then apply netfwd with that backend")],
                         summary)
        return passed(summary)


def _holds_rules(save_text: str) -> bool:
    return any(line.startswith("-A ") or (line.startswith(":") and line.split()[1:2] not in (["ACCEPT"], ["-"]))
               for line in save_text.splitlines())


class Firewalld(RelayCheck):
    name = "firewalld"
    doc = "with firewalld running, netfwd has no raw iptables/nft rules (its reload drops them)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        pids = relay.processes_named("firewalld")
        if not pids:
            return passed("firewalld is not running")
        raw = _netfwd_raw_rules(relay)
        summary = f"firewalld is running (PID {', '.join(map(str, pids))})"
        if raw:
            return found([error(f"{summary} and netfwd's raw rules are in {', '.join(raw)}: `firewall-cmd --reload` "
                                "(or a firewalld restart) can drop them", "netfwd remove, then "
                                "`netfwd render SPEC --dialect firewalld` (or apply with the firewalld backend)")],
                         summary)
        return passed(f"{summary}, and netfwd has no raw rules here: make the forwards with the firewalld "
                      "dialect/backend (raw iptables/nft rules do not survive its reloads)")


def _netfwd_raw_rules(relay) -> list[str]:
    where = [f"iptables-{backend}" for backend, texts in relay.saves.items()
             if any(":NETFWD-" in text for text in texts.values())]
    tables = {o["table"].get("name", "") for o in relay.nft_objects or [] if "table" in o}
    where += [f"nft table {name}" for name in sorted(tables) if name == "netfwd" or name.startswith("netfwd-")]
    return where


class Docker(RelayCheck):
    name = "docker"
    doc = "Docker's FORWARD DROP policy is accounted for (DOCKER-USER)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        chains = {line.split()[0][1:] for texts in relay.saves.values() for text in texts.values()
                  for line in text.splitlines() if line.startswith(":DOCKER")}
        pids = relay.processes_named("dockerd")
        if not chains and not pids:
            return passed("Docker is not present")
        what = "Docker is present (" + ", ".join(
            ([f"dockerd PID {pids[0]}"] if pids else []) + sorted(chains)[:4]) + ")"
        findings = [warning(f"{what}: it sets the FORWARD policy to DROP and puts its own chains first again "
                            "when it restarts", "keep forward accepts ahead of Docker's: netfwd's jump is inserted "
                                                "at the top of FORWARD; put any extra accepts in DOCKER-USER")]
        if pids and "DOCKER-USER" not in chains:
            findings.append(warning(f"{what} without a DOCKER-USER chain (Docker before 17.06): nothing keeps "
                                    "your FORWARD rules ahead of Docker's", "upgrade Docker, or re-apply netfwd "
                                                                            "after every Docker restart"))
        return found(findings, what)


# -- each forward ----------------------------------------------------------------------------------

class RelayInterface(RelayCheck):
    name = "relay-interface"
    doc = "the spec's relay.interface and relay.address exist on the relay"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay, spec = ctx.need_relay(), ctx.need_spec()
        problems, seen = [], []
        if spec.relay.interface:
            if spec.relay.interface not in relay.interfaces:
                problems.append(error(f"relay.interface {spec.relay.interface} does not exist in {relay.where} "
                                      f"(interfaces: {', '.join(sorted(relay.interfaces))}): rules matching it "
                                      "never match", "set relay.interface to the interface clients arrive on "
                                                     "(ip -br link), or omit it"))
            else:
                seen.append(f"interface {spec.relay.interface}")
        if spec.relay.address is not None:
            if spec.relay.address not in relay.local_addresses:
                problems.append(_not_local("relay.address", spec.relay.address, relay))
            else:
                seen.append(f"address {spec.relay.address}")
        return found(problems, ", ".join(seen) or "the spec names no relay interface or address")


def _not_local(field: str, address: IPAddress, relay) -> Finding:
    return error(f"{field} {address} is on no interface of {relay.where}: on a cloud VM the public IP is "
                 "NATed by the cloud fabric and never reaches the NIC, so a rule or listener on it never matches",
                 f"use the private address of the interface (ip -br addr), or omit {field} and match the port only")


class ListenAddress(RelayCheck):
    name = "listen-address"
    doc = "each forward's listen address is on an interface (the cloud public-IP trap)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        problems, seen = [], []
        for forward in _forwards(ctx):
            if forward.listen.address is None:
                continue
            if forward.listen.address in relay.local_addresses:
                seen.append(f"{forward.listen.address} on {relay.interface_of(forward.listen.address)}")
            else:
                problems.append(_not_local(f"forward {forward.name}: listen.address", forward.listen.address, relay))
        return found(problems, ", ".join(seen) or "no forward names a listen address (port match only)")


class ListenPort(RelayCheck):
    name = "listen-port"
    doc = "no local process already listens on a forward's port"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        problems = []
        for forward in _forwards(ctx):
            for sock in relay.sockets:
                if sock.protocol != forward.protocol or sock.port != forward.listen.port:
                    continue
                if not serves(sock, forward.listen.address, forward.family, forward.local):
                    continue
                owner = relay.socket_owner(sock.inode) or "a process"
                shown = f"[{sock.address}]" if sock.address.version == 6 else str(sock.address)
                problems.append((warning if forward.listen.takeover else error)(
                    f"forward {forward.name}: {owner} already listens on {shown}:{sock.port}/{sock.protocol}: "
                    "the DNAT takes its remote clients, and while the forward is missing clients reach that "
                    "process instead of the API server",
                    f"choose another listen.port for {forward.name}, or stop/move {owner}"))
                break
        return found(problems, "no local listener on any forward's port")


class TargetRoute(RelayCheck):
    name = "target-route"
    doc = "the relay has a route to each forward's target, and which interface it leaves by"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        problems, seen = [], []
        for forward in _forwards(ctx):
            route = relay.route(forward.to.address)
            if route.problem:
                problems.append(error(f"forward {forward.name}: no usable route to {forward.to.address} "
                                      f"({route.problem}): forwarded packets are dropped",
                                      f"add a route to {forward.to.address} (VPN/tunnel or gateway): "
                                      f"ip route add {forward.to.address}/32 via GATEWAY"))
            elif route.interface == "lo" or forward.to.address in relay.local_addresses:
                problems.append(error(f"forward {forward.name}: {forward.to.address} is the relay itself",
                                      "point to.address at the on-prem API server"))
            else:
                seen.append(f"{forward.name}: {route}")
        return found(problems, "; ".join(seen))


def _needs_rules(ctx: DoctorContext):
    relay = ctx.need_relay()
    if not relay.saves and relay.nft_objects is None:
        raise Skip("cannot read the firewall: neither iptables-save nor `nft list ruleset` answered "
                   "(installed? root?)")
    return ctx.firewall


class Dnat(RelayCheck):
    name = "dnat"
    doc = "a DNAT sends relay:listen-port to the target, for every allowed source"

    def run(self, ctx: DoctorContext) -> Outcome:
        fw = _needs_rules(ctx)
        problems, seen = [], []
        for forward in _forwards(ctx):
            result = fwa.dnat(fw, forward, ctx.relay_addresses, ctx.ingress(forward))
            total = fwa.sources_of(forward)
            for where, addresses in result.elsewhere:
                problems.append(error(f"forward {forward.name}: relay port {forward.listen.port} is DNATed to "
                                      f"{where}, not {forward.to}, for {fwa.describe(addresses, total)}", "re-apply the spec (netfwd apply / render) so the forward "
                                                           "points at its target"))
            if result.to_target == total:
                seen.append(f"{forward.name}: {forward.listen.port} -> {forward.to}")
                continue
            missing = total - result.to_target
            unsure = " (some rules could not be evaluated: " + "; ".join(result.notes[:2]) + ")" if result.notes else ""
            problems.append(error(f"forward {forward.name}: relay port {forward.listen.port} is not DNATed to "
                                  f"{forward.to} for {fwa.describe(missing, total)}{unsure}",
                                  "apply the spec: netfwd apply SPEC (or run the script from "
                                  "`netfwd render SPEC --dialect iptables-restore`)"))
        return found(problems, "; ".join(seen))


class ForwardChain(RelayCheck):
    name = "forward-chain"
    doc = "no FORWARD policy DROP or trailing REJECT (iptables or nft, any table) blocks a forward"

    def run(self, ctx: DoctorContext) -> Outcome:
        fw = _needs_rules(ctx)
        problems, seen = [], []
        for forward in _forwards(ctx):
            result = fwa.forward_hook(fw, forward, ctx.relay_addresses, ctx.ingress(forward), ctx.egress(forward))
            if result.accepted == result.total:
                seen.append(f"{forward.name}: accepted")
                continue
            missing = result.total - result.accepted
            what = f"forward {forward.name}: new connections to {forward.to} from {fwa.describe(missing, result.total)}"
            if result.notes and not result.blockers:
                problems.append(warning(f"{what} may be dropped at the forward hook; cannot tell: "
                                        + "; ".join(result.notes[:2]),
                                        "check these rules by hand (iptables-save; nft list ruleset)"))
                continue
            by = "; ".join(result.blockers[:3]) or "the forward hook's rules"
            problems.append(error(f"{what} are dropped at the forward hook by {by}",
                                  f"accept them first: iptables -I FORWARD 1 -d {forward.to.address} -p "
                                  f"{forward.protocol} --dport {forward.to.port} -m conntrack --ctstate DNAT "
                                  "-j ACCEPT (netfwd apply does this; with Docker use DOCKER-USER; an nft table's "
                                  "own forward chain needs its own accept)"))
        return found(problems, "; ".join(seen))


class Masquerade(RelayCheck):
    name = "masquerade"
    doc = "each forward is masqueraded, so the target's replies come back through the relay"

    def run(self, ctx: DoctorContext) -> Outcome:
        fw = _needs_rules(ctx)
        problems, seen = [], []
        for forward in _forwards(ctx):
            if not forward.masquerade:
                seen.append(f"{forward.name}: not wanted (the spec says the target routes back via the relay)")
                continue
            result = fwa.masquerade(fw, forward, ctx.relay_addresses, ctx.ingress(forward), ctx.egress(forward))
            if result.covered == result.total:
                seen.append(f"{forward.name}: masqueraded")
                continue
            missing = result.total - result.covered
            if missing and missing.issubset(result.unsure):
                problems.append(warning(f"forward {forward.name}: cannot tell whether connections to {forward.to} "
                                        "are masqueraded (a rule has a match netfwd cannot evaluate)",
                                        "check nat POSTROUTING by hand (iptables-save -t nat; nft list ruleset)"))
                continue
            problems.append(error(
                f"forward {forward.name}: connections to {forward.to} from {fwa.describe(missing, result.total)} "
                f"leave without MASQUERADE/SNAT: {forward.to.address} answers the client directly, not via the "
                "relay, and the handshake never completes",
                f"iptables -t nat -A POSTROUTING -p {forward.protocol} -d {forward.to.address} --dport "
                f"{forward.to.port} -j MASQUERADE (netfwd apply adds it)"))
        return found(problems, "; ".join(seen))


_CT_FIELDS = re.compile(r"(\w+)=(\S+)")


class ConntrackUnreplied(RelayCheck):
    name = "conntrack-unreplied"
    doc = "no [UNREPLIED] conntrack entries for a forward (its replies do not come back)"

    def run(self, ctx: DoctorContext) -> Outcome:
        relay = ctx.need_relay()
        forwards = _forwards(ctx)
        text = relay.conntrack
        if text is None:
            raise Skip("conntrack (conntrack-tools) is not installed, or the conntrack table cannot be read")
        problems, total = [], 0
        for forward in forwards:
            count = count_unreplied(text, forward)
            total += count
            if count:
                problems.append(warning(
                    f"forward {forward.name}: {count} connection(s) DNATed to {forward.to} got no reply "
                    "([UNREPLIED]): the reply path is broken (no masquerade, or the target's route back) "
                    "or the target drops them",
                    f"fix masquerade / the target, then clear them: conntrack -D -p {forward.protocol} "
                    f"--orig-port-dst {forward.listen.port}"))
        return found(problems, "no unreplied connections to any forward")


def count_unreplied(text: str, forward: Forward) -> int:
    """Conntrack entries whose original direction hits the forward's port and whose reply would come
    from the target (DNATed), still [UNREPLIED]."""
    count = 0
    target, port = str(forward.to.address), str(forward.to.port)
    for line in text.splitlines():
        if "[UNREPLIED]" not in line or not line.startswith(forward.protocol):
            continue
        original, _, reply = line.partition("[UNREPLIED]")
        orig = dict(_CT_FIELDS.findall(original))
        back = dict(_CT_FIELDS.findall(reply))
        if orig.get("dport") == str(forward.listen.port) and back.get("src") == target and back.get("sport") == port:
            count += 1
    return count


class Drift(RelayCheck):
    name = "drift"
    doc = "netfwd's owned state is what the last apply left (nothing flushed or edited since)"

    def run(self, ctx: DoctorContext) -> Outcome:
        from netfwd.doctor import integrations

        return integrations.drift(ctx)


CHECKS = (IpForward(), IpForwardPersisted(), AcceptRa(), RpFilter(), IptablesVersion(), IptablesBackends(), Firewalld(),
          Docker(), RelayInterface(), ListenAddress(), ListenPort(), TargetRoute(), Dnat(), ForwardChain(),
          Masquerade(), ConntrackUnreplied(), Drift())
