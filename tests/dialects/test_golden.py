"""Golden files: every bundled example rendered by every dialect for its relay OS.

Golden files catch unintended changes in output; behaviour is tested elsewhere (traffic through
namespaces, parse round-trips, shellcheck). Refresh after an intended change with
`NETFWD_UPDATE_GOLDEN=1 scripts/test tests/dialects/test_golden.py`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from netfwd.dialects import dialects_for
from netfwd.spec import load_spec

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).resolve().parents[1] / "golden"
EXAMPLES = sorted(p for p in (REPO / "rules").glob("*.yaml") if p.name != "regions.yaml")


def _cases():
    for example in EXAMPLES:
        spec = load_spec(example)
        for dialect in dialects_for(spec.relay.os):
            yield pytest.param(example, dialect, id=f"{example.stem}-{dialect.name}")


def _rendered(example: Path, dialect) -> dict[str, str]:
    spec = load_spec(example.relative_to(REPO))  # a relative origin keeps headers machine-independent
    base = f"{spec.cluster}.{dialect.name}"
    return {f"{base}.{dialect.extension}": dialect.render(spec),
            f"{base}.remove.{dialect.extension}": dialect.render_remove(spec)}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


@pytest.mark.parametrize("example,dialect", list(_cases()))
def test_output_matches_golden_file(example, dialect):
    for name, text in _rendered(example, dialect).items():
        golden = GOLDEN / example.stem / name
        if os.environ.get("NETFWD_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text, newline="")
        assert golden.exists(), f"missing {golden}: run with NETFWD_UPDATE_GOLDEN=1"
        assert golden.read_bytes().decode() == text, f"{name} differs from {golden}"


@pytest.mark.parametrize("example,dialect", list(_cases()))
def test_render_then_parse_gives_back_the_forwards(example, dialect):
    spec = load_spec(example)
    assert dialect.parse(dialect.render(spec)) == dialect.expected(spec)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("example,dialect", [c for c in _cases() if c.values[1].extension == "sh"])
def test_bash_scripts_pass_shellcheck(example, dialect, tmp_path):
    for name, text in _rendered(example, dialect).items():
        script = tmp_path / name
        script.write_text(text)
        result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(script)],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
