"""Tiny servers and clients the lab runs inside its namespaces: ``python -m netfwd.lab.servers ...``.

Standard library only, so a process starts in well under a second. Servers print ``ready`` on
stdout once listening (the lab waits for it) and then detach stdout.

  whoami PORT [--udp]          answer each TCP connection (and UDP datagram) with "<peer ip>\\n"
  apiserver PORT --cert --key  a Kubernetes API server stand-in over TLS
  connect HOST PORT            one TCP/UDP exchange; prints a JSON result (ok, reason, data)
  get HOST PORT PATH           one HTTPS GET; prints a JSON result (ok, status, body, reason)
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import socketserver
import ssl
import sys
import threading
import time


def _ready() -> None:
    """Tell the lab we listen, then let go of the pipe so nobody blocks on it."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)


def _log(path: str | None, line: str) -> None:
    if path:  # never through a symlink: this runs as root
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as out:
            out.write(line + "\n")


# -- whoami ---------------------------------------------------------------------------------------

def whoami(args: argparse.Namespace) -> None:
    log = args.log

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            peer = self.client_address[0]
            _log(log, f"tcp {peer}")
            self.request.sendall(f"{peer}\n".encode())

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            peer = self.client_address[0]
            _log(log, f"udp {peer}")
            sock.sendto(f"{peer}\n".encode(), self.client_address)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    tcp = socketserver.ThreadingTCPServer((args.bind, args.port), Tcp)
    servers = [tcp]
    if args.udp:
        servers.append(socketserver.ThreadingUDPServer((args.bind, args.port), Udp))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _ready()
    tcp.serve_forever()


# -- API server stand-in --------------------------------------------------------------------------

def _status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def apiserver(args: argparse.Namespace) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    version = {
        "major": args.git_version.lstrip("v").split(".")[0],
        "minor": args.git_version.lstrip("v").split(".")[1] if "." in args.git_version else "0",
        "gitVersion": args.git_version, "gitCommit": "0" * 40, "gitTreeState": "clean",
        "buildDate": "2024-01-01T00:00:00Z", "goVersion": "go1.21.5", "compiler": "gc",
        "platform": "linux/amd64",
    }
    public = {"/version": version, "/livez": "ok", "/readyz": "ok", "/healthz": "ok"}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "netfwd-lab-apiserver"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            path = self.path.split("?", 1)[0]
            authed = bool(args.token) and self.headers.get("Authorization") == f"Bearer {args.token}"
            if not authed and not args.anonymous:
                self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            elif path in public:
                self._send(200, public[path])
            elif authed:
                self._send(404, _status(404, "NotFound", "the server could not find the requested resource"))
            else:
                self._send(403, _status(403, "Forbidden", f'forbidden: User "system:anonymous" cannot '
                                                          f'get path "{path}"'))

        def _send(self, code: int, body: object) -> None:
            data = (json.dumps(body, indent=2) if not isinstance(body, str) else body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/plain; charset=utf-8" if isinstance(body, str)
                             else "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            _log(args.log, f"https {self.client_address[0]} GET {self.path} {code}")

        def log_message(self, format: str, *more: object) -> None:  # noqa: A002 - stdlib signature
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    ThreadingHTTPServer.allow_reuse_address = True
    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True

    # the TLS handshake happens on first read, in the worker thread: a stuck client blocks nobody
    def get_request() -> tuple:
        sock, addr = server.socket.accept()
        sock.settimeout(10)
        return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    server.get_request = get_request  # type: ignore[method-assign]
    handle_error = server.handle_error

    def quiet_errors(request: object, client_address: object) -> None:
        kind = sys.exc_info()[0]
        if kind is not None and issubclass(kind, (ssl.SSLError, OSError)):
            _log(args.log, f"tls-error {client_address[0]} {sys.exc_info()[1]}")  # type: ignore[index]
            return
        handle_error(request, client_address)

    server.handle_error = quiet_errors  # type: ignore[method-assign]
    _ready()
    server.serve_forever()


# -- clients --------------------------------------------------------------------------------------

_REASONS = {errno.ECONNREFUSED: "conn-refused", errno.EHOSTUNREACH: "host-unreach",
            errno.ENETUNREACH: "net-unreach", errno.EACCES: "admin-prohibited",
            errno.EPERM: "admin-prohibited", errno.ETIMEDOUT: "no-response",
            errno.EADDRNOTAVAIL: "no-source-address"}


def _reason(problem: BaseException) -> str:
    if isinstance(problem, (socket.timeout, TimeoutError)):
        return "no-response"
    return _REASONS.get(getattr(problem, "errno", None) or -1, f"error: {problem}")


def connect(args: argparse.Namespace) -> dict:
    kind = socket.SOCK_DGRAM if args.udp else socket.SOCK_STREAM
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, kind)
    sock.settimeout(args.timeout)
    started = time.monotonic()
    try:
        if args.source:
            sock.bind((args.source, 0))
        sock.connect((args.host, args.port))
        if args.udp:
            sock.send(args.send.encode() or b"?\n")
        elif args.send:
            sock.sendall(args.send.encode())
    except OSError as problem:
        sock.close()
        return {"ok": False, "reason": _reason(problem), "data": None,
                "elapsed": round(time.monotonic() - started, 4)}
    chunks: list[bytes] = []
    try:
        while not args.no_read:
            chunk = sock.recv(65536)
            chunks.append(chunk)
            if not chunk or args.udp:
                break
    except OSError as problem:
        if args.udp:  # no datagram came back: for UDP that is the whole answer
            return {"ok": False, "reason": _reason(problem), "data": None,
                    "elapsed": round(time.monotonic() - started, 4)}
        # TCP: connected, the server just said nothing (e.g. a TLS server waiting for a hello)
    finally:
        sock.close()
    data = b"".join(chunks).decode(errors="replace")
    return {"ok": True, "reason": "udp-reply" if args.udp else "syn-ack", "data": data,
            "elapsed": round(time.monotonic() - started, 4)}


