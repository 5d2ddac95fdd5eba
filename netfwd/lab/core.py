"""`Lab`: build, use and tear down one rehearsal topology. The API the tests and `netfwd lab` share.

    client --(client link)-- [router --] relay(ext0 | int0) --(inside link)-- onprem

Everything a lab creates is recorded in its state file *before* it is created, and `down()` works
from that record alone, so a lab survives the death of the process that built it.
"""

from __future__ import annotations

import json
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from netfwd import host
from netfwd import trust
from netfwd.errors import EnvironmentProblem, InputError
from netfwd.lab import netns
from netfwd.lab.state import DIR_MODE, LAB_NAME_RE, LabState, Process, lab_dir, ns_name, state_path, trusted_lab_dir
from netfwd.lab.topology import NODES_BASIC, NODES_ROUTED, Addresses, choose_block, plan

SERVER_START_TIMEOUT = 10.0


class LabCommandError(subprocess.CalledProcessError):
    """A command run in a lab node failed; unlike its base class, the message includes stderr."""

    def __str__(self) -> str:
        tail = (self.stderr or self.stdout or "").strip()
        return f"{super().__str__().rstrip('.')}: {tail[-2000:]}" if tail else super().__str__()


@dataclass(frozen=True)
class ConnectResult:
    """One TCP/UDP exchange. ``ok`` = connected (TCP) / got a reply (UDP); ``reason`` follows nmap:
    syn-ack, conn-refused, no-response, host-unreach, net-unreach, admin-prohibited, udp-reply.
    ``data`` is what the server sent (a whoami server sends the peer address it saw, plus newline).
    """

    ok: bool
    reason: str
    data: str | None
    elapsed: float = 0.0

    @property
    def peer(self) -> str | None:
        """The address a whoami server saw us as, or None."""
        return self.data.strip() if self.ok and self.data else None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class HttpsResult:
    """One HTTPS GET. ``stage`` is where it stopped (tcp, tls, http); ``reason`` why (cert-verify,
    no-response, conn-refused, ...); ``status``/``body`` when an HTTP answer came back."""

    ok: bool
    stage: str
    reason: str
    status: int | None
    body: str | None
    detail: str | None = None

    def json(self) -> Any:
        return json.loads(self.body or "null")


def crash_point(stage: str) -> None:
    """Test hook: NETFWD_LAB_CRASH_AT=<stage> SIGKILLs this process there, to prove `down` recovers."""
    if os.environ.get("NETFWD_LAB_CRASH_AT") == stage:
        os.kill(os.getpid(), signal.SIGKILL)


