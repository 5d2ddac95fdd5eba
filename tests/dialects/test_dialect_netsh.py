"""The netsh dialect (.cmd): what the script does to a Windows relay, read back through a tokenizer
that implements cmd's parsing phases and a model of the portproxy/firewall state.

No Windows runs here, so behaviour is checked by executing the script's success path against
:class:`WindowsState` (netsh add duplicates firewall rules and refuses duplicate port proxies, as
Windows does), and safety by tokenizing every emitted line the way cmd and the C runtime would.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd.dialects import cmdsyntax as cmd
from netfwd.dialects import get_dialect
from netfwd.dialects.cmdrun import MODEL_ENV
from netfwd.dialects.netsh import DIALECT
from netfwd.dialects.winbase import FirewallRule, WindowsState
from netfwd.errors import InputError, UnsupportedByDialect
from netfwd.spec import load_spec
from netfwd.windows import parse_excluded_ranges
from tests.windows_helpers import (HOSTILE, NOT_REPRESENTABLE, example_spec, forward, hostile_names,
                                   windows_spec, windows_specs, with_names)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "windows"


def netsh_argvs(text: str) -> list[list[str]]:
    """The netsh invocations that run on the success path, in order."""
    return [c.argv for c in cmd.tokenize(text) if c.unconditional and c.name == "netsh"]


# -- what the script does ------------------------------------------------------------------------


def test_registered_under_its_name():
    assert get_dialect("netsh") is DIALECT
    assert (DIALECT.relay_os, DIALECT.extension, DIALECT.comment_leader) == ("windows", "cmd", "rem")
    assert DIALECT.protocols == {"tcp"}


def test_bundled_example_round_trips():
    spec = load_spec(REPO / "rules" / "example-windows.yaml")
    assert DIALECT.parse(DIALECT.render(spec)) == DIALECT.expected(spec)
    tables = {argv[4] for argv in netsh_argvs(DIALECT.render(spec)) if argv[3] == "add" and argv[2] == "portproxy"}
    assert tables == {"v4tov4", "v4tov6"}


def test_every_table_round_trips_with_and_without_whitelists():
    spec = example_spec()
    essences = DIALECT.parse(DIALECT.render(spec))
    assert essences == DIALECT.expected(spec)
    assert [e.sources for e in essences] == [("198.51.100.7/32", "203.0.113.0/24"), None,
                                             ("2001:db8:100::/48",), None]
    adds = [a for a in netsh_argvs(DIALECT.render(spec)) if a[2:4] == ["portproxy", "add"]]
    assert [a[4] for a in adds] == ["v4tov4", "v4tov6", "v6tov4", "v6tov6"]


def test_expected_says_windows_always_proxies():
    """Portproxy opens a new connection: the target sees the relay (masquerade) and the relay's own
    connections are served too (local), whatever `local` says; wildcard listen is None."""
    spec = windows_spec(forward("a", 1000, "192.168.1.1", local=False), forward("b", 1001, "192.168.1.1", local=True))
    for essence in DIALECT.expected(spec):
        assert (essence.masquerade, essence.local, essence.listen_address) == (True, True, None)


def test_masquerade_false_is_refused_not_ignored():
    spec = windows_spec(forward("a", 1000, "192.168.1.1", masquerade=False))
    with pytest.raises(UnsupportedByDialect) as problem:
        DIALECT.render(spec)
    assert problem.value.field == "forwards[0].masquerade"


def test_linux_relay_is_refused():
    spec = load_spec(REPO / "rules" / "example.yaml")
    with pytest.raises(UnsupportedByDialect) as problem:
        DIALECT.render_remove(spec)
    assert problem.value.field == "relay.os"


def test_udp_on_a_windows_relay_is_bad_input():
    with pytest.raises(InputError, match="forwards\\[0\\].protocol"):
        windows_spec(forward("a", 1000, "192.168.1.1", protocol="udp"))


def test_apply_twice_changes_nothing():
    spec = example_spec()
    once = DIALECT.simulate(DIALECT.render(spec))
    twice = DIALECT.simulate(DIALECT.render(spec), DIALECT.simulate(DIALECT.render(spec)))
    assert twice.essences() == once.essences() == DIALECT.expected(spec)
    assert len(twice.rules) == len(once.rules) == len(spec.forwards)  # netsh add rule duplicates: deleted first
    assert twice.proxies == once.proxies


def test_remove_takes_away_exactly_what_apply_made():
    foreign_rule = FirewallRule("Remote Desktop", None, 3389, None, None)
    state = WindowsState(proxies={("v4tov4", "*", 8080): ("10.9.9.9", 80)}, rules=[foreign_rule])
    before = (dict(state.proxies), list(state.rules))
    spec = example_spec()
    DIALECT.simulate(DIALECT.render(spec), state)
    assert len(state.proxies) == 1 + len(spec.forwards)
    DIALECT.simulate(DIALECT.render_remove(spec), state)
    assert (state.proxies, state.rules) == before
    DIALECT.simulate(DIALECT.render_remove(spec), state)  # removing again is harmless
    assert (state.proxies, state.rules) == before


def test_a_new_target_replaces_the_old_one_even_across_tables():
    old = windows_spec(forward("api", 16443, "192.168.10.5", cidrs=["203.0.113.0/24"]))
    new = windows_spec(forward("api", 16443, "fd00::5", cidrs=["198.51.100.0/24"]))
    state = DIALECT.simulate(DIALECT.render(new), DIALECT.simulate(DIALECT.render(old)))
    assert state.essences() == DIALECT.expected(new)
    assert list(state.proxies) == [("v4tov6", "*", 16443)]  # the v4tov4 entry was deleted, not left to clash
    assert len(state.rules) == 1


def test_deletes_name_the_same_listen_address_as_the_add():
    spec = example_spec()
    argvs = netsh_argvs(DIALECT.render(spec))
    for index, argv in enumerate(argvs):
        if argv[2:4] != ["portproxy", "add"]:
            continue
        listen = [w for w in argv if w.startswith(("listenport=", "listenaddress="))]
        family = argv[4][:2]
        deletes = [a for a in argvs[:index] if a[2:4] == ["portproxy", "delete"]
                   and [w for w in a if w.startswith(("listenport=", "listenaddress="))] == listen]
        assert sorted(a[4] for a in deletes) == [f"{family}to{to}" for to in ("v4", "v6")]


def test_steps_run_in_a_safe_order():
    commands = cmd.tokenize(DIALECT.render(example_spec()))
    top = [c for c in commands if c.depth == 0 and c.kind not in ("rem", "label")]
    first_change = next(i for i, c in enumerate(top) if c.name == "netsh" and c.argv[3] in ("add", "delete"))
    before = [c.argv for c in top[:first_change]]
    assert before[:3] == [["echo", "off"], ["setlocal", "EnableExtensions", "DisableDelayedExpansion"],
                          ["net", "session"]]  # no '!' expansion; refuse before anything else runs
    assert ["sc", "config", "iphlpsvc", "start=", "auto"] in before
    assert ["net", "start", "iphlpsvc"] in before
    assert any(c.kind == "for" and "excludedportrange" in c.head for c in top[:first_change])
    # every fallible step is followed by an error exit
    for index, command in enumerate(commands):
        if command.name in ("net", "sc") and command.argv[1] in ("session", "config") or \
                (command.name == "netsh" and command.argv[3] == "add"):
            follow = commands[index + 1]
            assert follow.kind == "if" and follow.head == "errorlevel 1", command.text
            assert commands[index + 3].argv == ["exit", "/b", "1"]
    # the last unconditional command before the subroutines is a clean exit
    exits = [c for c in top if c.kind == "exit"]
    assert exits[0].argv == ["exit", "/b", "0"]


def test_the_final_check_looks_for_exactly_what_was_added():
    """One `show all` listing is normalised to 'LISTEN PORT CONNECT PORT' lines (the for /f tokens
    1-4 of each row), then each added entry must be one whole line of it."""
    for render, option in ((DIALECT.render, "/x"), (DIALECT.render_remove, "/b")):
        commands = cmd.tokenize(render(example_spec()), MODEL_ENV)
        listing = next(c for c in commands if c.kind == "for" and "portproxy show all" in c.head)
        assert '"tokens=1-4"' in listing.head
        echo = commands[commands.index(listing) + 1]
        assert (echo.kind, echo.echo) == ("echo", "%a %b %c %d")
        searches = [c.argv for c in commands if c.name == "findstr" and c.unconditional
                    and c.argv[-1] == MODEL_ENV["NETFWD_SHOWN"]]
        assert all(a[1:4] == [option, "/i", "/l"] for a in searches)
        adds = [a for a in netsh_argvs(render(example_spec())) if a[2] == "portproxy" and a[3] in ("add", "delete")]
        keys = [dict(w.split("=", 1) for w in a[5:]) for a in adds if a[3] == ("add" if option == "/x" else "delete")]
        expected = [f"{k['listenaddress']} {k['listenport']} {k['connectaddress']} {k['connectport']}"
                    if option == "/x" else f"{k['listenaddress']} {k['listenport']} " for k in keys]
        assert [a[4].removeprefix("/c:") for a in searches] == expected


def test_the_excluded_port_filter_selects_exactly_the_range_rows():
    """The `for /f` line pipes netsh through findstr; its regex (findstr dialect) must pick the rows
    parse_excluded_ranges reads, and the subroutine must test every IPv4 listen port."""
    text = DIALECT.render(example_spec())
    loop = next(c for c in cmd.tokenize(text) if c.kind == "for" and "ipv4" in c.head)
    pattern = re.search(r'/c:"([^"]+)"', loop.head).group(1)
    python = re.compile(pattern)  # findstr's '^', ' *', '[0-9]' mean the same in Python
    for name in ("excludedportrange.en.txt", "excludedportrange.zh-cn.utf8.txt"):
        raw = (FIXTURES / name).read_bytes().decode("utf-8")
        rows = [line.split()[:2] for line in raw.splitlines() if python.match(line)]
        assert [(int(a), int(b)) for a, b in rows] == [(r.start, r.end) for r in parse_excluded_ranges(raw)]
    lines = text.splitlines()
    for family in (4, 6):
        start = lines.index(f":check_range{family}")
        end = lines.index("exit /b 0", start)
        tested = [int(m.group(1)) for line in lines[start:end]
                  if (m := re.match(r"if (\d+) GEQ %1 if \1 LEQ %2 set", line))]
        assert sorted(tested) == sorted({f.listen.port for f in example_spec().forwards
                                         if (f.listen.address.version if f.listen.address else 4) == family})


def test_a_long_whitelist_is_split_over_rules_with_one_name():
    cidrs = [f"10.{i // 256}.{i % 256}.{1 + (i % 2) * 2}/32" for i in range(1200)]  # nothing merges
    spec = windows_spec(forward("wide", 2000, "192.168.1.1", cidrs=cidrs))
    text = DIALECT.render(spec)
    adds = [a for a in netsh_argvs(text) if a[1:5] == ["advfirewall", "firewall", "add", "rule"]]
    assert len(adds) > 1 and {a[5] for a in adds} == {"name=netfwd win-001 wide"}
    assert max(len(line) for line in text.splitlines()) <= 8191
    assert DIALECT.parse(text) == DIALECT.expected(spec)
    state = DIALECT.simulate(DIALECT.render_remove(spec), DIALECT.simulate(text))
    assert state.rules == [] and state.proxies == {}


def test_script_is_crlf_ascii_and_starts_with_the_header():
    spec = example_spec()
    for text in (DIALECT.render(spec), DIALECT.render_remove(spec)):
        assert text.count("\n") == text.count("\r\n") and text.endswith("\r\n")
        assert text.isascii()
        lines = text.splitlines()
        assert lines[0] == "@echo off" and lines[1].startswith("rem netfwd ")
        assert "test.yaml" in lines[2]


# -- the tokenizer itself --------------------------------------------------------------------------


@pytest.mark.parametrize("line,argv", [
    # Microsoft's table for parsing C command-line arguments
    ('"abc" d e', ["abc", "d", "e"]),
    (r'a\\\b d"e f"g h', [r"a\\\b", "de fg", "h"]),
    (r'a\\\"b c d', [r'a\"b', "c", "d"]),
    (r'a\\\\"b c" d e', [r"a\\b c", "d", "e"]),
    ('a"b"" c d', ['ab" c d']),
])
def test_split_argv_follows_the_c_runtime(line, argv):
    assert cmd.split_argv(line) == argv


def test_phase_two_operators_redirections_and_carets():
    commands = cmd.tokenize('echo a ^& b & netsh x "y & z" >nul 2>&1 || (>&2 echo c^) d& exit /b 1)\r\n')
    assert [(c.kind, c.op, c.depth) for c in commands] == [("echo", "", 0), ("exec", "&", 0), ("echo", "||", 1),
                                                           ("exit", "&", 1)]  # the block runs only on failure
    assert commands[0].echo == "a & b "
    assert commands[1].argv == ["netsh", "x", "y & z"] and commands[1].redirects == [">nul", "2>&1"]
    assert commands[2].echo == "c) d" and commands[2].redirects == [">&2"]


def test_percent_expansion_in_a_batch_file():
    assert cmd.expand_percent("a %%b%% %X% %~1 %1 %", {"X": "x"}) == "a %b% x %~1 %1 "
    assert cmd.tokenize("netsh %UNSET%name=100%%\r\n")[0].argv == ["netsh", "name=100%"]


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
@settings(max_examples=300)
def test_any_ascii_value_except_a_quote_is_one_argument(value):
    if '"' in value:
        with pytest.raises(cmd.UnsafeValue):
            cmd.kv("name", value)
        return
    for line, argv in ((f"netsh add {cmd.kv('name', value)} x=1", ["netsh", "add", f"name={value}", "x=1"]),
                       (f"netsh {cmd.arg(value)} x=1 >nul", ["netsh", value, "x=1"])):
        (command,) = cmd.tokenize(line + "\r\n")
        assert command.argv == argv


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
@settings(max_examples=300)
def test_echo_text_prints_exactly_the_text(text):
    (command,) = cmd.tokenize(f"echo {cmd.echo_text(text)}\r\n")
    assert command.echo == text
    block = cmd.tokenize(f"if errorlevel 1 (\r\n  >&2 echo {cmd.echo_text(text)}\r\n  exit /b 1\r\n)\r\n")
    assert [c.kind for c in block] == ["if", "echo", "exit"] and block[1].echo == text


@pytest.mark.parametrize("value", NOT_REPRESENTABLE)
def test_values_that_cannot_be_made_safe_are_refused(value):
    with pytest.raises(cmd.UnsafeValue):
        cmd.arg(value)
    spec = with_names(example_spec(), "c", [value, "b", "c", "d"])
    with pytest.raises(ValueError):
        DIALECT.render(spec)


# -- hostile values cannot break out ---------------------------------------------------------------

BENIGN = ["FWDA", "FWDB", "FWDC", "FWDD"]


def _substitute(text: str, cluster: str, names: list[str]) -> str:
    text = text.replace("CLUSTERX", cluster)
    for benign, name in zip(BENIGN, names):
        text = text.replace(benign, name)
    return text


def assert_inert(cluster: str, names: list[str]) -> None:
    """Rendered with hostile names, every script tokenizes into the same commands as with benign
    names, each argv word and echo text differing only by the substitution: nothing broke out."""
    benign = with_names(example_spec(), "CLUSTERX", BENIGN)
    hostile = with_names(example_spec(), cluster, names)
    for render in (DIALECT.render, DIALECT.render_remove):
        good, bad = cmd.tokenize(render(benign)), cmd.tokenize(render(hostile))
        assert len(good) == len(bad)
        for g, b in zip(good, bad):
            assert (g.kind, g.depth, g.op, g.redirects) == (b.kind, b.depth, b.op, b.redirects), b.text
            if g.kind == "echo":
                assert b.echo == _substitute(g.echo, cluster, names)
            elif g.kind != "rem":
                assert b.argv == [_substitute(w, cluster, names) for w in g.argv], b.text
    state = DIALECT.simulate(DIALECT.render(hostile))
    assert [r.display_name for r in state.rules] == [f"netfwd {cluster} {n}" for n in names]
    assert state.essences() == DIALECT.expected(hostile)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_stay_inside_their_arguments(value):
    assert_inert(value, hostile_names(value))


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, blacklist_characters='"'),
               min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_printable_name_stays_inert(value):
    assert_inert(value + "c", hostile_names(value))


# -- properties over generated specs --------------------------------------------------------------


@given(windows_specs())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_render_then_parse_gives_back_the_forwards(spec):
    assert DIALECT.parse(DIALECT.render(spec)) == DIALECT.expected(spec)


@given(windows_specs())
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_apply_is_idempotent_and_remove_leaves_nothing(spec):
    apply, remove = DIALECT.render(spec), DIALECT.render_remove(spec)
    twice = DIALECT.simulate(apply, DIALECT.simulate(apply))
    assert twice.essences() == DIALECT.expected(spec)
    assert len(twice.rules) == len(spec.forwards)
    emptied = DIALECT.simulate(remove, twice)
    assert emptied.proxies == {} and emptied.rules == []
