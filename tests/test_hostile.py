"""The hostile-input corpus (tests/hostile/, index tests/hostile/EXPECT) through the real CLI.

Every case runs every command that reads its kind of input, in-process (`netfwd.cli.main`) with
NETFWD_ROOT, NETFWD_STATE_DIR and the working directory pointed at empty directories. Each must
end with its expected exit code; bad input as ONE line naming the file (and the line and field
the index gives), with nothing on stdout, no traceback, and nothing written anywhere. Inputs that
are accepted as data ("inert") must not get a raw control character to the terminal. A sample runs
as real processes, and the apply-type commands run against a network namespace made here, which
must stay without any netfwd rule.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from netfwd.cli import main

REPO = Path(__file__).resolve().parent.parent
HOSTILE = REPO / "tests" / "hostile"
RELAY_WINDOWS = REPO / "tests" / "fixtures" / "windows" / "reports" / "relay.yaml"
# Raw control characters (not \n), C1 controls, bidi overrides/isolates and zero-width characters.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class Case:
    path: str  # relative to tests/hostile
    exit: int
    line: str | None = None
    field: str | None = None
    format: str | None = None
    inert: bool = False
    absent: tuple[str, ...] = ()
    patch: int | None = None  # `audit patch` fixes what `audit check` finds: its own exit code

    @property
    def kind(self) -> str:
        return self.path.split("/")[0]

    @property
    def file(self) -> Path:
        return HOSTILE / self.path


def load_cases() -> list[Case]:
    cases = []
    for raw in (HOSTILE / "EXPECT").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        path, *words = raw.split()
        options: dict = {}
        for word in words:
            if word == "inert":
                options["inert"] = True
            else:
                key, _, value = word.partition("=")
                options[key] = tuple(value.split(",")) if key == "absent" else value
        options["exit"] = int(options["exit"])
        if "patch" in options:
            options["patch"] = int(options["patch"])
        cases.append(Case(path, **options))
    return cases


CASES = load_cases()


def commands(case: Case, file: str, out: Path) -> list[list[str]]:
    """Every command that reads this kind of input, reading `file`."""
    if case.kind == "spec":
        return [["validate", file], ["render", file, "--dialect", "all", "--out", str(out)]]
    if case.kind == "catalog":
        return [["regions", "--catalog", file, "-o", "json"],
                ["whitelist", "render", "--regions", "all", "--catalog", file, "--dialect", "list"]]
    if case.kind == "whitelist":
        fmt = ["--format", case.format] if case.format else []
        return [["whitelist", "verify", "--regions", "cn-hangzhou", "--against", file, "--local-networks", "none",
                 *fmt]]
    if case.kind == "winreport":
        return [["doctor", str(RELAY_WINDOWS), "--windows-report", file]]
    if case.kind == "manifest":
        return [["audit", "check", file], ["audit", "patch", file, "--cluster-id", "c1"],
                ["doctor", "--manifest", file, "--only", "audit-manifest"]]
    if case.kind == "policy":
        return [["doctor", "--audit-policy", file, "--only", "audit-policy", "--k8s-version", "1.28"]]
    raise AssertionError(f"no in-process command for {case.kind}")


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Empty NETFWD_ROOT, NETFWD_STATE_DIR and working directory; returns them."""
    places = {name: tmp_path / name for name in ("root", "state", "cwd")}
    for path in places.values():
        path.mkdir()
    monkeypatch.setenv("NETFWD_ROOT", str(places["root"]))
    monkeypatch.setenv("NETFWD_STATE_DIR", str(places["state"]))
    monkeypatch.chdir(places["cwd"])
    return places


def run(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(args)
    captured = capsys.readouterr()
    code = done.value.code
    return (0 if code is None else code), captured.out, captured.err


def expected_exit(case: Case, args: list[str]) -> int:
    return case.patch if args[:2] == ["audit", "patch"] and case.patch is not None else case.exit


def check_outcome(case: Case, file: str, code: int, out: str, err: str, args: list[str]) -> None:
    """What every run must satisfy, whatever the command."""
    what = f"netfwd {' '.join(args)}"
    assert "Traceback" not in out + err, f"{what}\n{err}"
    wanted = expected_exit(case, args)
    assert code == wanted, f"{what}: exit {code}, expected {wanted}\n{out[-2000:]}\n{err}"
    assert not RAW.search(out) and not RAW.search(err), f"{what}: raw control characters reach the terminal: " \
                                                         f"{RAW.findall(out + err)[:5]}"
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, f"{what}: not one line:\n{err}"
        assert out == "", f"{what}: printed something for bad input:\n{out[:500]}"
        message = lines[0]
        assert message.startswith(f"netfwd: error: {file}"), f"{what}: the error does not name the file: {message}"
        if case.line:
            assert message.startswith(f"netfwd: error: {file}:{case.line}: "), f"{what}: not line {case.line}: {message}"
        if case.field:
            assert f": {case.field}: " in message, f"{what}: does not name field {case.field}: {message}"


def assert_empty(*directories: Path) -> None:
    for directory in directories:
        left = sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))
        assert left == [], f"{directory} is not empty: {left}"


