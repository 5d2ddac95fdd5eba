"""What a probe asks, what each stage saw, and what it concluded. Plain data, no I/O.

Every stage has the same shape (name, status, reason, timing, detail) so the table, the JSON
document and the JUnit report are three renderings of one structure; findings carry a stable
`code` that scripts may rely on, and one line saying how to fix it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "fail", "skipped"]
Severity = Literal["error", "warning", "info"]
Verdict = Literal["reachable", "impaired", "unreachable"]
STAGE_ORDER = ("resolve", "tcp", "trace", "tls", "http", "relay")
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a Kubernetes gitVersion such as v1.28.3+k3s1; None if unparsable."""
    match = VERSION_RE.match(text or "")
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


@dataclass(frozen=True)
class Endpoint:
    """One thing to probe: dial `host:port` (the relay's listen port A); `target` is what the
    relay should forward it to (B), when known. `relay_addresses` are other addresses the relay
    may answer from (its private address, a listen address), used to recognise its hop."""

    host: str
    port: int
    name: str | None = None
    target: tuple[str, int] | None = None
    relay_addresses: tuple[str, ...] = ()
    relay_os: str = "linux"
    client: str | None = None  # a source the forward admits (for explain on the relay)

    @property
    def label(self) -> str:
        return self.name or self.dial

    @property
    def dial(self) -> str:
        """host:port ("*" as host: the relay itself, with --from-relay)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def target_text(self) -> str | None:
        if self.target is None:
            return None
        host, port = self.target
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Options:
    """Everything the user set that changes what is sent; echoed in every report."""

    count: int = 1
    interval: float = 0.2
    timeout: float = 3.0
    until: str = "http"
    trace: bool = False
    locate: bool = True  # when TCP fails, find where with TTL-limited connects (no privileges)
    max_hops: int = 16
    ca: str | None = None
    server_name: str | None = None
    from_relay: bool = False
    concurrency: int = 512
    strict: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"count": self.count, "interval": self.interval, "timeout": self.timeout,
                "until": self.until, "trace": self.trace, "locate": self.locate, "max_hops": self.max_hops, "ca": self.ca,
                "server_name": self.server_name, "from_relay": self.from_relay,
                "concurrency": self.concurrency, "strict": self.strict}


@dataclass
class Stage:
    name: str
    status: Status
    reason: str
    elapsed_ms: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason,
                "elapsed_ms": round(self.elapsed_ms, 3), "detail": self.detail}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: Severity
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "severity": self.severity, "message": self.message, "fix": self.fix}


@dataclass
class ProbeResult:
    """Everything learnt about one endpoint."""

    endpoint: Endpoint
    stages: list[Stage] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    elapsed_ms: float = 0.0

    def stage(self, name: str) -> Stage | None:
        for stage in self.stages:
            if stage.name == name:
                return stage
        return None

    @property
    def verdict(self) -> Verdict:
        """unreachable: no TCP (or TLS) session; impaired: a session, but an error finding;
        reachable: no error finding (warnings allowed)."""
        tcp, tls = self.stage("tcp"), self.stage("tls")
        if self.endpoint_only_relay:
            return "unreachable" if any(f.severity == "error" for f in self.findings) else "reachable"
        if tcp is None or tcp.status != "ok" or (tls is not None and tls.status == "fail"):
            return "unreachable"
        if any(f.severity == "error" for f in self.findings):
            return "impaired"
        return "reachable"

    @property
    def endpoint_only_relay(self) -> bool:
        """A --from-relay probe has no client-side tcp stage: its verdict is its findings."""
        return self.stage("tcp") is None and self.stage("relay") is not None

    def ok(self, strict: bool = False) -> bool:
        if self.verdict != "reachable":
            return False
        return not (strict and any(f.severity == "warning" for f in self.findings))

    def as_dict(self) -> dict[str, Any]:
        ep = self.endpoint
        return {"name": ep.name, "dial": ep.dial, "target": ep.target_text, "verdict": self.verdict,
                "elapsed_ms": round(self.elapsed_ms, 3),
                "stages": [s.as_dict() for s in self.stages],
                "findings": [f.as_dict() for f in self.findings]}
