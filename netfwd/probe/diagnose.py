"""From stage evidence to findings: a stable code, a one-line message, a one-line fix.

Codes are an interface (scripts match on them; docs/probe.md lists them): add new ones, never
rename. Each rule reads only the stages, so the rules are testable without a network.
"""

from __future__ import annotations

from typing import Any, Callable

from netfwd.probe.model import Endpoint, Finding, Options, ProbeResult, Severity, parse_version

EXPIRING_DAYS = 30  # warn below this many days left, or below a third of a short-lived cert's lifetime
MIN_VERSION = (1, 16)

# code -> (severity, fix template); templates may use {dial} {host} {port} {target} {tport} {sans0}
CODES: dict[str, tuple[Severity, str]] = {
    "resolve-failed": ("error", "use the relay's IP address, or fix the DNS name {host}"),
    "no-forward": ("error", "apply the forward on the relay (netfwd render SPEC --dialect iptables | sudo bash); "
                            "if it is applied, make sure this client's address is in its allow list"),
    "dropped-after-relay": ("error", "on the relay: accept tcp/{tport} to {target} in FORWARD, masquerade the "
                                     "forwarded traffic, and allow the relay at the target's firewall; "
                                     "`netfwd probe --from-relay` on the relay tells which"),
    "rejected-after-relay": ("error", "a REJECT rule in the relay's FORWARD chain or at the target refuses it: "
                                      "allow tcp/{tport} to {target}"),
    "target-refused": ("error", "nothing listens on {target}: start the API server, or point the forward at "
                                "its port (kube-apiserver: 6443)"),
    "relay-unreachable": ("error", "check the relay address {host}, the cloud security group / firewall for "
                                   "tcp/{port} from this client, and this client's route"),
    "relay-rejected": ("error", "the relay refuses tcp/{port} itself: check net.ipv4.ip_forward=1 and the "
                                "relay's INPUT rules"),
    "unlocated": ("error", "rerun with --trace (root) to locate the failure, or on the relay with --from-relay"),
    "packet-loss": ("warning", "intermittent loss: check the relay's conntrack table (nf_conntrack_max) and "
                               "rate limits on the path"),
    "tls-handshake-failed": ("error", "{dial} does not lead to a TLS server: check the forward's target port "
                                      "(kube-apiserver: 6443)"),
    "tls-san-mismatch": ("error", "add {host} to the API server certificate (kubeadm --apiserver-cert-extra-sans="
                                  "{host}, or apiServer.certSANs, then renew the apiserver cert), or set "
                                  "tls-server-name: {sans0} in the kubeconfig cluster entry"),
    "tls-untrusted": ("error", "pass the cluster CA with --ca (kubeadm: /etc/kubernetes/pki/ca.crt); "
                               "otherwise the server's chain is not signed by it"),
    "tls-cert-expired": ("error", "renew the API server certificate (kubeadm certs renew apiserver)"),
    "tls-cert-not-yet-valid": ("error", "check the clocks of the API server and this client (NTP)"),
    "tls-cert-expiring": ("warning", "renew the API server certificate soon (kubeadm certs renew apiserver)"),
    "http-failed": ("error", "the TLS server behind {dial} does not speak HTTP: check the forward's target port"),
    "anonymous-auth-disabled": ("warning", "fine for reachability (401 proves the path); for anonymous health "
                                           "checks run kube-apiserver with --anonymous-auth=true"),
    "anonymous-forbidden": ("warning", "restore the system:public-info-viewer ClusterRoleBinding for "
                                       "system:unauthenticated (or probe with credentials)"),
    "apiserver-not-ready": ("warning", "the API server answers but reports unhealthy: "
                                       "kubectl get --raw='/readyz?verbose'"),
    "not-kubernetes": ("warning", "{dial} answers HTTPS but not like a Kubernetes API server: check the target"),
    "version-below-1.16": ("warning", "upgrade the cluster to Kubernetes 1.16 or later (log-based threat "
                                      "detection needs it)"),
    "ip-forward-off": ("error", "sysctl -w net.ipv4.ip_forward=1 on the relay and persist it in /etc/sysctl.d"),
    "target-unreachable": ("error", "the relay cannot reach {target}: check its route to the target and the "
                                    "target's firewall"),
    "reply-path": ("error", "masquerade the forward (spec: masquerade: true) or route the clients' networks "
                            "back to the target via the relay"),
    "target-silent": ("error", "the target ignores forwarded SYNs it accepts directly: check its firewall for "
                               "the relay's address and tcp/{tport}"),
    "no-tracked-forward": ("warning", "probe from a client and rerun; if it persists, the relay's FORWARD chain "
                                      "drops tcp/{tport} to {target} (iptables -S FORWARD / nft list ruleset)"),
    "forward-seen-working": ("info", "nothing to fix"),
    "dropped-by-rule": ("error", "change that rule (or the chain's policy) so the forward's clients pass; "
                                 "`netfwd explain --src {src} --dst {dst} --dport {port}` shows the whole path"),
}