def get(args: argparse.Namespace) -> dict:
    context = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
    if args.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    server_name = args.server_name or args.host
    raw = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    raw.settimeout(args.timeout)
    try:
        if args.source:
            raw.bind((args.source, 0))
        raw.connect((args.host, args.port))
    except OSError as problem:
        raw.close()
        return {"ok": False, "stage": "tcp", "reason": _reason(problem), "status": None, "body": None}
    try:
        tls = context.wrap_socket(raw, server_hostname=server_name)
    except ssl.SSLCertVerificationError as problem:
        raw.close()
        return {"ok": False, "stage": "tls", "reason": "cert-verify", "detail": problem.verify_message,
                "status": None, "body": None}
    except (ssl.SSLError, OSError) as problem:
        raw.close()
        return {"ok": False, "stage": "tls", "reason": _reason(problem), "status": None, "body": None}
    headers = f"GET {args.path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n"
    if args.token:
        headers += f"Authorization: Bearer {args.token}\r\n"
    try:
        tls.sendall((headers + "\r\n").encode())
        chunks = []
        while chunk := tls.recv(65536):
            chunks.append(chunk)
    except OSError as problem:
        return {"ok": False, "stage": "http", "reason": _reason(problem), "status": None, "body": None}
    finally:
        tls.close()
    head, _, body = b"".join(chunks).decode(errors="replace").partition("\r\n\r\n")
    try:
        status = int(head.split()[1])
    except (IndexError, ValueError):
        return {"ok": False, "stage": "http", "reason": "bad-response", "status": None, "body": head}
    return {"ok": True, "stage": "http", "reason": "http", "status": status, "body": body}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netfwd.lab.servers")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("whoami")
    p.add_argument("port", type=int)
    p.add_argument("--udp", action="store_true")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--log")
    p = sub.add_parser("apiserver")
    p.add_argument("port", type=int)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--git-version", default="v1.28.3")
    p.add_argument("--no-anonymous", dest="anonymous", action="store_false")
    p.add_argument("--token")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--log")
    for name in ("connect", "get"):
        p = sub.add_parser(name)
        p.add_argument("host")
        p.add_argument("port", type=int)
        if name == "get":
            p.add_argument("path", nargs="?", default="/version")
            p.add_argument("--ca")
            p.add_argument("--server-name")
            p.add_argument("--insecure", action="store_true")
            p.add_argument("--token")
        else:
            p.add_argument("--udp", action="store_true")
            p.add_argument("--send", default="")
            p.add_argument("--no-read", action="store_true", help="close right after connecting")
        p.add_argument("--source")
        p.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.command == "whoami":
        whoami(args)
    elif args.command == "apiserver":
        apiserver(args)
    else:
        print(json.dumps(connect(args) if args.command == "connect" else get(args)))


if __name__ == "__main__":
    main()