# -- the corpus, in-process ------------------------------------------------------------------------

def test_corpus_is_large_and_covers_every_input_kind():
    kinds = {c.kind for c in CASES}
    assert kinds == {"spec", "catalog", "whitelist", "winreport", "manifest", "policy", "probe-list"}
    assert len(CASES) >= 80
    on_disk = {str(p.relative_to(HOSTILE)) for p in HOSTILE.glob("*/*") if p.parent.name != "__pycache__"}
    assert on_disk == {c.path for c in CASES}, "EXPECT and the files differ: run python -m tests.hostile.make_corpus"


def test_security_doc_shows_the_corpus_counts():
    from tests.hostile.make_corpus import table

    assert table() in (REPO / "docs" / "security.md").read_text(encoding="utf-8"), \
        "docs/security.md: paste the output of `python -m tests.hostile.make_corpus --table`"


@pytest.mark.parametrize("case", [c for c in CASES if c.kind != "probe-list"], ids=lambda c: c.path)
def test_hostile_input_is_refused_cleanly_or_inert(case, sandbox, capsys):
    file = str(case.file)
    out_dir = sandbox["cwd"] / "out"
    for args in commands(case, file, out_dir):
        code, out, err = run(args, capsys)
        check_outcome(case, file, code, out, err, args)
        if case.inert and (args[:2] in (["whitelist", "verify"], ["audit", "check"]) or args[0] == "doctor"):
            for fmt, parse in (("json", json.loads), ("junit", ElementTree.fromstring)):
                code, out, err = run([*args, "-o", fmt], capsys)
                check_outcome(case, file, code, out, err, args)
                parse(out)  # machine-readable output stays valid with hostile values inside
        if args[0] == "render" and case.exit == 0:
            rendered = "".join(p.read_text() for p in out_dir.iterdir())
            for text in case.absent:
                assert text not in rendered, f"{text!r} reached a rendered script"
            for path in out_dir.iterdir():
                path.unlink()
            out_dir.rmdir()
    assert_empty(sandbox["root"], sandbox["state"], sandbox["cwd"])


# -- 10 MB inputs, made here (too large to commit) -------------------------------------------------

TEN_MB = 10 * 1024 * 1024


def _padded(comment: str, last: str, tail: str = "") -> tuple[str, int]:
    """~10 MB of comment lines, then `last` (the line that is wrong), then `tail`."""
    line = f"{comment} padding padding padding padding padding padding padding padding\n"
    count = TEN_MB // len(line) + 1
    return line * count + last + "\n" + tail, count + 1


@pytest.mark.parametrize("kind", ["spec", "catalog", "whitelist", "manifest", "policy", "winreport"])
def test_ten_megabyte_inputs(kind, sandbox, capsys, tmp_path):
    big = tmp_path / f"big-{kind}.txt"
    if kind in ("spec", "catalog"):  # both refuse anything over 8 MB before parsing
        text, _ = _padded("#", "version: 1")
        case = Case(f"{kind}/big", 2)
    elif kind == "whitelist":  # 256 MB are allowed (a million-rule dump): it is parsed, to its last line
        text, line = _padded("#", "$(reboot)")
        case = Case("whitelist/big", 2, line=str(line), field="entry")
    elif kind == "manifest":  # refused before parsing (kubeadm's is 4 KB)
        text, _ = _padded("#", "kind: Pod")
        case = Case("manifest/big", 2)
    elif kind == "policy":  # refused before parsing, like the manifest
        text, _ = _padded("#", "kind: Policy")
        case = Case("policy/big", 2)
    else:  # a report with a 10 MB string is read (a report is not size-limited) and the string stays data
        text = '{"netfwd_windows_report": 1, "computer": "' + "\u202e$(reboot)" * (TEN_MB // 10) + '"}'
        case = Case("winreport/big", 1, inert=True)
    big.write_text(text, encoding="utf-8")
    assert big.stat().st_size >= TEN_MB
    for args in commands(case, str(big), sandbox["cwd"] / "out"):
        code, out, err = run(args, capsys)
        check_outcome(case, str(big), code, out, err, args)
        assert len(out) + len(err) < 1_000_000, "the report echoes the 10 MB value"
    assert_empty(sandbox["root"], sandbox["state"], sandbox["cwd"])


@pytest.mark.parametrize("args", [["validate", "/dev/zero"], ["regions", "--catalog", "/dev/zero"],
                                  ["audit", "check", "/dev/zero"],
                                  ["doctor", str(RELAY_WINDOWS), "--windows-report", "/dev/zero"],
                                  ["audit", "patch", "/dev/zero", "--cluster-id", "c0a1b2c3"],
                                  ["probe", "--targets-file", "/dev/zero"],
                                  ["doctor", str(REPO / "rules" / "example.yaml"), "--cluster", "--audit-policy", "/dev/zero",
                                   "--via", "127.0.0.1:1"]],
                         ids=lambda a: "-".join(a[:2]))
def test_endless_input_is_refused_after_a_bounded_read(args, sandbox, capsys):
    code, out, err = run(args, capsys)
    assert code == 2 and out == "" and err.startswith("netfwd: error: /dev/zero: is larger than"), err


# -- real processes, and the commands that change a firewall ---------------------------------------

def netfwd_process(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "netfwd", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO), **env})


