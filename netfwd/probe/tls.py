"""The TLS stage: what the server presents, and whether a client dialling *this* address accepts it.

The first handshake never verifies, so a bad certificate is still described (version, cipher,
subject, SANs, expiry) instead of being one opaque error. Whether the dialled address (or the
kubeconfig `tls-server-name`) is in the SANs is checked here, separately from the chain, which
a second handshake verifies against `--ca` — so "wrong SANs" and "untrusted chain" are told apart.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

from netfwd.probe.model import Stage
from netfwd.probe.tcp import classify


@dataclass
class TlsOutcome:
    stage: Stage
    conn: ssl.SSLSocket | None  # the open session, for the HTTP stage to reuse


def _connect(host: str, port: int, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _insecure_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


def tls_stage(host: str, port: int, timeout: float, server_name: str | None, ca: str | None,
              sni_default: str | None = None) -> TlsOutcome:
    """Handshake with host:port; describe the certificate; check SANs and (with `ca`) the chain."""
    started = time.perf_counter()
    sni = server_name or sni_default or host
    try:
        raw = _connect(host, port, timeout)
    except OSError as problem:
        reason = classify(problem, None)
        return TlsOutcome(Stage("tls", "fail", reason, _ms(started), {"during": "connect"}), None)
    try:
        conn = _insecure_context().wrap_socket(raw, server_hostname=sni)
    except (ssl.SSLError, OSError) as problem:
        raw.close()
        reason, message = _handshake_failure(problem)
        return TlsOutcome(Stage("tls", "fail", reason, _ms(started), {"error": message}), None)
    detail: dict[str, Any] = {"version": conn.version(), "cipher": (conn.cipher() or ("?",))[0], "sni": sni}
    der = conn.getpeercert(binary_form=True)
    if der:
        detail.update(describe(der))
        detail["dialled_in_sans"] = in_sans(host, detail["sans"])
        if server_name:
            detail["server_name_in_sans"] = in_sans(server_name, detail["sans"])
    if ca:
        detail.update(verify_chain(host, port, timeout, ca, sni))
    return TlsOutcome(Stage("tls", "ok", "handshake", _ms(started), detail), conn)


def _handshake_failure(problem: BaseException) -> tuple[str, str]:
    if isinstance(problem, (socket.timeout, TimeoutError)):
        return "no-response", "no TLS answer within the timeout (is it a TLS port?)"
    if isinstance(problem, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError)):
        return "closed", f"the peer closed the connection during the handshake ({problem})"
    if isinstance(problem, ssl.SSLError):
        return "handshake-failed", str(getattr(problem, "reason", None) or problem)
    return "error", str(problem)


def describe(der: bytes) -> dict[str, Any]:
    """Subject, issuer, SANs and validity of a DER certificate."""
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    sans: list[str] = []
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = [str(v) for v in ext.get_values_for_type(x509.IPAddress)]
        sans += ext.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        pass
    not_after = cert.not_valid_after_utc
    now = dt.datetime.now(dt.timezone.utc)
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(), "sans": sans,
            "not_before": cert.not_valid_before_utc.isoformat(), "not_after": not_after.isoformat(),
            "days_left": round((not_after - now).total_seconds() / 86400, 1),
            "lifetime_days": round((not_after - cert.not_valid_before_utc).total_seconds() / 86400, 1),
            "not_yet_valid": cert.not_valid_before_utc > now}


def in_sans(name: str, sans: list[str]) -> bool:
    """RFC 6125 matching as Go/OpenSSL do it: IPs against IP SANs, names against DNS SANs with a
    single leftmost wildcard label."""
    try:
        wanted = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        wanted = None
    for san in sans:
        if wanted is not None:
            try:
                if ipaddress.ip_address(san) == wanted:
                    return True
            except ValueError:
                continue
            continue
        pattern, host = san.lower().rstrip("."), name.lower().rstrip(".")
        if pattern == host:
            return True
        if pattern.startswith("*.") and "." in host and host.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def verify_chain(host: str, port: int, timeout: float, ca: str, sni: str) -> dict[str, Any]:
    """A second handshake that verifies the chain against `ca` (names are checked by in_sans)."""
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    try:
        raw = _connect(host, port, timeout)
    except OSError as problem:
        return {"chain_verified": None, "verify_error": f"reconnect failed: {classify(problem, None)}"}
    try:
        with context.wrap_socket(raw, server_hostname=sni):
            return {"chain_verified": True}
    except ssl.SSLCertVerificationError as problem:
        return {"chain_verified": False, "verify_error": problem.verify_message or str(problem)}
    except (ssl.SSLError, OSError) as problem:
        return {"chain_verified": None, "verify_error": str(problem)}
    finally:
        raw.close()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
