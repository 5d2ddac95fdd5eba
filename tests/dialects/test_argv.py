"""What the rendered scripts really run: argv, exactly, for fuzzed valid specs.

Bash dialects: every script passes shellcheck (one batched call), then runs under bash with a PATH
of stubs (tests/hostile/stubtool.sh) that record each call's argv (and its stdin, or the file
`nft -f` reads) as one JSON line. The calls must be exactly the ones the spec calls for, each value
one argv word, and what reached iptables, iptables-restore, nft or firewall-cmd must read back as
the spec's forwards. The scripts run in a new, empty network namespace, with NETFWD_ROOT in a
temporary directory: were a real tool reached, it would change nothing of the host.

cmd and PowerShell: the scripts go through the tokenizers of their quoting rules
(netfwd.dialects.cmdsyntax / pssyntax) and the netsh and New-NetFirewallRule calls must carry
exactly the spec's values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd import owned, xtables
from netfwd.dialects import cmdsyntax, get_dialect, pssyntax
from netfwd.dialects.firewalld import parse_rich_rules
from netfwd.dialects.nft import parse_ruleset
from netfwd.dialects.shell import sysctl_keys
from tests.linux_specs import linux_specs
from tests.windows_helpers import HOSTILE, windows_specs

REPO = Path(__file__).resolve().parents[2]
STUB = REPO / "tests" / "hostile" / "stubtool.sh"
STUBBED = ["iptables", "iptables-save", "iptables-restore", "nft", "firewall-cmd", "sysctl", "ip", "conntrack",
           "systemctl", "id"]
REAL = ["bash", "cat", "mv", "rm", "mkdir", "chmod", "dirname", "mktemp", "grep", "awk", "sort", "tr", "sed",
        "head", "tail", "cut", "env", "uname", "stat", "readlink", "ln", "rmdir", "comm"]
UNSHARE = shutil.which("unshare") or "unshare"
LINUX_DIALECTS = ["iptables", "iptables-restore", "nft", "firewalld"]
SPECS = {  # what each dialect can express (the others refuse: tested in their own modules)
    "iptables": linux_specs(families=(4,)), "iptables-restore": linux_specs(families=(4,)),
    "nft": linux_specs(families=(4, 6)), "firewalld": linux_specs(families=(4, 6), local=False),
}
SCALE = float(os.environ.get("NETFWD_FUZZ_SCALE", "1"))  # scripts/fuzz runs many more
FUZZ = settings(max_examples=int(20 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                       HealthCheck.function_scoped_fixture])

pytestmark = pytest.mark.skipif(shutil.which("shellcheck") is None or os.geteuid() != 0,
                                reason="needs shellcheck, and root for a private network namespace")


# -- running a script with stubs -------------------------------------------------------------------

@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory) -> Path:
    return make_stub_bin(tmp_path_factory.mktemp("stub-bin"))


def make_stub_bin(folder: Path) -> Path:
    """A directory that is the whole PATH: the stubs, and the few real tools scripts use to get by."""
    for name in STUBBED:
        (folder / name).symlink_to(STUB)
    for name in REAL:
        real = shutil.which(name)
        assert real, f"{name} is needed to run the scripts"
        (folder / name).symlink_to(real)
    return folder


@dataclasses.dataclass
class Run:
    status: int
    stderr: str
    calls: list[dict]
    root: Path

    def argv(self, program: str) -> list[list[str]]:
        return [c["argv"][1:] for c in self.calls if c["argv"][0] == program]


def run_script(text: str, stub_bin: Path, work: Path, firewalld: bool = False, **stub_env: str) -> Run:
    """`text` under bash, in a new network namespace, with only the stubs on PATH."""
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    script, log = work / "script.sh", work / "argv.jsonl"
    script.write_text(text)
    log.touch()
    env = {"PATH": str(stub_bin), "NETFWD_ROOT": str(root), "NETFWD_ARGV_LOG": str(log),
           "STUB_FIREWALLD": "running" if firewalld else "stopped", "HOME": str(work), "LC_ALL": "C.UTF-8",
           "TMPDIR": str(work), **stub_env}
    done = subprocess.run([UNSHARE, "--net", str(stub_bin / "bash"), str(script)], env=env, capture_output=True,
                          text=True, timeout=60, cwd=work)
    calls = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert "command not found" not in done.stderr, done.stderr
    return Run(done.returncode, done.stderr, calls, root)


# -- the oracles: what each dialect's apply script must have run ------------------------------------

def check_common(spec, run: Run, allowed: set[str]) -> None:
    assert run.status == 0, run.stderr
    used = {c["argv"][0] for c in run.calls}
    assert used <= allowed, f"unexpected programs: {used - allowed}"
    writes = [argv for argv in run.argv("sysctl") if argv[:1] != ["-n"]]  # reading the old value is no write
    assert writes == [["-q", "-w", f"{key}=1"] for key in sysctl_keys(spec)]
    persisted = (run.root / owned.sysctl_file(spec.cluster)).read_text().splitlines()
    assert persisted[1:] == [f"{key} = 1" for key in sysctl_keys(spec)]
    assert [p.name for p in (run.root / "etc" / "sysctl.d").iterdir()] == [owned.sysctl_file(spec.cluster).rsplit("/", 1)[1]]


def check_iptables(spec, run: Run) -> None:
    check_common(spec, run, {"id", "iptables", "iptables-save", "iptables-restore", "firewall-cmd", "sysctl"})
    assert run.argv("firewall-cmd") == [["--state"]]
    check_probe_and_test(spec, run)
    calls = run.argv("iptables")
    assert all(argv[:2] == ["-w", "5"] for argv in calls)
    appended = [argv[2:] for argv in calls if "-A" in argv]
    rules = xtables.ruleset(spec)
    assert appended == [["-t", r.table, "-A", r.chain, *r.args] for r in rules]
    # read back independently of how it was written: the forwards of the spec, no more, no less
    lines = [xtables.Rule(a[1], a[3], tuple(a[4:])).save_line() for a in appended]
    assert xtables.parse_save("\n".join(lines)) == get_dialect("iptables").expected(spec)
    for forward in spec.forwards:
        tagged = [a for a in appended if f"netfwd:{spec.cluster}/{forward.name}" in a]
        dnat = [a for a in tagged if a[a.index("-j") + 1] == "DNAT"]
        assert len(dnat) == len(forward.sources or [None]) + (1 if forward.local else 0)
        assert all(a[a.index("--to-destination") + 1] == f"{forward.to.address}:{forward.to.port}" for a in dnat)
    created = [a[2:] for a in calls if "-N" in a]
    assert sorted(created) == sorted(["-t", t, "-N", c] for t, cs in xtables.chains(spec.cluster).items() for c in cs)
    jumps = [a[2:] for a in calls if "-I" in a]
    assert jumps == [["-t", t, "-I", b, "1", "-j", o] for t, b, o in xtables.jumps(spec.cluster)]


def check_probe_and_test(spec, run: Run) -> list[dict]:
    """Both iptables scripts: probe the wait flags, then --test the whole payload, before any write."""
    restores = [c for c in run.calls if c["argv"][0] == "iptables-restore"]
    assert [c["argv"][1:] for c in restores[:2]] == [["--test", "--noflush", "-w", "5"]] * 2
    assert [c.get("input") for c in restores[:2]] == [None, xtables.restore_payload(spec)]
    first_write = next(i for i, c in enumerate(run.calls) if c["argv"][:2] == ["sysctl", "-q"])
    assert run.calls.index(restores[1]) < first_write
    assert ["-w", "5", "-t", "nat", "-S"] in run.argv("iptables")  # the probe of `-w` with seconds
    return restores


def check_iptables_restore(spec, run: Run) -> None:
    check_common(spec, run, {"id", "iptables", "iptables-save", "iptables-restore", "firewall-cmd", "sysctl"})
    restores = check_probe_and_test(spec, run)
    assert [c["argv"][1:] for c in restores[2:]] == [["--noflush", "-w", "5"]]
    payload = xtables.restore_payload(spec)
    assert [c["input"] for c in restores[2:]] == [payload]
    assert xtables.parse_save(payload) == get_dialect("iptables-restore").expected(spec)
    assert not [a for a in run.argv("iptables") if "-A" in a]  # every rule went through the transaction


# netfwd's prerouting chain before the change: two old forwards whose connections must be forgotten
OLD_NFT = """table inet netfwd {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\ttcp dport 1 dnat ip to 10.9.9.9:80 comment "netfwd:old/a"
\t\tip6 daddr 2001:db8::1 udp dport 53 dnat ip6 to [fd00::9]:5353 comment "netfwd:old/b"
\t}
}"""
FORGET = [["-D", "-f", "ipv4", "-p", "tcp", "--orig-port-dst", "1", "--reply-src", "10.9.9.9", "--reply-port-src", "80"],
          ["-D", "-f", "ipv6", "-p", "udp", "--orig-port-dst", "53", "--reply-src", "fd00::9", "--reply-port-src",
           "5353", "--orig-dst", "2001:db8::1"]]


def check_nft(spec, run: Run) -> None:
    check_common(spec, run, {"nft", "firewall-cmd", "sysctl", "id", "conntrack"})
    assert run.argv("conntrack") == FORGET  # old targets (none of them a spec's) lose their NAT mappings
    loads = [c for c in run.calls if c["argv"][:2] == ["nft", "-f"]]
    assert len(loads) == 1
    ruleset = loads[0]["input"]
    assert parse_ruleset(ruleset) == get_dialect("nft").expected(spec)
    assert (run.root / owned.nft_file(spec.cluster)).read_text() == ruleset
    others = [argv for argv in run.argv("nft") if argv[0] != "-f"]
    assert others[0] == ["-v"]  # its version, probed before anything else
    assert all(argv[0] == "list" for argv in others[1:]), others  # the rest only reads


def check_firewalld(spec, run: Run) -> None:
    check_common(spec, run, {"firewall-cmd", "sysctl", "ip", "id"})
    calls = run.argv("firewall-cmd")
    rules, ipsets, entries = [], {}, {}
    for argv in calls:
        words = [w for w in argv if w not in ("-q", "--permanent")]
        for word in words:
            if word.startswith("--add-rich-rule="):
                rules.append(word.split("=", 1)[1])
            elif word.startswith("--new-ipset="):
                ipsets[word.split("=", 1)[1]] = argv
        if words and words[0].startswith("--ipset="):
            name = words[0].split("=", 1)[1]
            entries.setdefault(name, []).extend(w.split("=", 1)[1] for w in words[1:]
                                                if w.startswith("--add-entry="))
    assert set(entries) <= set(ipsets)
    text = "\n".join(rules + [line for name, found in entries.items() for line in (name, f"entries: {' '.join(found)}")])
    assert parse_rich_rules(text) == get_dialect("firewalld").expected(spec)
    assert all(rule.startswith("rule family=") and "\n" not in rule for rule in rules)
    if spec.forwards:  # new ipsets reach the runtime only through a reload
        assert ["--reload"] in [[w for w in argv if w != "-q"] for argv in calls]


CHECKS = {"iptables": check_iptables, "iptables-restore": check_iptables_restore, "nft": check_nft,
          "firewalld": check_firewalld}


@pytest.mark.parametrize("dialect_name", LINUX_DIALECTS)
def test_scripts_run_exactly_the_expected_commands(dialect_name, stub_bin, tmp_path):
    dialect = get_dialect(dialect_name)

    @FUZZ
    @given(SPECS[dialect_name])
    def check(spec):
        before = {"STUB_NFT_PREROUTING": OLD_NFT} if dialect_name == "nft" else {}
        run = run_script(dialect.render(spec), stub_bin, tmp_path / "apply", firewalld=dialect_name == "firewalld",
                         **before)
        CHECKS[dialect_name](spec, run)
        removed = run_script(dialect.render_remove(spec), stub_bin, tmp_path / "remove",
                             firewalld=dialect_name == "firewalld")
        assert removed.status == 0, removed.stderr
        # nothing is created by a remove script: only reads, deletes and flushes
        for call in removed.calls:
            argv = call["argv"]
            assert not {"-A", "-I", "-N"} & set(argv) and not any(w.startswith(("--add-", "--new-")) for w in argv)
            if argv[:2] == ["nft", "-f"]:  # the create-then-delete idiom: gone whether it existed or not
                assert [w.split()[0] for w in call["input"].splitlines() if w.strip()] == ["table", "delete"], call

    check()


@settings(max_examples=int(3 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(st.tuples(*(SPECS[name] for name in LINUX_DIALECTS)))
def test_every_script_passes_shellcheck(tmp_path_factory, specs):
    """One shellcheck run over the apply and remove scripts of a spec per dialect."""
    folder = tmp_path_factory.mktemp("shellcheck")
    seen: set[str] = set()
    for name, spec in zip(LINUX_DIALECTS, specs):
        dialect = get_dialect(name)
        for kind, text in (("apply", dialect.render(spec)), ("remove", dialect.render_remove(spec))):
            body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
            if body in seen:  # remove scripts hardly depend on the spec: check each text once
                continue
            seen.add(body)
            (folder / f"{name}.{kind}.sh").write_text(text)
    done = subprocess.run(["shellcheck", "--shell=bash", "--format=gcc", *sorted(map(str, folder.iterdir()))],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("value", [*HOSTILE, "a\nb", "$(reboot)", "'; reboot; '"])
def test_iptables_quoting_holds_even_for_names_validation_would_refuse(value, stub_bin, tmp_path):
    """Defence in depth: names are validated to [A-Za-z0-9._-], but were one not, the iptables
    dialect's quoting still delivers it to iptables as one argument."""
    spec = _plain_spec()
    forward = dataclasses.replace(spec.forwards[0])
    object.__setattr__(forward, "name", value)
    hostile = dataclasses.replace(spec, forwards=(forward,))
    object.__setattr__(hostile, "cluster", value)
    run = run_script(get_dialect("iptables").render(hostile), stub_bin, tmp_path / "run")
    comments = [argv[argv.index("--comment") + 1] for argv in run.argv("iptables") if "--comment" in argv]
    assert set(comments) == {f"netfwd:{value}/{value}"}


