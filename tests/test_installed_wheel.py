"""netfwd installed from its wheel, outside the checkout: every command works, nothing reaches for the repo.

The wheel is built from a copy of the sources (so the build writes nothing into the checkout), then
installed without dependencies into a fresh venv in a temporary directory; the dependencies come
from this venv's site-packages through a `.pth` line (offline and fast; `.pth` files of that
directory, such as the editable install's finder, are not processed, so the checkout's netfwd is
not importable there). Every command then runs from that venv with the temporary directory as its
working directory and no PYTHONPATH: a smoke case each, the root ones (`lab`, and `plan`, `apply`,
`status`, `confirm`, `rollback`, `remove` inside a lab's relay namespace) as root.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from netfwd.lab.state import ns_name

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("example.yaml", "example-multi.yaml", "example-windows.yaml")
ROOT_COMMANDS = {"lab", "plan", "apply", "status", "confirm", "rollback", "remove"}


class Installed:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.venv = base / "venv"
        self.work = base / "work"

    @property
    def site(self) -> Path:
        return Path(subprocess.run([str(self.venv / "bin" / "python"), "-c",
                                    "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())

    def run(self, *args: str, expect: int | None = 0, env: dict[str, str] | None = None,
            timeout: int = 120) -> subprocess.CompletedProcess:
        clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run([str(self.venv / "bin" / "netfwd"), *args], capture_output=True, text=True,
                              cwd=self.work, env={**clean, **(env or {})}, timeout=timeout)
        if expect is not None:
            assert done.returncode == expect, f"netfwd {' '.join(args)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    base = tmp_path_factory.mktemp("installed")
    source = base / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "netfwd", source / "netfwd", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(base / "dist"),
                    str(source)], check=True, capture_output=True, cwd=base)
    (wheel,) = (base / "dist").glob("netfwd-*.whl")
    found = Installed(base)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(found.venv)], check=True)
    subprocess.run([*pip, "--python", str(found.venv / "bin" / "python"), "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, cwd=base)
    (found.site / "netfwd-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    found.work.mkdir()
    return found


def test_the_installed_package_is_the_one_that_runs(installed):
    where = subprocess.run([str(installed.venv / "bin" / "python"), "-c", "import netfwd; print(netfwd.__file__)"],
                           capture_output=True, text=True, check=True, cwd=installed.work,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"}).stdout.strip()
    assert Path(where).is_relative_to(installed.venv) and not Path(where).is_relative_to(REPO)
    for name in EXAMPLES:  # the bundled examples ship as package data
        assert (installed.site / "netfwd" / "data" / "examples" / name).read_bytes() == (REPO / "rules" / name).read_bytes()


def test_bundled_examples_equal_the_repositorys_rules():
    """rules/ is the human-facing copy of the examples the package ships."""
    for name in EXAMPLES:
        assert (REPO / "netfwd" / "data" / "examples" / name).read_bytes() == (REPO / "rules" / name).read_bytes()
    shipped = sorted(p.name for p in (REPO / "netfwd" / "data" / "examples").glob("*.yaml"))
    assert shipped == sorted(EXAMPLES)


def test_every_command_without_root(installed):
    examples = installed.site / "netfwd" / "data" / "examples"
    spec, windows = str(examples / "example.yaml"), str(examples / "example-windows.yaml")
    assert installed.run("--version").stdout.strip().endswith("0.1.0")
    assert json.loads(installed.run("schema").stdout)["type"] == "object"
    assert "cn-hangzhou" in installed.run("regions").stdout
    assert installed.run("validate", spec).returncode == 0
    installed.run("render", spec, "--dialect", "all", "--out", "out")
    assert sorted(p.name for p in (installed.work / "out").iterdir())  # scripts written, relative to the cwd
    installed.run("render", windows, "--dialect", "all", "--out", "win")  # the shipped Windows example too
    assert {p.suffix for p in (installed.work / "win").iterdir()} == {".cmd", ".ps1"}
    assert installed.run("whitelist", "render", "--regions", "cn-hangzhou", "--dialect", "list").stdout.strip()
    assert "audit.k8s.io/v1" in installed.run("audit", "policy").stdout
    reports = REPO / "tests" / "fixtures" / "windows" / "reports"
    installed.run("doctor", str(reports / "relay.yaml"), "--windows-report", str(reports / "healthy.json"))
    probed = installed.run("probe", "--via", "127.0.0.1:9", "--target", "127.0.0.1:9", "--timeout", "1",
                           "-o", "json", expect=1)  # loopback, nothing listens on 9: unreachable, said so
    assert json.loads(probed.stdout)
    assert "_NETFWD_COMPLETE=bash_complete" in installed.run("completion", "bash").stdout
    offline = REPO / "tests" / "fixtures" / "explain"
    traced = installed.run("explain", "--ruleset", str(offline / "relay-iptables-save.txt"), "--routes",
                           str(offline / "routes.json"), "--local", "10.1.1.1@ext0", "--local", "10.2.2.1@int0",
                           "--src", "10.1.1.7", "--dst", "10.1.1.1", "--dport", "16443", "-o", "json")
    assert json.loads(traced.stdout)["to"] == {"address": "10.2.2.2", "port": 6443}
    bad = installed.run("validate", "missing.yaml", expect=2)
    assert "missing.yaml" in bad.stderr


def test_every_command_is_smoke_tested():
    """The two smoke tests here cover every top-level command the CLI has."""
    from netfwd.cli import COMMANDS

    text = Path(__file__).read_text()
    untested = [name for name in COMMANDS if name not in ROOT_COMMANDS and f'installed.run("{name}"' not in text]
    assert untested == []


@pytest.mark.netns
def test_root_commands_in_a_lab(installed, tmp_path):
    env = {"NETFWD_LAB_DIR": str(tmp_path / "labs"), "NETFWD_ROOT": str(tmp_path / "root"),
           "NETFWD_STATE_DIR": str(tmp_path / "state")}
    (tmp_path / "root").mkdir()
    demo = installed.run("lab", "demo", "-o", "json", env=env, timeout=300)  # the bundled example
    assert json.loads(demo.stdout)["ok"]
    no_sources = installed.run("lab", "up", "--userland", "centos7", env=env, expect=3)  # a wheel has no vendor/
    assert "needs a netfwd source checkout" in no_sources.stderr and no_sources.stderr.count("\n") == 1
    up = json.loads(installed.run("lab", "up", "-o", "json", env=env).stdout)
    name = up["name"]
    try:
        relay = ns_name(name, "relay")
        spec = str(installed.site / "netfwd" / "data" / "examples" / "example.yaml")
        on = ["--netns", relay, "--backend", "nft"]
        installed.run("lab", "status", "--name", name, env=env)
        installed.run("lab", "exec", "--name", name, "relay", "--", "true", env=env)
        installed.run("plan", spec, *on, env=env, expect=4)
        installed.run("apply", spec, *on, "--yes", "--confirm-timeout", "60", env=env)
        installed.run("confirm", *on, env=env)
        assert json.loads(installed.run("status", *on, "--output", "json", env=env).stdout)
        installed.run("rollback", *on, env=env)
        installed.run("apply", spec, *on, "--yes", env=env)
        installed.run("remove", *on, env=env)
    finally:
        installed.run("lab", "down", "--name", name, env=env, expect=None)
    assert not (tmp_path / "labs").exists() or list((tmp_path / "labs").iterdir()) == []