class Lab:
    """A running lab. Make one with :meth:`up` (or :meth:`attach` to an existing one); end it with :meth:`down`."""

    def __init__(self, state: LabState) -> None:
        self._state = state
        self._children: dict[int, subprocess.Popen] = {}

    # -- life cycle -------------------------------------------------------------------------------

    @classmethod
    def up(cls, name: str | None = None, router: bool = False, onprem_route_back: bool = False, *,
           relay_outside_if: str = "ext0", userland: str = "modern") -> "Lab":
        """Build a fresh lab (random 4-hex-digit name when `name` is None). On failure, nothing is left.

        userland="centos7": the relay's programs see CentOS 7's iptables 1.4.21 and firewalld 0.6.3
        (netfwd.lab.userland)."""
        from netfwd.lab import userland as userlands

        userlands.check(userland)
        netns.check_environment()
        if name is not None and not LAB_NAME_RE.match(name):
            raise InputError(f"{name!r} is not a lab name: use 1-12 lowercase letters or digits", field="name")
        addrs = plan(choose_block(netns.host_networks()), router=router, relay_outside_if=relay_outside_if)
        state = _claim(name, router, onprem_route_back, addrs)
        state.userland = userland
        lab = cls(state)
        try:
            lab._build()
            if userland != "modern":
                userlands.start(lab)
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def attach(cls, name: str) -> "Lab":
        """The lab recorded under `name` (built by another process, e.g. `netfwd lab up`)."""
        trusted_lab_dir()
        if not LAB_NAME_RE.match(name) or not state_path(name).exists():
            raise InputError(f"no lab named {name!r} (see `netfwd lab status`)", field="name")
        try:
            state = LabState.load(name)
            if state.kind == "fleet":
                from netfwd.lab.fleet import FleetLab

                return FleetLab(state)
            return cls(state)
        except (ValueError, TypeError, KeyError):
            raise EnvironmentProblem(f"the record of lab {name} ({state_path(name)}) is unreadable, probably "
                                     f"from a crash while it was claimed; run `netfwd lab down --name {name}`") from None

    def _build(self) -> None:
        state, a = self._state, self.addrs
        nodes = NODES_ROUTED if state.router else NODES_BASIC
        for node in nodes:
            if netns.exists(ns_name(self.name, node)):
                raise EnvironmentProblem(f"network namespace {ns_name(self.name, node)} already exists")
        state.namespaces = [ns_name(self.name, node) for node in nodes]
        state.save()  # intent first: a crash from here on is recoverable by `down`
        crash_point("claimed")
        for name in list(state.namespaces):
            if netns.exists(name):  # appeared since the check: not ours, so forget it before down runs
                state.namespaces.remove(name)
                state.save()
                raise EnvironmentProblem(f"network namespace {name} already exists")
            netns.create(name)
        crash_point("namespaces")
        client, relay, onprem = self.ns("client"), self.ns("relay"), self.ns("onprem")
        if state.router:
            router = self.ns("router")
            netns.veth(client, a.client_if, router, a.router_client_if)  # type: ignore[arg-type]  # set with a router
            netns.veth(router, a.router_relay_if, relay, a.relay_outside_if)  # type: ignore[arg-type]
        else:
            netns.veth(client, a.client_if, relay, a.relay_outside_if)
        netns.veth(relay, a.relay_inside_if, onprem, a.onprem_if)
        crash_point("links")
        client_len = a.client_net.split("/")[1]
        outside_len = a.outside_net.split("/")[1]
        inside_len = a.inside_net.split("/")[1]
        netns.configure(client, {a.client_if: [f"{a.client_allowed}/{client_len}",
                                               f"{a.client_denied}/{client_len}"]},
                        gateway=a.client_gateway)
        netns.configure(relay, {a.relay_outside_if: [f"{a.relay_outside}/{outside_len}"],
                                a.relay_inside_if: [f"{a.relay_inside}/{inside_len}"]},
                        gateway=a.router_relay)
        netns.configure(onprem, {a.onprem_if: [f"{a.onprem}/{inside_len}"]},
                        gateway=a.relay_inside if state.onprem_route_back else None)
        if state.router:
            netns.configure(self.ns("router"), {a.router_client_if: [f"{a.router_client}/{client_len}"],  # type: ignore[dict-item]
                                                a.router_relay_if: [f"{a.router_relay}/{outside_len}"]})  # type: ignore[dict-item]
            netns.sysctl(self.ns("router"), "net.ipv4.ip_forward", "1")
        crash_point("configured")
        state.complete = True
        state.save()

    def record_namespace(self, name: str) -> None:
        """Write a namespace a lab kind is about to create into the record first, so `down` removes
        it even after a crash (the recipe for a new node: docs/architecture.md)."""
        if name not in self._state.namespaces:
            self._state.namespaces.append(name)
            self._state.save()

    def down(self) -> None:
        """Stop every process and remove every namespace and file this lab recorded; repeatable."""
        destroy(self.name, self._children)
        for child in self._children.values():  # also when another process tore the lab down
            try:
                child.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._children.clear()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- names and addresses ----------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def addrs(self) -> Addresses:
        return Addresses.from_dict(self._state.addrs)

    @property
    def allowed_cidr(self) -> str:
        return self.addrs.allowed_cidr

    @property
    def nodes(self) -> tuple[str, ...]:
        return NODES_ROUTED if self._state.router else NODES_BASIC

    @property
    def userland(self) -> str:
        return self._state.userland

    @property
    def complete(self) -> bool:
        """Every namespace, link and address was made (False while building, or after a crash)."""
        return self._state.complete

    @property
    def created(self) -> float:
        return self._state.created

    def builder(self) -> tuple[int, bool]:
        """The PID of the process that built the lab, and whether that process still runs."""
        return self._state.owner_pid, self._state.owner_alive()

    @property
    def router(self) -> bool:
        return self._state.router

    @property
    def workdir(self) -> Path:
        return Path(self._state.workdir)

    @property
    def ca_file(self) -> Path:
        """The lab CA that signs every stand-in's certificate (exists after the first apiserver start)."""
        return self.workdir / "tls" / "ca.pem"

    def ns(self, node: str) -> str:
        """The network namespace name of `node` (client, relay, onprem, router)."""
        if node not in self.nodes:
            raise ValueError(f"lab {self.name} has no node {node!r} (nodes: {', '.join(self.nodes)})")
        return ns_name(self.name, node)

    # -- running things ---------------------------------------------------------------------------

    def run(self, node: str, argv: Sequence[str], check: bool = True, timeout: float | None = 30.0,
            input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002 - mirrors subprocess
        """Run `argv` inside `node`'s namespace; text output captured. check=True raises LabCommandError."""
        return _run(self.exec_argv(node, argv), check, timeout, input)

    def exec_argv(self, node: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs `argv` in `node` (in the relay: with the relay's userland)."""
        holder = self._userland_pid() if node == "relay" else None
        if holder is not None:
            return ["nsenter", "-t", str(holder), "-m", "-n", "--", *argv]
        return netns.exec_argv(self.ns(node), list(argv))

    def _userland_pid(self) -> int | None:
        if self._state.userland == "modern":
            return None
        for process in self._state.processes:
            if process.kind == "userland" and process.alive():
                return process.pid
        raise EnvironmentProblem(f"the {self._state.userland} userland of lab {self.name} is not running")

    def enable_forwarding(self, node: str = "relay", enabled: bool = True) -> None:
        """Set net.ipv4.ip_forward inside `node` only (the host's setting is never touched)."""
        netns.sysctl(self.ns(node), "net.ipv4.ip_forward", "1" if enabled else "0")

    def python(self, node: str, module_args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess:
        """Run ``python -m netfwd.lab.servers ...`` in `node`."""
        return self.run(node, [sys.executable, "-m", "netfwd.lab.servers", *module_args], **kwargs)

    def start_server(self, node: str, port: int, kind: str = "whoami", **options: Any) -> int:
        """Start a server in `node` listening on `port`; returns its PID once it listens.

        kind="whoami": answers each TCP connection with "<peer ip>\\n"; ``udp=True`` also on UDP;
        ``where=True`` adds the local address and port ("<peer ip> <local ip> <local port>\\n").
        kind="apiserver": TLS Kubernetes API-server stand-in; options ``sans`` (list of IPs/names,
        default: on-prem IP, localhost and the kubernetes service names - *not* the relay),
        ``extra_sans``, ``git_version`` ("v1.28.3"), ``anonymous`` (True; False = 401 for everything),
        ``token`` (a bearer token accepted even when anonymous is off).
        Both take ``bind`` (default 0.0.0.0). Requests are logged; see :meth:`server_log`.
        """
        log = self.workdir / "logs" / f"{node}-{kind}-{port}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        args = [str(port), "--bind", str(options.pop("bind", "0.0.0.0")), "--log", str(log)]
        if kind == "whoami":
            if options.pop("udp", False):
                args.append("--udp")
            if options.pop("where", False):
                args.append("--where")
        elif kind == "apiserver":
            from netfwd.lab.tls import make_tls

            sans = list(options.pop("sans", None) or self.default_sans())
            sans += list(options.pop("extra_sans", ()))
            tls = make_tls(self.workdir / "tls", sans, prefix=f"apiserver-{node}-{port}")
            args += ["--cert", str(tls.cert), "--key", str(tls.key),
                     "--git-version", str(options.pop("git_version", "v1.28.3"))]
            if not options.pop("anonymous", True):
                args.append("--no-anonymous")
            if options.get("token"):
                args += ["--token", str(options.pop("token"))]
        else:
            raise ValueError(f"unknown server kind {kind!r} (whoami, apiserver)")
        if options:
            raise TypeError(f"unknown {kind} options: {', '.join(sorted(options))}")
        return self._spawn(node, kind, [sys.executable, "-m", "netfwd.lab.servers", kind, *args], port, log)

    def default_sans(self) -> list[str]:
        """What kubeadm would put in an on-prem API server's certificate: not the relay's address."""
        return [self.addrs.onprem, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default",
                "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"]

    def _spawn(self, node: str, kind: str, argv: list[str], port: int | None, log: Path) -> int:
        full = netns.exec_argv(self.ns(node), argv)
        errors = log.with_suffix(".stderr")
        err = trust.open_file(errors, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            child = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                     start_new_session=True, env=_child_env())
        finally:
            os.close(err)
        self.adopt(child, node, kind, argv, port, str(log))
        line = _read_line(child, SERVER_START_TIMEOUT)
        if line != "ready":
            self.stop_server(child.pid)
            detail = errors.read_text(errors="replace").strip().splitlines()[-3:] if errors.exists() else []
            raise EnvironmentProblem(f"{kind} server on {node}:{port} did not start: "
                                     f"{' / '.join(detail) or line or 'no output'}")
        child.stdout.close()  # type: ignore[union-attr]
        return child.pid

    def adopt(self, child: subprocess.Popen, node: str, kind: str, argv: Sequence[str], port: int | None = None,
              log: str | None = None) -> None:
        """Record a process this lab started in `node`, so `down` stops it (after a crash too) and
        reaps it. For programs started through `ip netns exec`/`nsenter`/`unshare`, which exec: the
        child's PID is the program's."""
        self._children[child.pid] = child
        self.record_process(child.pid, node, kind, argv, port, log)

    def record_process(self, pid: int, node: str, kind: str, argv: Sequence[str], port: int | None = None,
                       log: str | None = None) -> None:
        """Record a process that a child of this lab started (e.g. firewalld's dbus-daemon)."""
        self._state.processes.append(Process(pid, host.proc_start(pid), node, kind, list(argv), port, log))
        self._state.save()

    def stop_server(self, pid: int) -> None:
        """Stop a process this lab started (by PID, only if it is still the same process)."""
        mine = [p for p in self._state.processes if p.pid == pid]
        if not mine:
            raise ValueError(f"PID {pid} was not started by lab {self.name}")
        netns.terminate([p.pid for p in mine if p.alive()])
        child = self._children.pop(pid, None)
        if child is not None:
            child.wait(timeout=5)
        self._state.processes = [p for p in self._state.processes if p.pid != pid]
        self._state.save()

    def processes(self) -> list[Process]:
        return list(self._state.processes)

    def server_log(self, pid: int) -> list[str]:
        """Lines a server logged: ``tcp <peer>``, ``udp <peer>``, ``https <peer> GET <path> <status>``."""
        for process in self._state.processes:
            if process.pid == pid and process.log and Path(process.log).exists():
                return Path(process.log).read_text().splitlines()
        return []

    # -- clients ----------------------------------------------------------------------------------

    def connect(self, node: str, host: str, port: int, source: str | None = None, timeout: float = 2.0,
                udp: bool = False, send: str = "", read: bool = True) -> ConnectResult:
        """One TCP connection (or UDP datagram) from `node`, optionally from `source`; never raises
        for network outcomes - see :class:`ConnectResult`. With read=False a TCP connection is closed
        as soon as it is established (for servers that wait for the client, such as TLS)."""
        args = ["connect", host, str(port), "--timeout", str(timeout)]
        if not read:
            args.append("--no-read")
        if source:
            args += ["--source", source]
        if udp:
            args.append("--udp")
        if send:
            args += ["--send", send]
        done = self.python(node, args, timeout=timeout + 10)
        return ConnectResult(**json.loads(done.stdout))

    def whoami(self, node: str, host: str, port: int, source: str | None = None,
               timeout: float = 2.0, udp: bool = False) -> str | None:
        """The peer address a whoami server saw, or None when the connection failed."""
        return self.connect(node, host, port, source=source, timeout=timeout, udp=udp).peer

    def https_get(self, node: str, host: str, port: int, path: str = "/version", *,
                  ca: str | Path | None = None, server_name: str | None = None, insecure: bool = False,
                  source: str | None = None, token: str | None = None,
                  timeout: float = 3.0) -> HttpsResult:
        """GET https://host:port/path from `node`, verifying against the lab CA unless told otherwise."""
        args = ["get", host, str(port), path, "--timeout", str(timeout)]
        if insecure:
            args.append("--insecure")
        else:
            args += ["--ca", str(ca or self.ca_file)]
        for flag, value in (("--server-name", server_name), ("--source", source), ("--token", token)):
            if value:
                args += [flag, value]
        done = self.python(node, args, timeout=timeout + 10)
        data = json.loads(done.stdout)
        return HttpsResult(ok=data["ok"], stage=data["stage"], reason=data["reason"], status=data["status"],
                           body=data["body"], detail=data.get("detail"))

    # -- firewalld in the relay -------------------------------------------------------------------

    def start_firewalld(self, timeout: float = 30.0, node: str = "relay") -> int:
        """Run firewalld in `node`, with a private D-Bus, mount namespace and /etc/firewalld."""
        from netfwd.lab import firewalld

        return firewalld.start(self, timeout, node)

    def _firewalld_pid(self, node: str = "relay") -> int:
        for process in self._state.processes:
            if process.kind == "firewalld" and process.node == node and process.alive():
                return process.pid
        raise EnvironmentProblem(f"firewalld is not running in lab {self.name}; call start_firewalld() first")

    def relay_exec_fw(self, argv: Sequence[str], check: bool = True, timeout: float | None = 60.0,
                      input: str | None = None, node: str = "relay") -> subprocess.CompletedProcess:  # noqa: A002
        """Run `argv` in the relay's network namespace *and* firewalld's mount namespace (its D-Bus)."""
        pid = self._firewalld_pid(node)
        return _run(["nsenter", "-t", str(pid), "-m", "-n", "--", *argv], check, timeout, input)

    def firewall_cmd(self, *args: str, check: bool = True, timeout: float | None = 60.0) -> subprocess.CompletedProcess:
        """``firewall-cmd ARGS`` against the relay's firewalld."""
        return self.relay_exec_fw(["firewall-cmd", *args], check=check, timeout=timeout)

    # -- status -----------------------------------------------------------------------------------

    def status(self, rules: bool = True) -> dict:
        """Namespaces, addresses, processes and (rules=True) what netfwd applied in the relay."""
        from netfwd.lab.status import collect

        return collect(self, rules)


# -- module helpers -------------------------------------------------------------------------------

def _child_env() -> dict[str, str]:
    env = host.child_env()
    env.pop("NETFWD_LAB_CRASH_AT", None)
    return env


def _run(argv: list[str], check: bool, timeout: float | None, input: str | None) -> subprocess.CompletedProcess:  # noqa: A002
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input,
                          env=_child_env(), stdin=None if input is not None else subprocess.DEVNULL)
    if check and done.returncode != 0:
        raise LabCommandError(done.returncode, argv, done.stdout, done.stderr)
    return done


def _read_line(child: subprocess.Popen, timeout: float) -> str:
    """The first line a child prints, or "" if it exits or stays silent for `timeout` seconds."""
    assert child.stdout is not None
    deadline = time.monotonic() + timeout
    data = b""
    fd = child.stdout.fileno()
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _claim(name: str | None, router: bool, onprem_route_back: bool, addrs: Addresses) -> LabState:
    """Create the state file exclusively, so two processes never build the same lab."""
    directory = lab_dir()
    try:
        folder = trust.open_dir(directory, create=DIR_MODE)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot create the lab state directory {directory}: {problem}") from None
    try:
        return _claim_in(folder, directory, name, router, onprem_route_back, addrs)
    finally:
        os.close(folder)


def _claim_in(folder: int, directory: Path, name: str | None, router: bool, onprem_route_back: bool,
              addrs: Addresses) -> LabState:
    for _ in range(50):
        candidate = name or secrets.token_hex(2)
        try:
            fd = os.open(f"{candidate}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o644,
                         dir_fd=folder)
        except FileExistsError:
            if name:
                raise InputError(f"a lab named {name!r} already exists (netfwd lab down --name {name})",
                                 field="name") from None
            continue
        os.close(fd)
        workdir = directory / candidate
        shutil.rmtree(workdir, ignore_errors=True)
        os.mkdir(candidate, 0o755, dir_fd=folder)
        state = LabState(candidate, router=router, onprem_route_back=onprem_route_back,
                         addrs=addrs.as_dict(), workdir=str(workdir))
        state.save()
        return state
    raise EnvironmentProblem(f"no free lab name in {directory}")


def destroy(name: str, children: dict[int, subprocess.Popen] | None = None) -> list[str]:
    """Tear down the lab recorded as `name`, from its state file alone. Returns what was removed."""
    trusted_lab_dir()
    path = state_path(name)
    if not path.exists():
        return []
    try:
        state = LabState.load(name)
    except (ValueError, TypeError, KeyError):
        state = LabState(name)  # empty or torn record (crash while claiming): nothing was created yet
        state.workdir = str(lab_dir() / name)
    removed: list[str] = []
    recorded = [p.pid for p in state.processes if p.alive()]
    # firewalld first, so it does not notice its D-Bus going away
    recorded.sort(key=lambda pid: 0 if any(p.pid == pid and p.kind == "firewalld" for p in state.processes) else 1)
    netns.terminate(recorded)
    removed += [f"pid {pid}" for pid in recorded]
    # anything else still running inside our namespaces (a helper a test left behind, dbus-daemon)
    strays = [pid for ns in state.namespaces for pid in netns.pids_in(ns)]
    netns.terminate(strays)
    removed += [f"pid {pid}" for pid in strays]
    for child in (children or {}).values():
        try:
            child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    for ns in state.namespaces:
        if netns.exists(ns):
            netns.remove(ns)
            removed.append(f"netns {ns}")
    workdir = Path(state.workdir) if state.workdir else None
    if workdir and workdir.parent == lab_dir() and workdir.name == name:
        shutil.rmtree(workdir, ignore_errors=True)
    path.unlink(missing_ok=True)
    return removed