def _plain_spec():
    from netfwd.spec import parse_spec

    return parse_spec("version: 1\ncluster: c\nrelay: {interface: eth0}\nforwards:\n - name: a\n   listen: {port: 16443}\n"
                      "   to: {address: 192.168.10.5, port: 6443}\n   allow: {cidrs: [203.0.113.0/24, 198.51.100.7]}\n")


# -- cmd and PowerShell, through their tokenizers ----------------------------------------------------

def expected_portproxy(spec) -> list[list[str]]:
    """`interface portproxy add ...` words for each forward, from the spec alone."""
    out = []
    for f in spec.forwards:
        listen_version = f.listen.address.version if f.listen.address is not None else 4
        out.append(["interface", "portproxy", "add", f"v{listen_version}tov{f.to.address.version}",
                    f"listenport={f.listen.port}", f"listenaddress={f.listen.address or '*'}",
                    f"connectaddress={f.to.address}", f"connectport={f.to.port}", "protocol=tcp"])
    return out


def sources_of(forward) -> set[str]:
    return {str(n) for n in forward.sources} if forward.sources is not None else {"any"}


@FUZZ
@given(windows_specs())
def test_netsh_commands_carry_exactly_the_spec(spec):
    commands = [c for c in cmdsyntax.tokenize(get_dialect("netsh").render(spec)) if c.kind == "exec"]
    netsh = [c.argv[1:] for c in commands if c.name == "netsh"]
    assert [argv for argv in netsh if argv[:3] == ["interface", "portproxy", "add"]] == expected_portproxy(spec)
    rules: dict[str, dict[str, set[str]]] = {}
    for argv in netsh:
        if argv[:4] != ["advfirewall", "firewall", "add", "rule"]:
            continue
        pairs = dict(word.split("=", 1) for word in argv[4:])  # each word ONE key=value: nothing split or joined
        assert len(pairs) == len(argv) - 4
        rule = rules.setdefault(pairs["name"], {"remoteip": set()})
        rule["remoteip"] |= set(pairs["remoteip"].split(","))
        rule.update({k: {v} for k, v in pairs.items() if k != "remoteip"})
    assert set(rules) == {f"netfwd {spec.cluster} {f.name}" for f in spec.forwards}
    for f in spec.forwards:
        rule = rules[f"netfwd {spec.cluster} {f.name}"]
        assert rule["localport"] == {str(f.listen.port)} and rule["dir"] == {"in"} and rule["action"] == {"allow"}
        assert rule["remoteip"] == sources_of(f)
        assert rule.get("localip") == (None if f.listen.address is None else {str(f.listen.address)})


@FUZZ
@given(windows_specs())
def test_powershell_commands_carry_exactly_the_spec(spec):
    commands = pssyntax.commands(get_dialect("powershell").render(spec))
    adds = [c.args for c in commands if c.call_operator and c.name == "netsh.exe" and c.args[:3] == [
        "interface", "portproxy", "add"]]
    assert adds == expected_portproxy(spec)
    created = [c.params() for c in commands if c.name == "New-NetFirewallRule"]
    assert [p["name"] for p in created] == [f"netfwd {spec.cluster} {f.name}" for f in spec.forwards]
    for params, f in zip(created, spec.forwards):
        remote = params["remoteaddress"]
        assert set(remote if isinstance(remote, list) else [remote]) == (
            {str(n) for n in f.sources} if f.sources is not None else {"Any"})
        assert params["localport"] == str(f.listen.port)
        assert params.get("localaddress") == (None if f.listen.address is None else str(f.listen.address))
