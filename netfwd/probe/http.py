"""The HTTP stage: the API server's anonymous endpoints over the TLS session the TLS stage opened.

`/livez`, `/readyz` and `/version` are public (`system:public-info-viewer`) unless anonymous
authentication is off, in which case they answer 401 — which still proves TCP, TLS and the API
server answer through the relay. `/version` gives `gitVersion`.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from typing import Any

from netfwd.probe.model import Stage, parse_version

PATHS = ("/livez", "/readyz", "/version")
MAX_BODY = 64 * 1024


class _Session(http.client.HTTPSConnection):
    """An HTTPS connection that starts on an already-open TLS socket and, should the server close
    it, reconnects with the same (non-verifying) context and server name."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, sni: str,
                 conn: ssl.SSLSocket | None) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._sni, self._ctx = sni, context
        self.sock = conn

    def connect(self) -> None:  # used only after the server closed the first session
        raw = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(raw, server_hostname=self._sni)


def http_stage(host: str, port: int, timeout: float, sni: str, conn: ssl.SSLSocket | None,
               host_header: str | None = None) -> Stage:
    """GET each public path; status codes, bodies (short), gitVersion."""
    from netfwd.probe.tls import _insecure_context

    started = time.perf_counter()
    session = _Session(host, port, timeout, _insecure_context(), sni, conn)
    answers: dict[str, Any] = {}
    detail: dict[str, Any] = {"paths": answers}
    try:
        for path in PATHS:
            try:
                session.request("GET", path, headers={"Host": host_header or sni, "Accept": "application/json",
                                                      "User-Agent": "netfwd-probe"})
                response = session.getresponse()
                body = response.read(MAX_BODY)
            except (OSError, http.client.HTTPException) as problem:
                answers[path] = {"error": _error(problem)}
                session.close()
                continue
            answers[path] = {"status": response.status}
            if path == "/version" and response.status == 200:
                detail.update(_version(body))
            elif response.status != 200:
                answers[path]["body"] = body.decode(errors="replace")[:200]
    finally:
        session.close()
    statuses = [a.get("status") for a in answers.values()]
    if all(s is None for s in statuses):
        first = next(iter(answers.values()))
        return Stage("http", "fail", "no-http-answer", _ms(started), dict(detail, error=first.get("error")))
    if any(s == 401 for s in statuses):
        reason = "unauthorized"
    elif any(s == 403 for s in statuses):
        reason = "forbidden"
    elif all(s == 200 for s in statuses):
        reason = "ok"
    else:
        reason = "http-" + "/".join(str(s) for s in statuses)
    return Stage("http", "ok", reason, _ms(started), detail)


def _version(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {"version_error": "the /version body is not JSON"}
    if not isinstance(data, dict) or not isinstance(data.get("gitVersion"), str):
        return {"version_error": "no gitVersion in the /version body"}
    parsed = parse_version(data["gitVersion"])
    out: dict[str, Any] = {"gitVersion": data["gitVersion"],
                           "platform": data.get("platform"), "goVersion": data.get("goVersion")}
    if parsed:
        out["version"] = {"major": parsed[0], "minor": parsed[1], "patch": parsed[2]}
    else:
        out["version_error"] = f"cannot parse gitVersion {data['gitVersion']!r}"
    return out


def _error(problem: BaseException) -> str:
    if isinstance(problem, (socket.timeout, TimeoutError)):
        return "no-response"
    if isinstance(problem, http.client.BadStatusLine):
        return "not-http"
    return f"{type(problem).__name__}: {problem}"


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
