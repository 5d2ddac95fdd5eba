"""Facts about a Linux relay, read (never changed) in the current network namespace or a named one.

Every fact is read once, on first use, and cached: a doctor run starts a handful of short
processes (one batch read of /proc, `ip -j` for addresses and routes, the iptables/nft dumps,
conntrack). Commands run inside the namespace with `ip netns exec`; files
that belong to the relay's disk (sysctl.d) are read under `root`, so tests never read the host's.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from netaddr import IPAddress, IPNetwork

from netfwd import host
from netfwd.host import Socket
from netfwd.errors import EnvironmentProblem, InputError

TIMEOUT = 15.0
_SEP = "@@netfwd-doctor@@"
PROC_FILES = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding",
              "/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6",
              "/proc/net/ip_tables_names", "/proc/net/ip6_tables_names")
RP_GLOB = "/proc/sys/net/ipv4/conf/*/rp_filter"
CONF_GLOBS = (RP_GLOB, "/proc/sys/net/ipv6/conf/*/accept_ra", "/proc/sys/net/ipv6/conf/*/forwarding")
RTPROT_RA = 9  # the route protocol of routes the kernel learned from router advertisements ("proto ra")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")


@dataclass(frozen=True, slots=True)
class Route:
    """The kernel's answer to `ip route get DST`: where a packet to DST leaves, or why it cannot."""

    destination: str
    interface: str | None = None
    gateway: str | None = None
    source: str | None = None
    problem: str | None = None  # "network unreachable", "blackhole route", ...

    def __str__(self) -> str:
        if self.problem:
            return f"{self.destination}: {self.problem}"
        via = f" via {self.gateway}" if self.gateway else ""
        src = f" src {self.source}" if self.source else ""
        return f"{self.destination}{via} dev {self.interface}{src}"


