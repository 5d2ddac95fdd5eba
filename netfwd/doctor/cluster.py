"""Cluster checks: the API server through the relay (via netfwd.probe), and the audit prerequisites.

The probe runs once per doctor run (shared by the three apiserver-* checks through ctx.cache); it
dials only the relay addresses the spec or --via names. The audit checks read files only.
"""

from __future__ import annotations

from netfwd.doctor.context import DoctorContext
from netfwd.doctor.framework import Outcome, Skip, error, found, warning
from netfwd.errors import InputError

MIN_VERSION = (1, 16)  # log-based threat detection (the vendor guide)
SAN_CODES = ("tls-san-mismatch",)
AUTH_CODES = ("anonymous-auth-disabled", "anonymous-forbidden")  # proof of reachability, not a problem here


class ClusterCheck:
    group = "cluster"
    name = ""
    doc = ""


def _endpoints(ctx: DoctorContext):
    """The probe's own spec-to-endpoints mapping (one per TCP forward); no address to dial -> skip."""
    from netfwd.probe.targets import from_spec

    options = ctx.cluster
    try:
        return from_spec(ctx.need_spec(), options.via if options else None, (), log=lambda _message: None)
    except InputError as problem:
        raise Skip(f"needs --via RELAY[:PORT] ({problem.message})") from None


def probe_results(ctx: DoctorContext) -> list:
    if "probe" in ctx.cache:
        return ctx.cache["probe"]
    try:
        from netfwd.probe import Options, probe_all
    except ImportError:
        raise Skip("skipped: needs netfwd probe") from None
    options = ctx.cluster
    endpoints = _endpoints(ctx)
    probe_options = Options(timeout=options.timeout if options else 3.0, ca=options.ca if options else None)
    ctx.cache["probe"] = probe_all(endpoints, probe_options)
    return ctx.cache["probe"]


def _label(result) -> str:
    return f"{result.endpoint.label} ({result.endpoint.dial})"


class ApiserverReachable(ClusterCheck):
    name = "apiserver-reachable"
    doc = "the API server answers through the relay (TCP, TLS, HTTP), as the probe sees it"

    def run(self, ctx: DoctorContext) -> Outcome:
        results = probe_results(ctx)
        problems, seen = [], []
        for result in results:
            own = [f for f in result.findings if f.code not in SAN_CODES + AUTH_CODES
                   and not f.code.startswith("version")]
            for f in own:
                if f.severity in ("error", "warning"):
                    make = error if f.severity == "error" else warning
                    problems.append(make(f"{_label(result)}: {f.message} [{f.code}]", f.fix))
            if result.verdict == "unreachable" and not any(p.severity == "error" for p in problems):
                problems.append(error(f"{_label(result)}: unreachable", "see `netfwd probe SPEC` for the stages"))
            if result.verdict != "unreachable":
                http = result.stage("http")
                answered = "TCP, TLS and HTTP answer" if http is not None and http.status == "ok" else "TCP answers"
                seen.append(f"{_label(result)}: {answered}")
        return found(problems, "; ".join(seen))


class ApiserverVersion(ClusterCheck):
    name = "apiserver-version"
    doc = "the API server is Kubernetes 1.16 or later (log-based threat detection needs it)"

    def run(self, ctx: DoctorContext) -> Outcome:
        problems, seen = [], []
        for result in probe_results(ctx):
            http = result.stage("http")
            version = (http.detail.get("version") if http is not None and http.status == "ok" else None) or {}
            if not version:
                why = http.detail.get("version_error") if http is not None else None
                problems.append(warning(f"{_label(result)}: no Kubernetes version ({why or 'no /version answer'})",
                                        "make the API server reachable first (apiserver-reachable)"))
                continue
            text = http.detail.get("gitVersion", f"v{version['major']}.{version['minor']}")
            ctx.cache.setdefault("k8s_version", (int(version["major"]), int(version["minor"])))
            if (int(version["major"]), int(version["minor"])) < MIN_VERSION:
                problems.append(error(f"{_label(result)}: Kubernetes {text} is older than 1.16: log-based threat "
                                      "detection is not available", "upgrade the cluster to 1.16 or later"))
            else:
                seen.append(f"{_label(result)}: {text}")
        return found(problems, "; ".join(seen))


class ApiserverSans(ClusterCheck):
    name = "apiserver-sans"
    doc = "the API server certificate names the address clients dial (the relay), so TLS verifies"

    def run(self, ctx: DoctorContext) -> Outcome:
        problems, seen = [], []
        for result in probe_results(ctx):
            tls = result.stage("tls")
            if tls is None or tls.status != "ok" and "sans" not in tls.detail:
                problems.append(warning(f"{_label(result)}: no certificate seen (TLS did not complete)",
                                        "make the API server reachable first (apiserver-reachable)"))
                continue
            san_findings = [f for f in result.findings if f.code in SAN_CODES]
            if san_findings or tls.detail.get("dialled_in_sans") is False:
                f = san_findings[0] if san_findings else None
                problems.append(error(f"{_label(result)}: " + (f.message if f else
                                      f"{result.endpoint.host} is not in the certificate's SANs "
                                      f"({', '.join(tls.detail.get('sans', [])[:6])})"),
                                      f.fix if f else f"kubeadm: --apiserver-cert-extra-sans={result.endpoint.host}"
                                      " and renew the certificate; or tls-server-name in the kubeconfig"))
            else:
                seen.append(f"{_label(result)}: {result.endpoint.host} in SANs")
        return found(problems, "; ".join(seen))


class AuditManifest(ClusterCheck):
    name = "audit-manifest"
    doc = "the kube-apiserver manifest has the audit flags, mounts and log agent env (netfwd audit check)"

    def run(self, ctx: DoctorContext) -> Outcome:
        from netfwd.audit.manifest import Settings, check, load_manifest

        options = ctx.cluster
        if options is None or not options.manifest:
            raise Skip("needs --manifest (the kube-apiserver static pod manifest)")
        manifest = load_manifest(options.manifest)
        items = check(manifest, Settings(cluster_id=options.cluster_id))
        bad = [i for i in items if not i.ok]
        findings = [(error if i.severity == "error" else warning)(f"{options.manifest}: {i.message}", i.fix)
                    for i in bad]
        return found(findings, f"{len(items) - len(bad)} of {len(items)} audit pieces present")


class AuditPolicy(ClusterCheck):
    name = "audit-policy"
    doc = "the audit policy file's apiVersion is served by the cluster (v1beta1 is gone in 1.24)"

    def run(self, ctx: DoctorContext) -> Outcome:
        from pathlib import Path

        from netfwd.audit.policy import check_policy

        options = ctx.cluster
        if options is None or not options.audit_policy:
            raise Skip("needs --audit-policy FILE")
        version = options.k8s_version or ctx.cache.get("k8s_version")
        try:
            text = Path(options.audit_policy).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as problem:
            raise InputError(f"cannot read the audit policy: {problem}", file=options.audit_policy) from None
        items = check_policy(text, options.audit_policy, version)
        findings = [error(f"{options.audit_policy}: {i.message}", i.fix) for i in items if not i.ok]
        return found(findings, "; ".join(i.message for i in items if i.ok))


CHECKS = (ApiserverReachable(), ApiserverVersion(), ApiserverSans())
AUDIT_CHECKS = (AuditManifest(), AuditPolicy())
