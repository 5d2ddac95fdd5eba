"""Tiny servers and clients the lab runs inside its namespaces: ``python -m netfwd.lab.servers ...``.

Standard library only, so a process starts in well under a second. Servers print ``ready`` on
stdout once listening (the lab waits for it) and then detach stdout.

  whoami PORT [--udp] [--where]  answer each TCP connection (and UDP datagram) with "<peer ip>\\n"
                                 (--where: "<peer ip> <local ip> <local port>\\n")
  apiserver PORT --cert --key  a Kubernetes API server stand-in over TLS
  connect HOST PORT            one TCP/UDP exchange; prints a JSON result (ok, reason, data)
  connect-many                 many at once: JSON list of {id, src, dst, proto, dport, sport} on stdin
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
from typing import Any


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
    port = args.port

    def answer(peer: str, local: str) -> bytes:
        return (f"{peer} {local} {port}\n" if args.where else f"{peer}\n").encode()

    class Tcp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            peer = self.client_address[0]
            _log(log, f"tcp {peer}")
            self.request.sendall(answer(peer, self.request.getsockname()[0]))

    class Udp(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            data, sock = self.request
            peer = self.client_address[0]
            _log(log, f"udp {peer}")
            sock.sendto(answer(peer, self.server.server_address[0]), self.client_address)  # type: ignore[index]  # an IP server

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.request_queue_size = 256  # many clients at once (explain's diff tests)
    tcp = socketserver.ThreadingTCPServer((args.bind, args.port), Tcp)
    servers: list[socketserver.BaseServer] = [tcp]
    if args.udp and args.where:
        threading.Thread(target=_udp_where, args=(args.bind, args.port, answer, log), daemon=True).start()
    elif args.udp:
        servers.append(socketserver.ThreadingUDPServer((args.bind, args.port), Udp))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    _ready()
    tcp.serve_forever()


IP_PKTINFO, IP_RECVERR = 8, 11  # <linux/in.h>; Python's socket module exports neither


def _udp_where(bind: str, port: int, answer, log: str | None) -> None:
    """UDP on a wildcard address that knows where each datagram was sent (IP_PKTINFO) and answers
    from that address, as a TCP server would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind((bind, port))
    while True:
        _data, ancillary, _flags, peer = sock.recvmsg(2048, 256)
        info = next((c for level, kind, c in ancillary if level == socket.IPPROTO_IP
                     and kind == IP_PKTINFO), None)
        local = socket.inet_ntoa(info[8:12]) if info else bind
        _log(log, f"udp {peer[0]}")
        reply = [(socket.IPPROTO_IP, IP_PKTINFO, bytes(4) + socket.inet_aton(local) + bytes(4))]
        sock.sendmsg([answer(peer[0], local)], reply, 0, peer)


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

    def quiet_errors(request: Any, client_address: Any) -> None:
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


def _one(item: dict, timeout: float) -> dict:
    """One exchange for connect-many: TCP connect (or a UDP datagram, with IP_RECVERR so every ICMP
    error is reported) from (src, sport) to (dst, dport); the server's answer is `data`."""
    udp = item.get("proto") == "udp"
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if udp:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
    sock.settimeout(timeout)
    try:
        sock.bind((item["src"], int(item.get("sport") or 0)))
        sock.connect((item["dst"], int(item["dport"])))
        if udp:
            sock.send(b"?\n")
        data = sock.recv(256).decode(errors="replace").strip()
        return {"id": item["id"], "ok": True, "reason": "udp-reply" if udp else "syn-ack", "data": data}
    except OSError as problem:
        return {"id": item["id"], "ok": False, "reason": _reason(problem), "data": None}
    finally:
        sock.close()


def connect_many(args: argparse.Namespace) -> list[dict]:
    from concurrent.futures import ThreadPoolExecutor

    items = json.load(sys.stdin)
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        return list(pool.map(lambda item: _one(item, args.timeout), items))


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
    p.add_argument("--where", action="store_true", help="also answer the local address and port")
    p.add_argument("--bind", default="0.0.0.0")
    p.add_argument("--log")
    p = sub.add_parser("connect-many")
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--workers", type=int, default=64)
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
    elif args.command == "connect-many":
        print(json.dumps(connect_many(args)))
    else:
        print(json.dumps(connect(args) if args.command == "connect" else get(args)))


if __name__ == "__main__":
    main()