def _fmt(endpoint: Endpoint, sans0: str = "<a name in the certificate>") -> dict[str, Any]:
    target, tport = (endpoint.target_text or "the target"), (endpoint.target[1] if endpoint.target else "B")
    return {"dial": endpoint.dial, "host": endpoint.host, "port": endpoint.port, "target": target,
            "tport": tport, "sans0": sans0}


def make(code: str, message: str, endpoint: Endpoint, **extra: str) -> Finding:
    severity, fix = CODES[code]
    return Finding(code, severity, message, fix.format(**{**_fmt(endpoint), **extra}))


def diagnose(result: ProbeResult, options: Options) -> list[Finding]:
    """All findings for one probe result, most fundamental first."""
    ep, found = result.endpoint, []
    resolve = result.stage("resolve")
    if resolve is not None and resolve.status == "fail":
        return [make("resolve-failed", f"cannot resolve {ep.host}: {resolve.reason}", ep)]
    for rule in RULES:
        found += rule(result, ep)
    return found


def _tcp(result: ProbeResult, ep: Endpoint) -> list[Finding]:
    tcp, trace = result.stage("tcp"), result.stage("trace")
    if tcp is None:
        return []
    path = (trace.detail.get("path") or {}) if trace is not None else {}
    at_relay, beyond, hop = path.get("at_relay"), path.get("beyond"), path.get("relay_hop")
    if tcp.status == "ok":
        out = []
        if at_relay == "answered-itself" and path.get("certain") and ep.relay_os != "windows":
            out.append(make("no-forward", f"{ep.dial} answered from the relay's own stack at hop {hop}: a local "
                                          "service, not the forward, accepted the connection", ep))
        loss = tcp.detail.get("loss_pct", 0)
        if loss:
            out.append(make("packet-loss", f"{loss}% of {tcp.detail['sent']} handshakes to {ep.dial} got no answer", ep))
        return out
    reason = tcp.reason
    if at_relay == "answered-itself" and path.get("certain"):
        return [make("no-forward", f"the relay answered {ep.dial} itself ({reason}) at hop {hop}: "
                                   f"no rule forwards port {ep.port}", ep)]
    if at_relay == "forwarded":
        if beyond == "refused" or reason == "conn-refused":
            return [make("target-refused", f"the relay forwarded the SYN (time-exceeded at hop {hop}) and the "
                                           f"target refused it ({reason})", ep)]
        if beyond == "rejected" or reason not in ("no-response",):
            return [make("rejected-after-relay", f"the relay forwarded the SYN (time-exceeded at hop {hop}), "
                                                 f"then it was rejected ({reason})", ep)]
        return [make("dropped-after-relay", f"the relay forwarded the SYN (time-exceeded at hop {hop}) but "
                                            "nothing answered at full TTL", ep)]
    if at_relay == "rejected":
        return [make("relay-rejected", f"the relay rejected the SYN to {ep.dial} at hop {hop} ({reason})", ep)]
    if reason == "conn-refused":
        return [make("unlocated", f"{ep.dial} refused the connection, but it is unknown whether the relay (no "
                                  "forward) or the target refused: the relay's hop sent nothing to tell", ep)]
    where = f"; {path['note']}" if path.get("note") else ""
    return [make("relay-unreachable", f"no answer to a SYN to {ep.dial} ({reason}){where}", ep)]


def _tls(result: ProbeResult, ep: Endpoint) -> list[Finding]:
    tls = result.stage("tls")
    if tls is None or tls.status == "skipped":
        return []
    d = tls.detail
    if tls.status == "fail":
        return [make("tls-handshake-failed", f"TLS handshake with {ep.dial} failed: {tls.reason}"
                                             f"{(' (' + d['error'] + ')') if d.get('error') else ''}", ep)]
    out: list[Finding] = []
    sans = d.get("sans") or []
    covered = d.get("dialled_in_sans") or d.get("server_name_in_sans")
    if "sans" in d and not covered:
        name = f"tls-server-name {d['sni']}" if d.get("server_name_in_sans") is False else ep.host
        severity, fix = CODES["tls-san-mismatch"]
        fmt = _fmt(ep, sans0=_best_name(sans))
        out.append(Finding("tls-san-mismatch", severity,
                           f"x509: certificate is valid for {', '.join(sans) or '(no SANs)'}, not {name}",
                           fix.format(**fmt)))
    if d.get("chain_verified") is False:
        out.append(make("tls-untrusted", f"the chain does not verify against --ca: {d.get('verify_error')}", ep))
    days = d.get("days_left")
    if d.get("not_yet_valid"):
        out.append(make("tls-cert-not-yet-valid", f"the certificate is valid only from {d.get('not_before')}", ep))
    elif days is not None and days < 0:
        out.append(make("tls-cert-expired", f"the certificate expired on {d.get('not_after')}", ep))
    elif days is not None and days < min(EXPIRING_DAYS, d.get("lifetime_days", EXPIRING_DAYS * 3) / 3):
        out.append(make("tls-cert-expiring", f"the certificate expires in {days} days ({d.get('not_after')})", ep))
    return out