SAMPLE = ["spec/name-newline.yaml", "spec/alias-bomb.yaml", "catalog/name-rtl.yaml", "whitelist/list-nul.txt",
          "whitelist/nft-json-deep.json", "winreport/port-infinity.json", "manifest/duplicate-containers.yaml",
          "policy/alias-bomb.yaml", "winreport/hostile-strings.json"]


@pytest.mark.parametrize("path", SAMPLE)
def test_real_process_sample(path, tmp_path):
    case = next(c for c in CASES if c.path == path)
    places = {name: tmp_path / name for name in ("root", "state", "cwd")}
    for place in places.values():
        place.mkdir()
    env = {"NETFWD_ROOT": str(places["root"]), "NETFWD_STATE_DIR": str(places["state"])}
    for args in commands(case, str(case.file), places["cwd"] / "out"):
        done = netfwd_process(args, env, places["cwd"])
        check_outcome(case, str(case.file), done.returncode, done.stdout, done.stderr, args)
    assert_empty(*places.values())


@pytest.fixture
def namespace():
    """A network namespace of our own (unique name), always deleted."""
    name = f"nf-hostile-{secrets.token_hex(4)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def firewall_of(namespace: str) -> str:
    """Everything a netfwd rule could show up in, inside `namespace`."""
    parts = []
    for command in (["nft", "list", "ruleset"], ["iptables-nft-save"], ["iptables-legacy-save"],
                    ["sysctl", "-n", "net.ipv4.ip_forward"]):
        done = subprocess.run(["ip", "netns", "exec", namespace, *command], capture_output=True, text=True,
                              timeout=30)
        parts.append(done.stdout)
    return "\n".join(parts)


APPLY_SAMPLE = ["spec/name-subst.yaml", "spec/interface-newline.yaml", "spec/to_address-scope.yaml",
                "spec/port-octal.yaml", "spec/alias-bomb.yaml", "spec/raw-nul-byte.yaml", "spec/empty.yaml",
                "spec/cidr-host-bits.yaml"]


@pytest.mark.netns
def test_apply_type_commands_change_nothing_on_bad_input(namespace, tmp_path):
    """plan, apply (with and without commit-confirm) and remove SPEC: exit 2 before touching the
    namespace's firewall, its sysctls, NETFWD_ROOT or the state directory."""
    places = {name: tmp_path / name for name in ("root", "state", "cwd")}
    for place in places.values():
        place.mkdir()
    env = {"NETFWD_ROOT": str(places["root"]), "NETFWD_STATE_DIR": str(places["state"])}
    before = firewall_of(namespace)
    assert "netfwd" not in before.lower()
    for path in APPLY_SAMPLE:
        case = next(c for c in CASES if c.path == path)
        file = str(case.file)
        for args in (["plan", file, "--netns", namespace], ["apply", file, "--netns", namespace, "--yes"],
                     ["apply", file, "--netns", namespace, "--yes", "--confirm-timeout", "30"],
                     ["remove", file, "--netns", namespace]):
            done = netfwd_process(args, env, places["cwd"])
            check_outcome(case, file, done.returncode, done.stdout, done.stderr, args)
            assert_empty(*places.values())
    assert firewall_of(namespace) == before


@pytest.mark.netns
@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "probe-list"], ids=lambda c: c.path)
def test_probe_target_lists(case, namespace, tmp_path):
    """Run inside a namespace of our own: were a hostile target accepted, nothing could leave it."""
    env = {"NETFWD_ROOT": str(tmp_path), "NETFWD_STATE_DIR": str(tmp_path)}
    args = ["probe", "--targets-file", str(case.file), "--netns", namespace, "--timeout", "0.2", "--no-locate"]
    done = netfwd_process(args, env, tmp_path)
    check_outcome(case, str(case.file), done.returncode, done.stdout, done.stderr, args)
    assert list(tmp_path.iterdir()) == []
