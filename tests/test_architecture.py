"""docs/architecture.md's recipes, each done once: a toy dialect, backend, doctor check, probe
finding, whitelist format and lab node, registered the way the recipe says and driven through the
same code paths the real ones take. If a recipe stops working, the map is wrong."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from netfwd import backends, dialects
from netfwd.backends.base import Backend, BaseBackend, Live
from netfwd.dialects.base import BaseDialect, Dialect
from netfwd.errors import UnsupportedByDialect
from netfwd.model import Essence, Spec
from netfwd.owned import rule_comment
from netfwd.spec import parse_spec

SPEC = """version: 1
cluster: toy
relay: {os: linux}
forwards:
  - {name: api, listen: {port: 16443}, to: {address: 192.168.10.5, port: 6443},
     allow: {cidrs: [203.0.113.0/24, 198.51.100.7/32]}}
  - {name: dns, protocol: udp, listen: {address: 10.0.0.1, port: 5353}, to: {address: 192.168.10.6, port: 53}}
"""


def register(monkeypatch, name: str, **attributes: object) -> str:
    """A module that exists only for this test (the recipes name a module path in a registry)."""
    module = types.ModuleType(f"toy_{name}")
    module.__dict__.update(attributes)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module.__name__


# -- a dialect: a module with DIALECT + one entry in netfwd/dialects/__init__.py MODULES ----------------

class ToyDialect(BaseDialect):
    """One line per forward; IPv4 only, so the shared capability check has something to refuse."""

    name, extension = "toy", "txt"
    families = frozenset({4})

    def render(self, spec: Spec) -> str:
        lines = self.header(spec, "apply")
        for forward in spec.forwards:
            e = forward.essence()
            sources = "any" if e.sources is None else ",".join(e.sources)
            lines.append(f"fwd {e.listen_address or '*'} {e.listen_port} {e.protocol} {e.to_address} "
                         f"{e.to_port} {int(e.masquerade)} {int(e.local)} {sources} "
                         f"{rule_comment(spec, forward.name)}")
        return "\n".join(lines) + "\n"

    def render_remove(self, spec: Spec) -> str:
        return "\n".join(self.header(spec, "remove") + [f"drop {rule_comment(spec, f.name)}"
                                                         for f in spec.forwards]) + "\n"

    def parse(self, text: str) -> list[Essence]:
        out = []
        for line in text.splitlines():
            if line.startswith("fwd "):
                _, listen, port, proto, to, to_port, masq, local, sources, _tag = line.split(" ")
                out.append(Essence(None if listen == "*" else listen, int(port), proto, to, int(to_port),
                                   masq == "1", local == "1", None if sources == "any" else tuple(sources.split(","))))
        return out


def test_recipe_dialect(monkeypatch):
    module = register(monkeypatch, "dialect", DIALECT=ToyDialect())
    monkeypatch.setitem(dialects.MODULES, "toy", (module, "linux"))
    dialect = dialects.get_dialect("toy")
    spec = parse_spec(SPEC)
    assert isinstance(dialect, Dialect)
    dialect.check(spec)
    assert dialect.parse(dialect.render(spec)) == dialect.expected(spec) and len(dialect.expected(spec)) == 2
    files = dialects.render_files(spec, [dialect])
    assert sorted(files) == ["toy.toy.remove.txt", "toy.toy.txt"]
    assert files["toy.toy.txt"].startswith("# netfwd ") and "netfwd:toy/dns" in files["toy.toy.remove.txt"]
    six = parse_spec(SPEC.replace("10.0.0.1", "fd00::1").replace("192.168.10.6", "fd00::6"))
    with pytest.raises(UnsupportedByDialect, match="IPv6"):
        dialect.check(six)


# -- a backend: a module with make(context) + one entry in netfwd/backends/__init__.py MODULES --------

class ToyBackend(BaseBackend):
    """Owned state kept in a dict: one canonical line per forward; no dry run, no generation
    counter, nothing to persist (BaseBackend's defaults)."""

    name = "toy"
    firewall: dict[str, str] = {}

    def __init__(self, context: backends.Context) -> None:
        self.context = context

    def check(self, spec: Spec) -> None:
        ToyDialect().check(spec)

    def read(self) -> Live:
        return Live(self.firewall.get("owned", ""))

    def desired(self, spec: Spec, live: Live) -> str:
        return "".join(line + "\n" for line in ToyDialect().render(spec).splitlines() if line.startswith("fwd "))

    def forwards(self, text: str) -> list[Essence]:
        return ToyDialect().parse(text)

    def write(self, target: str, live: Live) -> int:
        self.firewall["owned"] = target
        return 1


def test_recipe_backend(monkeypatch, tmp_path):
    from tests.engine.conftest import FakeRelay

    relay = FakeRelay(tmp_path)  # NETFWD_KERNEL: a stand-in for /proc/sys, nothing of the host changes
    for key, value in relay.env().items():
        monkeypatch.setenv(key, value)
    module = register(monkeypatch, "backend", make=ToyBackend)
    monkeypatch.setitem(backends.MODULES, "toy", (module, {}))
    monkeypatch.setattr(ToyBackend, "firewall", {})
    assert isinstance(backends.get_backend("toy", backends.Context(tmp_path, tmp_path)), Backend)
    from netfwd.engine.core import Engine

    spec = Path(relay.spec("one", ("api", 16443, "192.168.10.5"), ("etcd", 12379, "192.168.10.6")))
    engine = Engine(relay.state, relay.root, "toy", log=lambda message: None)
    plan = engine.plan(str(spec)).plan
    assert {(c.op, c.key) for c in plan.changes() if c.kind == "forward"} == {("+", "*:16443/tcp"), ("+", "*:12379/tcp")}
    assert engine.apply(str(spec)).changed and len(ToyBackend.firewall["owned"].splitlines()) == 2
    assert engine.plan(str(spec)).plan.in_sync
    engine.rollback()
    assert ToyBackend.firewall["owned"] == ""
    assert engine.apply(str(spec)).changed
    engine.remove()
    assert ToyBackend.firewall["owned"] == ""


# -- a doctor check: an object with name/group/doc/run in its group's CHECKS tuple ---------------------

class ToyCheck:
    name, group, doc = "toy-listen-ports", "relay", "no forward listens on a port below 1024"

    def run(self, ctx):
        from netfwd.doctor.framework import error, found

        spec = ctx.need_spec()
        low = [f for f in spec.forwards if f.listen.port < 1024]
        return found([error(f"forward {f.name} listens on port {f.listen.port}", "choose a port above 1023")
                      for f in low], f"{len(spec.forwards)} forward(s) listen above 1023")


def test_recipe_doctor_check(monkeypatch):
    from netfwd import doctor
    from netfwd.doctor import relay
    from netfwd.doctor.context import DoctorContext
    from netfwd.doctor.framework import parse_ignore, run_checks

    monkeypatch.setattr(relay, "CHECKS", (*relay.CHECKS, ToyCheck()))
    chosen = doctor.select(windows=False, cluster=False, audit=False, only=["toy-listen-ports"])
    assert [c.name for c in chosen] == ["toy-listen-ports"]
    good = run_checks(chosen, DoctorContext(spec=parse_spec(SPEC)))
    assert good.exit_code == 0 and good.result("toy-listen-ports").status == "ok"
    bad = DoctorContext(spec=parse_spec(SPEC.replace("port: 16443", "port: 443")))
    assert run_checks(chosen, bad).result("toy-listen-ports").status == "error"
    ignored = run_checks(chosen, bad, parse_ignore("toy-listen-ports", [c.name for c in doctor.all_checks()]))
    assert ignored.exit_code == 0 and ignored.result("toy-listen-ports").findings[0].ignored
    assert run_checks(chosen, DoctorContext()).result("toy-listen-ports").status == "skipped"  # no spec


# -- a probe finding: a code in diagnose.CODES + a rule in diagnose.RULES -----------------------------

def test_recipe_probe_finding(monkeypatch):
    from netfwd.probe import diagnose
    from netfwd.probe.model import Endpoint, Options, ProbeResult, Stage

    def slow_handshake(result, ep):
        tcp = result.stage("tcp")
        if tcp is not None and tcp.status == "ok" and tcp.elapsed_ms > 1000:
            return [diagnose.make("toy-slow-handshake", f"the handshake with {ep.dial} took {tcp.elapsed_ms:.0f} ms", ep)]
        return []

    monkeypatch.setitem(diagnose.CODES, "toy-slow-handshake", ("warning", "look at the path to {host} (port {port})"))
    monkeypatch.setattr(diagnose, "RULES", [*diagnose.RULES, slow_handshake])
    endpoint = Endpoint("10.0.1.1", 16443)
    slow = ProbeResult(endpoint, [Stage("resolve", "ok", "literal"), Stage("tcp", "ok", "syn-ack", 1500.0)])
    (finding,) = diagnose.diagnose(slow, Options())
    assert (finding.code, finding.severity, finding.fix) == ("toy-slow-handshake", "warning",
                                                             "look at the path to 10.0.1.1 (port 16443)")
    fast = ProbeResult(endpoint, [Stage("resolve", "ok", "literal"), Stage("tcp", "ok", "syn-ack", 5.0)])
    assert diagnose.diagnose(fast, Options()) == []


# -- a whitelist format: a reader module + one entry in netfwd/whitelist/sources/__init__.py FORMATS ---

def parse_toy(text: str, file: str, context=None):
    """`allow PORT ADDRESS` lines: one group per port."""
    from netfwd.errors import InputError
    from netfwd.firewall.addresses import parse_token
    from netfwd.firewall.model import Origin
    from netfwd.whitelist.model import Entry, Group, Parsed

    groups: dict[int, list[Entry]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("allow "):
            _, port, token = line.split()
            try:
                version, first, last = parse_token(token)
            except ValueError as problem:
                raise InputError(str(problem), file=file, line=number, field="address") from None
            groups.setdefault(int(port), []).append(Entry.single(version, first, last, token, Origin(file, number, line)))
    return Parsed("toy", file, tuple(Group(f"port {port}", tuple(entries), "tcp", port) for port, entries in groups.items()))


def test_recipe_whitelist_format(monkeypatch, tmp_path):
    from netfwd.catalog import load_catalog
    from netfwd.errors import InputError
    from netfwd.whitelist import sources
    from netfwd.whitelist.load import load
    from netfwd.whitelist.verify import verify

    monkeypatch.setitem(sources.FORMATS, "toy", (f"{__name__}:parse_toy", "`allow PORT ADDRESS` lines"))
    catalog = load_catalog()
    networks = [str(n) for n in catalog.region("cn-shanghai").networks]
    source = tmp_path / "toy.txt"
    source.write_text("".join(f"allow 16443 {n}\n" for n in networks) + f"allow 22 {networks[0]}\n")
    parsed = load(str(source), sources.Context(catalog=catalog), fmt="toy")
    report = verify(parsed, catalog, ["cn-shanghai"])
    coverage = {g.port: g.regions[0].status for g in report.groups}
    assert coverage == {16443: "covered", 22: "covered" if len(networks) == 1 else "partial"}
    source.write_text("allow 16443 300.1.2.3\n")
    with pytest.raises(InputError) as bad:
        load(str(source), sources.Context(catalog=catalog), fmt="toy")
    assert bad.value.line == 1 and bad.value.file == str(source)


# -- a lab node: its name in `nodes`, its namespace, links and addresses in `_build` -------------------

@pytest.mark.netns
def test_recipe_lab_node():
    from tests.labfixture import _need_root

    _need_root()
    from netfwd.lab import netns
    from netfwd.lab.core import Lab
    from netfwd.lab.state import ns_name

    class MonitorLab(Lab):
        """The basic lab plus `monitor`, on a link of its own to the relay (192.0.2.0/30: TEST-NET-1)."""

        @property
        def nodes(self) -> tuple[str, ...]:
            return (*super().nodes, "monitor")

        def _build(self) -> None:
            super()._build()
            self.record_namespace(ns_name(self.name, "monitor"))  # intent first: `down` removes it after a crash
            netns.create(self.ns("monitor"))
            netns.veth(self.ns("relay"), "mon0", self.ns("monitor"), "eth0")
            netns.configure(self.ns("relay"), {"mon0": ["192.0.2.1/30"]})
            netns.configure(self.ns("monitor"), {"eth0": ["192.0.2.2/30"]})

    lab = MonitorLab.up()
    try:
        lab.start_server("relay", 8080)
        assert lab.whoami("monitor", "192.0.2.1", 8080) == "192.0.2.2"
        monitor = lab.ns("monitor")
        assert netns.exists(monitor)
    finally:
        lab.down()
    assert not netns.exists(monitor)


# -- the import graph: no cycle between netfwd's packages; the model imports only errors -------------

def _package_graph() -> dict[str, set[str]]:
    """netfwd.X -> the netfwd.Y it imports (X, Y: a top-level module or subpackage), every import
    statement counted, lazy ones inside functions and TYPE_CHECKING blocks included."""
    import ast

    root = Path(__file__).resolve().parent.parent / "netfwd"
    units = {p.stem for p in root.glob("*.py")} | {p.name for p in root.iterdir() if (p / "__init__.py").exists()}

    def unit(module: str) -> str | None:
        parts = module.split(".")
        return f"netfwd.{parts[1]}" if parts[0] == "netfwd" and len(parts) > 1 and parts[1] in units else None

    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = ".".join(parts[:-1])
        source = unit(module) or module
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for name in names:
                target = unit(name)
                if target is not None and target != source:
                    graph.setdefault(source, set()).add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_packages():
    assert _cycles(_package_graph()) == []


def test_the_model_imports_nothing_of_netfwd_but_errors():
    assert _package_graph().get("netfwd.model", set()) <= {"netfwd.errors"}


def test_the_cycle_check_can_fail():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