def _best_name(sans: list[str]) -> str:
    """The SAN to suggest for tls-server-name: the kubernetes service name if present, else a name."""
    for preferred in ("kubernetes", "kubernetes.default.svc"):
        if preferred in sans:
            return preferred
    names = [s for s in sans if not any(c == ":" for c in s) and not s.replace(".", "").isdigit()]
    return names[0] if names else "<a name in the certificate>"


def _http(result: ProbeResult, ep: Endpoint) -> list[Finding]:
    http = result.stage("http")
    if http is None or http.status == "skipped":
        return []
    if http.status == "fail":
        return [make("http-failed", f"no HTTP answer over TLS from {ep.dial} ({http.detail.get('error')})", ep)]
    paths = http.detail.get("paths", {})
    statuses = {p: a.get("status") for p, a in paths.items()}
    out: list[Finding] = []
    if 401 in statuses.values():
        out.append(make("anonymous-auth-disabled", "the API server answered 401 Unauthorized to anonymous "
                                                   "requests: reachable, but anonymous authentication is off", ep))
    elif 403 in statuses.values():
        out.append(make("anonymous-forbidden", "the API server answered 403 Forbidden: anonymous requests are "
                                               "authenticated but not allowed the public-info paths", ep))
    unhealthy = [f"{p} {s}" for p, s in statuses.items() if p in ("/livez", "/readyz") and s not in (200, 401, 403)]
    if unhealthy:
        out.append(make("apiserver-not-ready", f"health endpoints answered: {', '.join(map(str, unhealthy))}", ep))
    if statuses.get("/version") == 200:
        git = http.detail.get("gitVersion")
        parsed = parse_version(git)
        if not git or parsed is None:
            out.append(make("not-kubernetes", f"/version has no Kubernetes gitVersion "
                                              f"({http.detail.get('version_error')})", ep))
        elif parsed[:2] < MIN_VERSION:
            out.append(make("version-below-1.16", f"gitVersion {git} is older than 1.16: log-based threat "
                                                  "detection needs Kubernetes 1.16 or later", ep))
    return out


def _relay(result: ProbeResult, ep: Endpoint) -> list[Finding]:
    relay = result.stage("relay")
    if relay is None:
        return []
    d, out = relay.detail, []
    if d.get("ip_forward") is False:
        out.append(make("ip-forward-off", "IP forwarding is off on the relay: DNAT matches, then the "
                                          "packet is dropped", ep))
    direct = d.get("direct")
    if direct and direct["reason"] == "conn-refused":
        out.append(make("target-refused", f"a direct connect from the relay to {direct['target']} is refused", ep))
        return out
    if direct and direct["reason"] != "syn-ack":
        out.append(make("target-unreachable", f"a direct connect from the relay to {direct['target']} got "
                                              f"{direct['reason']}", ep))
        return out
    explained = d.get("explain") or {}
    if explained.get("verdict") in ("drop", "reject"):
        rule = explained.get("rule") or {}
        where = (f"{rule.get('table')} {rule.get('chain')} " + (f"rule {rule['rule']}" if rule.get("rule")
                 else "policy") + f": {rule.get('text')}") if rule else "the routing decision"
        out.append(make("dropped-by-rule", f"a new connection from {explained['src']} to {explained['dst']}:"
                                           f"{explained['port']} is {explained['verdict']}ed by {where}", ep,
                        src=explained["src"], dst=explained["dst"]))
    track = d.get("conntrack")
    if track is None:
        return out
    if track["unreplied_unmasqueraded"]:
        sample = next((s for s in track["sample"] if s["unreplied"] and not s["masqueraded"]), None)
        who = f" (e.g. {sample['target']} was to answer {sample['reply_to']})" if sample else ""
        out.append(make("reply-path", f"{track['unreplied_unmasqueraded']} forwarded connection(s) [UNREPLIED] "
                                      f"with the client as reply address{who}: DNAT without masquerade, and the "
                                      "target has no route back", ep))
    elif track["unreplied"]:
        out.append(make("target-silent", f"{track['unreplied']} masqueraded connection(s) [UNREPLIED] although "
                                         "the target answers the relay directly", ep))
    elif track["assured"]:
        out.append(make("forward-seen-working", f"{track['assured']} connection(s) through the forward completed", ep))
    elif not track["entries"] and d.get("ip_forward") is not False:
        out.append(make("no-tracked-forward", f"no forwarded connection to {ep.target_text} is tracked: no client "
                                              "tried recently, or the FORWARD chain drops them (a dropped SYN "
                                              "leaves no conntrack entry)", ep))
    return out


# The rules, in the order their findings are listed (most fundamental first). Each reads only the
# stages of one result; a new finding is a code in CODES plus a rule here (docs/architecture.md).
RULES: list[Callable[[ProbeResult, Endpoint], list[Finding]]] = [_tcp, _tls, _http, _relay]
