"""Shell completion through click: each shell's script is produced, and completes a subcommand and a spec path.

bash runs for real: the script `netfwd completion bash` prints is sourced and its completion function
called the way bash calls it (COMP_WORDS/COMP_CWORD), which runs netfwd with click's protocol
(`_NETFWD_COMPLETE=bash_complete`); COMPREPLY is what bash would offer. fish runs for real when it is
installed (`complete -C`); zsh (and fish otherwise) through click's protocol for that shell.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from netfwd.commands.completion import COMPLETE_VAR, SHELLS

BIN = Path(sys.executable).parent  # the venv's bin: `netfwd` is there


@pytest.fixture
def specs(tmp_path) -> Path:
    (tmp_path / "relay.yaml").write_text("version: 1\n")
    (tmp_path / "notes.txt").write_text("not a spec\n")
    (tmp_path / "clusters").mkdir()
    (tmp_path / "clusters" / "east.yml").write_text("version: 1\n")
    return tmp_path


def netfwd(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "netfwd"), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=60, check=True)


@pytest.mark.parametrize("shell", SHELLS)
def test_each_shells_script_is_produced(shell):
    script = netfwd("completion", shell).stdout
    assert script == netfwd(env={COMPLETE_VAR: f"{shell}_source"}).stdout  # the command is click's own script
    marker = {"bash": "complete -o nosort -F _netfwd_completion netfwd", "zsh": "#compdef netfwd",
              "fish": "complete --no-files --command netfwd"}[shell]
    assert marker in script and f"{COMPLETE_VAR}={shell}_complete" in script


def bash_complete(script: Path, words: list[str], cwd: Path) -> list[str]:
    line = " ".join(f"'{w}'" for w in words)
    program = (f"source {script}\nCOMP_WORDS=({line})\nCOMP_CWORD={len(words) - 1}\n"
               "_netfwd_completion netfwd\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}, timeout=60)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    return [w for w in done.stdout.splitlines() if w]


def test_bash_completes_a_subcommand_an_option_and_a_spec_path(specs, tmp_path_factory):
    script = tmp_path_factory.mktemp("completion") / "netfwd.bash"
    script.write_text(netfwd("completion", "bash").stdout)
    assert bash_complete(script, ["netfwd", "va"], specs) == ["validate"]
    assert {"render", "regions"} <= set(bash_complete(script, ["netfwd", "re"], specs))
    assert bash_complete(script, ["netfwd", "render", "--dia"], specs) == ["--dialect"]
    # spec paths: YAML files and the directories on the way, nothing else
    assert bash_complete(script, ["netfwd", "validate", ""], specs) == ["clusters/", "relay.yaml"]
    assert bash_complete(script, ["netfwd", "apply", "clusters/"], specs) == ["clusters/east.yml"]
    assert bash_complete(script, ["netfwd", "lab", "demo", "--spec", "re"], specs) == ["relay.yaml"]


def protocol(shell: str, words: list[str], cwd: Path) -> list[str]:
    """What netfwd answers a shell's completion script (click's env var protocol for that shell)."""
    cword = words[-1] if shell == "fish" else str(len(words) - 1)
    out = netfwd(env={COMPLETE_VAR: f"{shell}_complete", "COMP_WORDS": " ".join(words), "COMP_CWORD": cword},
                 cwd=cwd).stdout
    if shell == "zsh":  # type, value, help: three lines per item
        lines = out.splitlines()
        return [lines[i + 1] for i in range(0, len(lines) - 2, 3)]
    return [line.split(",", 1)[1].split("\t")[0] for line in out.splitlines()]


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_complete_a_subcommand_and_a_spec_path(shell, specs, tmp_path_factory):
    if shell == "fish" and shutil.which("fish"):
        script = tmp_path_factory.mktemp("completion") / "netfwd.fish"
        script.write_text(netfwd("completion", "fish").stdout)

        def complete(words):
            done = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C '{' '.join(words)}'"],
                                  capture_output=True, text=True, cwd=specs, timeout=60,
                                  env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"})
            return [line.split("\t")[0] for line in done.stdout.splitlines()]
    else:
        def complete(words):
            return protocol(shell, words, specs)
    assert complete(["netfwd", "va"]) == ["validate"]
    assert complete(["netfwd", "validate", "re"]) == ["relay.yaml"]
    assert complete(["netfwd", "doctor", "clusters/"]) == ["clusters/east.yml"]
