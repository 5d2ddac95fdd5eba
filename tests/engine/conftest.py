"""A relay with no kernel: the fake backend's file firewall plus a stand-in for /proc/sys.

Engine tests built on it need neither root nor namespaces, and change nothing of the host."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from netfwd.engine.core import Engine
from netfwd.engine.state import cluster_dir

SPEC = """version: 1
cluster: c1
relay: {{os: linux}}
forwards:
{forwards}"""
FORWARD = "  - {{name: {name}, listen: {{port: {port}}}, to: {{address: {to}, port: 6443}}}}\n"


class FakeRelay:
    """Paths of one kernel-less relay and helpers to write specs and read its 'firewall'."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.firewall, self.kernel = base / "firewall", base / "kernel"
        self.state, self.root = cluster_dir(base / "state", "c1"), base / "root"  # the spec's cluster
        for folder in (self.firewall, self.kernel / "sys/net/ipv4", self.root):
            folder.mkdir(parents=True)
        (self.kernel / "sys/net/ipv4/ip_forward").write_text("0\n")

    def env(self) -> dict[str, str]:
        return {"NETFWD_FAKE_FIREWALL": str(self.firewall), "NETFWD_KERNEL": str(self.kernel)}

    def engine(self, **options) -> Engine:
        return Engine(self.state, self.root, "fake", log=lambda message: None, **options)

    def spec(self, name: str, *forwards: tuple[str, int, str]) -> str:
        body = "".join(FORWARD.format(name=n, port=p, to=t) for n, p, t in forwards)
        path = self.base / f"{name}.yaml"
        path.write_text(SPEC.format(forwards=body))
        return str(path)

    def rules(self) -> str:
        path = self.firewall / "owned.txt"
        return path.read_text() if path.exists() else ""

    def tamper(self, text: str) -> None:
        """Someone else changes the firewall: like any kernel commit, it moves the generation."""
        (self.firewall / "owned.txt").write_text(text)
        generation = self.firewall / "generation"
        count = int(generation.read_text()) if generation.exists() else 0
        generation.write_text(f"{count + 1}\n")

    def ip_forward(self) -> str:
        return (self.kernel / "sys/net/ipv4/ip_forward").read_text().strip()

    def run(self, code: str, **env: str) -> subprocess.CompletedProcess:
        """Run engine code in a child process (crash points SIGKILL their own process)."""
        prelude = ("from pathlib import Path\nfrom netfwd.engine.core import Engine\n"
                   f"engine = Engine(Path({str(self.state)!r}), Path({str(self.root)!r}), 'fake')\n")
        return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True,
                              env={**os.environ, **self.env(), **env}, timeout=60)


@pytest.fixture
def relay(tmp_path, monkeypatch) -> FakeRelay:
    fake = FakeRelay(tmp_path)
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NETFWD_FAKE_FAIL", raising=False)
    return fake


@pytest.fixture
def relay_for(make_lab, tmp_path, request):
    """``relay_for(backend, userland="modern")``: a lab relay (firewalld running for that backend)
    driven like `netfwd apply --netns` (tests/engine/test_apply_netns.py's Relay)."""
    import shutil

    from tests.engine.test_apply_netns import Relay

    def factory(backend: str, userland: str = "modern") -> Relay:
        if backend == "firewalld" and not Path("/usr/sbin/firewalld").exists() and not shutil.which("firewalld"):
            pytest.skip("firewalld is not installed")
        if userland == "centos7":
            request.getfixturevalue("centos7_userland")
        return Relay(make_lab(firewalld=backend == "firewalld", userland=userland), backend, tmp_path)
    return factory