class LinuxRelay:
    """The relay as the checks see it. `netns=None` reads the current network namespace."""

    def __init__(self, netns: str | None = None, root: str | Path = "/", force_pyroute2: bool = False) -> None:
        if netns is not None:
            host.check_netns(netns)
            if not (host.NETNS_RUN / netns).exists():
                raise InputError(f"no network namespace {netns!r} (see `ip netns list`)", field="--netns")
        self.netns = netns
        self.root = Path(root)
        self.force_pyroute2 = force_pyroute2
        self._ipr: Any = None
        self._routes: dict[str, Route] = {}

    @property
    def where(self) -> str:
        return f"network namespace {self.netns}" if self.netns else "this host"

    # -- running things -----------------------------------------------------------------------
    def run(self, argv: list[str], timeout: float = TIMEOUT) -> subprocess.CompletedProcess | None:
        """Run a read-only command inside the namespace; None when the tool is not installed."""
        return host.run(argv, self.netns, timeout, env=dict(os.environ, LC_ALL="C"))

    @cached_property
    def proc(self) -> dict[str, str | None]:
        """Namespace-scoped /proc files (sysctls, sockets), read in one process: path -> text or None."""
        script = (f'for f in "$@" {" ".join(CONF_GLOBS)}; do printf "%s %s\\n" {_SEP} "$f"; '
                  f'cat "$f" 2>/dev/null || printf "%s missing\\n" {_SEP}; done')
        if self.netns is None:
            files = list(PROC_FILES) + sorted(str(p) for pattern in CONF_GLOBS for p in Path("/").glob(pattern[1:]))
            return {f: _read_or_none(f) for f in files}
        done = self.run(["sh", "-c", script, "sh", *PROC_FILES])
        if done is None or done.returncode != 0:
            raise EnvironmentProblem(f"cannot read /proc in {self.where}: {done.stderr.strip() if done else 'no sh'}")
        out: dict[str, str | None] = {}
        current: str | None = None
        chunks: list[str] = []
        for line in done.stdout.splitlines(keepends=True):
            if line.startswith(_SEP + " "):
                rest = line[len(_SEP) + 1:].rstrip("\n")
                if rest == "missing" and current is not None:
                    out[current] = None
                    current = None
                    continue
                if current is not None:
                    out[current] = "".join(chunks)
                current, chunks = rest, []
            else:
                chunks.append(line)
        if current is not None:
            out[current] = "".join(chunks)
        return out

    def sysctl(self, key: str) -> str | None:
        text = self.proc.get("/proc/sys/" + key.replace(".", "/"))
        return None if text is None else text.strip()

    @cached_property
    def rp_filter(self) -> dict[str, int]:
        """rp_filter per interface name (and 'all', 'default')."""
        values = {}
        for path, text in self.proc.items():
            if path.endswith("/rp_filter") and text is not None and text.strip().isdigit():
                values[path.split("/")[-2]] = int(text.strip())
        return values

    @cached_property
    def ipv6_conf(self) -> dict[str, dict[str, str]]:
        """net.ipv6.conf.NAME.{accept_ra,forwarding} per interface name (and 'all', 'default');
        read from the paths, as interface names may hold dots."""
        values: dict[str, dict[str, str]] = {}
        for path, text in self.proc.items():
            parts = path.split("/")
            if path.startswith("/proc/sys/net/ipv6/conf/") and len(parts) == 8 and text is not None:
                values.setdefault(parts[-2], {})[parts[-1]] = text.strip()
        return values

    # -- addresses and routes ------------------------------------------------------------------
    # `ip -j` (iproute2's JSON, ~3 ms a call) is the netlink reader: importing pyroute2 alone costs
    # 0.5-0.8 s, a third of doctor's 2 s budget. pyroute2 is the fallback when iproute2 is missing.
    def _ip(self, args: list[str]) -> tuple[Any, str]:
        """(parsed JSON or None, stderr) of `ip -j [-n NETNS] ARGS`."""
        argv = ["ip", "-j"] + (["-n", self.netns] if self.netns else []) + args
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False,
                                  env=dict(os.environ, LC_ALL="C"))
        except (OSError, subprocess.TimeoutExpired) as problem:
            raise EnvironmentProblem(f"`{' '.join(argv)}` failed: {problem}") from None
        if done.returncode != 0:
            return None, done.stderr.strip()
        try:
            return json.loads(done.stdout or "[]"), ""
        except json.JSONDecodeError:
            return None, "unreadable `ip -j` output"

    def _netlink(self) -> Any:
        if self._ipr is None:
            try:
                from pyroute2 import IPRoute, NetNS
            except ImportError as missing:
                raise EnvironmentProblem(f"neither iproute2 (`ip`) nor pyroute2 is installed ({missing})") from None
            try:
                self._ipr = NetNS(self.netns) if self.netns else IPRoute()
            except Exception as problem:  # noqa: BLE001 - pyroute2 raises many kinds
                raise EnvironmentProblem(f"cannot open a netlink socket in {self.where}: {problem}") from None
        return self._ipr

    @property
    def use_pyroute2(self) -> bool:
        return self.force_pyroute2 or shutil.which("ip") is None

    def close(self) -> None:
        if self._ipr is not None:
            try:
                self._ipr.close()
            finally:
                self._ipr = None

    @cached_property
    def interfaces(self) -> dict[str, list[IPNetwork]]:
        """Interface name -> its addresses (with prefix length)."""
        if self.use_pyroute2:
            ipr = self._netlink()
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            found: dict[str, list[IPNetwork]] = {name: [] for name in names.values()}
            for addr in ipr.get_addr():
                name = names.get(addr["index"])
                value = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
                if name is not None and value:
                    found.setdefault(name, []).append(IPNetwork(f"{value}/{addr['prefixlen']}"))
            return found
        data, problem = self._ip(["addr", "show"])
        if data is None:
            raise EnvironmentProblem(f"cannot list the addresses of {self.where}: {problem}")
        return {link["ifname"]: [IPNetwork(f"{a['local']}/{a['prefixlen']}") for a in link.get("addr_info", [])
                                 if "local" in a] for link in data}

    def interface_of(self, address: IPAddress) -> str | None:
        for name, nets in self.interfaces.items():
            if any(net.ip == address for net in nets):
                return name
        return None

    @cached_property
    def local_addresses(self) -> list[IPAddress]:
        return [net.ip for nets in self.interfaces.values() for net in nets]

    def route(self, destination: IPAddress | str) -> Route:
        """`ip route get DESTINATION`: a lookup in the namespace's routing tables (no packet is sent)."""
        key = str(destination)
        if key not in self._routes:
            self._routes[key] = self._route_pyroute2(key) if self.use_pyroute2 else self._route_ip(key)
        return self._routes[key]

    def _route_ip(self, key: str) -> Route:
        data, problem = self._ip(["route", "get", key])
        if data is None:
            reason = problem.removeprefix("RTNETLINK answers: ").lower() or "no answer"
            reason = {"invalid argument": "blackhole route", "permission denied": "prohibit route"}.get(reason, reason)
            return Route(key, problem=f"no route ({reason})")
        answer = data[0] if data else {}
        if answer.get("type") not in (None, "unicast", "local"):
            return Route(key, problem=f"{answer['type']} route")
        return Route(key, answer.get("dev"), answer.get("gateway"), answer.get("prefsrc"))

    def _route_pyroute2(self, key: str) -> Route:
        ipr = self._netlink()
        try:
            answer = ipr.route("get", dst=key)[0]
        except Exception as problem:  # noqa: BLE001 - NetlinkError carries errno in .code
            code = getattr(problem, "code", None)
            reason = {101: "network is unreachable", 113: "no route to host", 13: "prohibit route",
                      22: "blackhole route"}.get(code or 0, str(problem))
            return Route(key, problem=f"no route ({reason})")
        kind = answer.get("type", 1)
        if kind not in (1, 2):  # unicast, local
            return Route(key, problem={6: "blackhole route", 7: "unreachable route",
                                       8: "prohibit route"}.get(kind, f"route type {kind}"))
        oif = answer.get_attr("RTA_OIF")
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        return Route(key, names.get(oif), answer.get_attr("RTA_GATEWAY"), answer.get_attr("RTA_PREFSRC"))

    @cached_property
    def default_interface(self) -> str | None:
        if self.use_pyroute2:
            ipr = self._netlink()
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for route in ipr.get_routes(family=2, table=254):
                if route["dst_len"] == 0 and route.get_attr("RTA_OIF"):
                    return names.get(route.get_attr("RTA_OIF"))
            return None
        data, _problem = self._ip(["-4", "route", "show", "default"])
        for route in data or []:
            if route.get("dev"):
                return route["dev"]
        return None

    @cached_property
    def ra_default_interfaces(self) -> list[str]:
        """Interfaces an IPv6 default route learned from router advertisements (proto ra) leaves by."""
        if self.use_pyroute2:
            ipr = self._netlink()
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            found = set()
            for route in ipr.get_routes(family=10, table=254):
                if route["dst_len"] != 0 or route["proto"] != RTPROT_RA:
                    continue
                found.add(names.get(route.get_attr("RTA_OIF")))
                found |= {names.get(hop["oif"]) for hop in route.get_attr("RTA_MULTIPATH") or []}
            return sorted(name for name in found if name)
        data, _problem = self._ip(["-6", "route", "show", "default", "proto", "ra"])
        found = set()
        for route in data or []:
            found |= {hop.get("dev") for hop in [route, *route.get("nexthops", [])]}
        return sorted(name for name in found if name)

    # -- sockets --------------------------------------------------------------------------------
    @cached_property
    def sockets(self) -> list[Socket]:
        """Listening TCP sockets and bound UDP sockets, from /proc/net/{tcp,udp}{,6} of the namespace."""
        return host.listening_sockets(self.proc.get)

    def socket_owner(self, inode: int) -> str | None:
        """'name (PID n)' of the process holding socket `inode`, or None."""
        return host.socket_owner(inode)

    # -- firewall dumps -------------------------------------------------------------------------
    @cached_property
    def iptables_version(self) -> tuple[str, str] | None:
        """(version, variant) of the `iptables` command: ("1.8.9", "nf_tables"), or None when missing."""
        done = self.run(["iptables", "-V"])
        if done is None:
            return None
        match = re.search(r"v(\d+(?:\.\d+)*)(?:\s+\((\w+)\))?", done.stdout + done.stderr)
        if not match:
            return None
        return match.group(1), match.group(2) or "legacy"

    @cached_property
    def saves(self) -> dict[str, dict[int, str]]:
        """{"nft": {4: text, 6: text}, "legacy": {...}}: iptables-save of each backend that has tables."""
        out: dict[str, dict[int, str]] = {}
        variant = self.iptables_version[1] if self.iptables_version else None
        for backend, tools in (("nft", {4: "iptables-nft-save", 6: "ip6tables-nft-save"}),
                               ("legacy", {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"})):
            for version, tool in tools.items():
                if backend == "legacy" and not (self.proc.get(
                        f"/proc/net/ip{'6' if version == 6 else ''}_tables_names") or "").strip():
                    continue  # no legacy table exists: asking would only load the modules
                if shutil.which(tool) is None and variant == ("nf_tables" if backend == "nft" else "legacy"):
                    tool = "ip6tables-save" if version == 6 else "iptables-save"
                done = self.run([tool])
                if done is not None and done.returncode == 0 and done.stdout.strip():
                    out.setdefault(backend, {})[version] = done.stdout
        return out

    @cached_property
    def compat_tables(self) -> set[tuple[str, str]]:
        """(nft family, table) of the tables iptables-nft made: read through iptables-nft-save."""
        found = set()
        for version, text in self.saves.get("nft", {}).items():
            family = "ip" if version == 4 else "ip6"
            found |= {(family, t) for t in IPTABLES_TABLES if f"\n*{t}" in "\n" + text}
        return found

    @cached_property
    def nft_objects(self) -> list[dict] | None:
        """`nft -j` objects of the native nftables tables (iptables-nft's own tables are listed by name
        only: they are read through iptables-nft-save, and nft's JSON of them is slow); None when nft
        is missing or fails."""
        tables = self._nft_json(["list", "tables"])
        if tables is None:
            return None
        objects: list[dict] = []
        for item in tables:
            table = item.get("table")
            if not isinstance(table, dict):
                continue
            key = (table.get("family"), table.get("name"))
            if key in self.compat_tables:
                objects.append(item)
                continue
            listed = self._nft_json(["list", "table", str(key[0]), str(key[1])])
            objects += [o for o in listed or [] if "metainfo" not in o]
        return objects

    def _nft_json(self, args: list[str]) -> list[dict] | None:
        done = self.run(["nft", "-j", *args])
        if done is None or done.returncode != 0:
            return None
        try:
            doc = json.loads(done.stdout or "{}")
        except json.JSONDecodeError:
            return None
        items = doc.get("nftables", []) if isinstance(doc, dict) else []
        return [item for item in items if isinstance(item, dict)]

    @cached_property
    def conntrack(self) -> str | None:
        """`conntrack -L` output (all protocols), None when conntrack-tools is missing or fails."""
        done = self.run(["conntrack", "-L"])
        if done is None or done.returncode != 0:
            return None
        return done.stdout

    # -- processes ------------------------------------------------------------------------------
    def processes_named(self, name: str) -> list[int]:
        """PIDs of processes called `name` (comm or argv[0]/argv[1] basename) in this network namespace."""
        try:
            mine = os.stat(f"/run/netns/{self.netns}") if self.netns else os.stat("/proc/self/ns/net")
        except OSError:
            return []
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                comm = (proc / "comm").read_text().strip()
                argv = (proc / "cmdline").read_bytes().split(b"\0")[:2]
                names = {comm} | {os.path.basename(a.decode(errors="replace")) for a in argv if a}
                if name not in names:
                    continue
                ns = os.stat(proc / "ns" / "net")
            except OSError:
                continue
            if (ns.st_dev, ns.st_ino) == (mine.st_dev, mine.st_ino):
                pids.append(int(proc.name))
        return pids


def _read_or_none(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None
