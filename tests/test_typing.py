"""mypy holds on netfwd/ at the level docs/architecture.md states ("Typing"): plain mypy everywhere,
`--strict`'s flags on the protocol and base modules. The configuration is pyproject.toml's
[tool.mypy]; this test runs it, so a change that breaks the types fails the suite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def strict_modules() -> list[str]:
    """The files pyproject.toml gives --strict's flags (the override with disallow_untyped_defs)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    (override,) = [o for o in config["overrides"] if o.get("disallow_untyped_defs")]
    files = []
    for module in override["module"]:
        path = ROOT / module.replace(".", "/")
        files.append(str((path / "__init__.py") if path.is_dir() else path.with_suffix(".py")))
    return files


def mypy(*args: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy")
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_mypy_is_clean_on_netfwd():
    done = mypy()  # files and flags: pyproject.toml
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


@pytest.mark.slow
def test_the_protocol_and_base_modules_pass_mypy_strict():
    files = strict_modules()
    assert "netfwd/model.py" in " ".join(files) and "netfwd/backends/base.py" in " ".join(files)
    done = mypy("--strict", "--follow-imports=silent", *files)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_would_catch_a_broken_protocol(tmp_path):
    """The check can fail: a backend whose write returns a string is refused by the protocol."""
    bad = tmp_path / "bad.py"
    bad.write_text("from netfwd.backends.base import Backend, BaseBackend, Live\n"
                   "class Bad(BaseBackend):\n"
                   "    name = 'bad'\n"
                   "    def check(self, spec): ...\n"
                   "    def read(self) -> Live: return Live('')\n"
                   "    def desired(self, spec, live) -> str: return ''\n"
                   "    def forwards(self, text): return []\n"
                   "    def write(self, target: str, live: Live) -> str: return 'done'\n"
                   "backend: Backend = Bad()\n")
    done = mypy("--follow-imports=silent", str(bad))
    assert done.returncode == 1 and "write" in done.stdout, done.stdout + done.stderr


@pytest.mark.slow
def test_every_registered_dialect_and_backend_satisfies_its_protocol_statically(tmp_path):
    from netfwd import backends, dialects

    lines = ["from netfwd.backends.base import Backend", "from netfwd.dialects.base import Dialect", "import importlib"]
    for index, (module, _) in enumerate(dialects.MODULES.values()):
        lines += [f"import {module}", f"d{index}: Dialect = {module}.DIALECT"]
    for index, module in enumerate(sorted({module for module, _ in backends.MODULES.values()})):
        lines += [f"import {module}", f"b{index}: Backend = {module}.make(None)  # type: ignore[arg-type]"]
    check = tmp_path / "protocols.py"
    check.write_text("\n".join(lines) + "\n")
    done = mypy("--follow-imports=silent", str(check))
    assert done.returncode == 0, done.stdout + done.stderr
