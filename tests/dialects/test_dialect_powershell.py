"""The powershell dialect (.ps1): read back with a PowerShell tokenizer and the Windows state model.

Same approach as tests/dialects/test_dialect_netsh.py: run the script's script-level commands against
:class:`WindowsState` (New-NetFirewallRule refuses an existing -Name, netsh portproxy add refuses an
existing entry, as on Windows), and tokenize every script to show that spec values stay literal.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd.dialects import get_dialect
from netfwd.dialects import pssyntax as ps
from netfwd.dialects.netsh import DIALECT as NETSH
from netfwd.dialects.powershell import DIALECT
from netfwd.dialects.pssyntax import Opaque, Param
from netfwd.dialects.winbase import FirewallRule, ScriptError, WindowsState
from netfwd.errors import UnsupportedByDialect
from netfwd.spec import load_spec
from tests.windows_helpers import (HOSTILE, NOT_REPRESENTABLE, example_spec, forward, hostile_names,
                                   windows_spec, windows_specs, with_names)

REPO = Path(__file__).resolve().parents[2]


def top_commands(text: str):
    return [c for c in ps.commands(text) if c.depth == 0]


# -- what the script does ------------------------------------------------------------------------


def test_registered_under_its_name():
    assert get_dialect("powershell") is DIALECT
    assert (DIALECT.relay_os, DIALECT.extension, DIALECT.comment_leader) == ("windows", "ps1", "#")
    assert DIALECT.protocols == {"tcp"}


def test_bundled_example_round_trips():
    spec = load_spec(REPO / "rules" / "example-windows.yaml")
    assert DIALECT.parse(DIALECT.render(spec)) == DIALECT.expected(spec)


def test_every_table_round_trips_and_matches_the_netsh_dialect():
    spec = example_spec()
    assert DIALECT.parse(DIALECT.render(spec)) == DIALECT.expected(spec) == NETSH.expected(spec)


def test_firewall_rule_carries_every_parameter():
    spec = windows_spec(forward("api", 16443, "192.168.10.5", address="10.0.0.4",
                                cidrs=["203.0.113.0/24", "198.51.100.7/32"]))
    (rule,) = [c for c in top_commands(DIALECT.render(spec)) if c.name == "New-NetFirewallRule"]
    assert rule.params() == {
        "name": "netfwd win-001 api", "displayname": "netfwd win-001 api",
        "description": "netfwd:win-001/api to 192.168.10.5:6443", "group": "netfwd",
        "direction": "Inbound", "action": "Allow", "service": "iphlpsvc", "protocol": "TCP", "localport": "16443",
        "localaddress": "10.0.0.4", "remoteaddress": ["198.51.100.7/32", "203.0.113.0/24"], "profile": "Any",
    }


def test_no_whitelist_means_remote_any():
    spec = windows_spec(forward("api", 16443, "192.168.10.5"))
    (rule,) = [c for c in top_commands(DIALECT.render(spec)) if c.name == "New-NetFirewallRule"]
    assert rule.params()["remoteaddress"] == "Any" and "localaddress" not in rule.params()
    assert DIALECT.parse(DIALECT.render(spec))[0].sources is None


def test_masquerade_false_is_refused():
    with pytest.raises(UnsupportedByDialect) as problem:
        DIALECT.render(windows_spec(forward("a", 1000, "192.168.1.1", masquerade=False)))
    assert problem.value.field == "forwards[0].masquerade"


def test_linux_relay_is_refused():
    with pytest.raises(UnsupportedByDialect):
        DIALECT.render(load_spec(REPO / "rules" / "example.yaml"))


def test_apply_twice_changes_nothing():
    spec = example_spec()
    once = DIALECT.simulate(DIALECT.render(spec))
    twice = DIALECT.simulate(DIALECT.render(spec), DIALECT.simulate(DIALECT.render(spec)))
    assert twice.essences() == once.essences() == DIALECT.expected(spec)
    assert twice.rules == once.rules and twice.proxies == once.proxies


def test_the_model_refuses_what_windows_refuses():
    """The state model is strict where Windows is, so the idempotency test above can fail."""
    spec = windows_spec(forward("api", 16443, "192.168.10.5"))
    text = DIALECT.render(spec)
    no_removes = "\r\n".join(line for line in text.splitlines() if not line.startswith("Remove-NetFirewallRule"))
    with pytest.raises(ScriptError, match="a rule with that name exists"):
        DIALECT.simulate(no_removes, DIALECT.simulate(text))
    no_deletes = "\r\n".join(line for line in text.splitlines() if "portproxy delete" not in line)
    with pytest.raises(ScriptError, match="the entry exists"):
        DIALECT.simulate(no_deletes, DIALECT.simulate(text))


def test_remove_takes_away_exactly_what_apply_made():
    foreign = FirewallRule("netfwd other-cluster api", "netfwd other-cluster api", 16443, None, None)
    state = WindowsState(proxies={("v4tov4", "*", 8080): ("10.9.9.9", 80)}, rules=[foreign])
    before = (dict(state.proxies), list(state.rules))
    spec = example_spec()
    DIALECT.simulate(DIALECT.render_remove(spec), DIALECT.simulate(DIALECT.render(spec), state))
    assert (state.proxies, state.rules) == before
    DIALECT.simulate(DIALECT.render_remove(spec), state)
    assert (state.proxies, state.rules) == before


@pytest.mark.parametrize("first,second", [(NETSH, DIALECT), (DIALECT, NETSH)])
def test_the_two_dialects_replace_each_others_rules(first, second):
    """An operator may switch from the .cmd to the .ps1 (or back): no duplicate rule, no clash."""
    spec = example_spec()
    state = second.simulate(second.render(spec), first.simulate(first.render(spec)))
    assert state.essences() == DIALECT.expected(spec)
    assert len(state.rules) == len(spec.forwards)
    state = first.simulate(first.render_remove(spec), state)
    assert state.proxies == {} and state.rules == []


def test_a_new_target_replaces_the_old_one_even_across_tables():
    old = windows_spec(forward("api", 16443, "192.168.10.5", cidrs=["203.0.113.0/24"]))
    new = windows_spec(forward("api", 16443, "fd00::5", cidrs=["198.51.100.0/24"]))
    state = DIALECT.simulate(DIALECT.render(new), DIALECT.simulate(DIALECT.render(old)))
    assert state.essences() == DIALECT.expected(new)
    assert list(state.proxies) == [("v4tov6", "*", 16443)]


def test_script_preamble_and_order():
    text = DIALECT.render(example_spec())
    lines = text.splitlines()
    assert lines[0].startswith("# netfwd ") and "#Requires -RunAsAdministrator" in lines[:5]
    assert "$ErrorActionPreference = 'Stop'" in lines
    top = top_commands(text)
    names = [c.name for c in top]
    first_change = next(i for i, c in enumerate(top) if c.name == "netsh.exe")
    assert names[:first_change][:3] == ["Set-StrictMode", "Assert-NetfwdFirewallOn", "Set-Service"]
    assert top[2].params() == {"name": "iphlpsvc", "startuptype": "Automatic"}
    assert top[3].name == "Start-Service" and top[3].params() == {"name": "iphlpsvc"}
    checked = {c.params()["port"] for c in top[:first_change] if c.name == "Assert-NetfwdPortFree"}
    assert checked == {str(f.listen.port) for f in example_spec().forwards}
    assert all(c.call_operator for c in top if c.name == "netsh.exe")  # '&' so the path is not an expression


def test_every_netsh_add_is_checked_through_lastexitcode():
    lines = DIALECT.render(example_spec()).splitlines()
    adds = [i for i, line in enumerate(lines) if "portproxy add" in line]
    assert adds and all(lines[i + 1].startswith("if ($LASTEXITCODE -ne 0) { throw") for i in adds)


def test_final_checks_name_what_was_added():
    """Get-NetfwdPortProxies keys each row 'listen port' and 'listen port connect port'; the apply
    script looks up every added entry, the remove script every deleted listen socket."""
    for render, verb in ((DIALECT.render, "add"), (DIALECT.render_remove, "delete")):
        text = render(example_spec())
        tokens = ps.tokenize(text)
        looked_up = [tokens[i + 2].value for i, t in enumerate(tokens)
                     if t == ("word", ".ContainsKey", t.line, False) and tokens[i + 1].value == "("]
        calls = [c.args for c in top_commands(text) if c.name == "netsh.exe" and c.args[2] == verb]
        values = [dict(w.split("=", 1) for w in a[4:]) for a in calls]
        if verb == "add":
            expected = [f"{v['listenaddress']} {v['listenport']} {v['connectaddress']} {v['connectport']}"
                        for v in values]
        else:
            expected = [f"{v['listenaddress']} {v['listenport']}" for v in values]
        assert looked_up == expected
        assert sum(1 for c in ps.commands(text) if c.name == "Get-NetfwdPortProxies" and c.depth == 0) == 1


def test_script_is_crlf_and_ascii():
    spec = example_spec()
    for text in (DIALECT.render(spec), DIALECT.render_remove(spec)):
        assert text.count("\n") == text.count("\r\n") and text.isascii()


# -- the tokenizer itself ------------------------------------------------------------------------


def test_tokenizer_strings_arrays_params_and_comments():
    text = ("# comment 'x'\r\nNew-Thing -A 'it''s' -B \"say \"\"hi\"\"`t$x\" -C @('a', 'b',\r\n 'c') "
            "-D x,'y' -E:$true <# block\r\n #> -F bare'quoted'word | Out-Null; & 'netsh.exe' a\r\n")
    first, out_null, netsh = ps.commands(text)
    assert first.name == "New-Thing" and first.line == 2
    assert first.args == [Param("A"), "it's", Param("B"), Opaque('say "hi"\t$x'), Param("C"), ["a", "b", "c"],
                          Param("D"), ["x", "y"], Param("E"), Opaque("$true"), Param("F"), "barequotedword"]
    assert out_null.name == "Out-Null"
    assert netsh.name == "netsh.exe" and netsh.call_operator and netsh.args == ["a"]


def test_typographic_quotes_are_quotes_to_powershell():
    tokens = ps.tokenize("\u2018it\u2019\u2019s\u2019 \u201cq\u201d")
    assert [(t.kind, t.value) for t in tokens] == [("str", "it\u2019s"), ("str", "q")]


def test_nested_commands_have_depth():
    text = "function F { param($a) Get-X -Y 1 }\r\nif (-not (Test-Y -Z 'a')) { throw 'no' }\r\nRun-Z\r\n"
    assert [(c.name, c.depth) for c in ps.commands(text)] == [("Get-X", 1), ("Test-Y", 2), ("Run-Z", 0)]


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=0))
@settings(max_examples=300)
def test_quote_round_trips_any_ascii(value):
    (command,) = ps.commands(f"Do-It -Value {ps.quote(value)} -List {ps.array([value, value])} -Last 'x'")
    assert command.args == [Param("Value"), value, Param("List"), [value, value], Param("Last"), "x"]


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1))
@settings(max_examples=200)
def test_wildcard_escape_matches_only_itself(value):
    pattern = ps.wildcard_regex(ps.wildcard_escape(value))
    assert pattern.match(value)
    assert not pattern.match(value + "x") and not pattern.match("x" + value)


@pytest.mark.parametrize("value", NOT_REPRESENTABLE)
def test_values_that_cannot_be_made_safe_are_refused(value):
    if value == '"' or value == 'a"b':
        assert ps.quote(value) == f"'{value}'"  # a double quote is literal in single quotes
        return
    with pytest.raises(ps.UnsafeValue):
        ps.quote(value)
    with pytest.raises(ValueError):
        DIALECT.render(with_names(example_spec(), "c", [value, "b", "c", "d"]))


# -- hostile values cannot break out ---------------------------------------------------------------

BENIGN = ["FWDA", "FWDB", "FWDC", "FWDD"]


def _substitute(text: str, cluster: str, names: list[str]) -> str:
    text = text.replace("CLUSTERX", cluster)
    for benign, name in zip(BENIGN, names):
        text = text.replace(benign, name)
    return text


def assert_inert(cluster: str, names: list[str]) -> None:
    """With hostile names, every script has the same tokens as with benign names, string tokens
    differing only by the substitution (or, for wildcard parameters, its escaped form)."""
    benign = with_names(example_spec(), "CLUSTERX", BENIGN)
    hostile = with_names(example_spec(), cluster, names)
    for render in (DIALECT.render, DIALECT.render_remove):
        good, bad = ps.tokenize(render(benign)), ps.tokenize(render(hostile))
        assert [t.kind for t in good] == [t.kind for t in bad]
        for g, b in zip(good, bad):
            expected = _substitute(g.value, cluster, names)
            if g.kind == "str":
                assert b.value in (expected, ps.wildcard_escape(expected)), b
            else:
                assert b.value == g.value, b
        for g, b in zip(ps.commands(render(benign)), ps.commands(render(hostile))):
            assert (g.name, g.depth, len(g.args)) == (b.name, b.depth, len(b.args))
            if b.name.endswith("NetFirewallRule") and b.name != "New-NetFirewallRule":
                for key in ("name", "displayname"):
                    if key in g.params():
                        assert b.params()[key] == ps.wildcard_escape(_substitute(g.params()[key], cluster, names))
    state = DIALECT.simulate(DIALECT.render(hostile))
    assert [r.display_name for r in state.rules] == [f"netfwd {cluster} {n}" for n in names]
    assert DIALECT.simulate(DIALECT.render_remove(hostile), state).rules == []


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_stay_inside_their_strings(value):
    assert_inert(value, hostile_names(value))


@given(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=20))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_printable_name_stays_inert(value):
    assert_inert(value + "c", hostile_names(value))


def test_wildcard_names_remove_only_their_own_rule():
    """'*' in a (hostile) name must not make Remove-NetFirewallRule take other rules with it."""
    bystander = FirewallRule("netfwd c x", "netfwd c x", 1, None, None)
    spec = with_names(windows_spec(forward("a", 1000, "192.168.1.1")), "c", ["*"])
    state = DIALECT.simulate(DIALECT.render(spec), WindowsState(rules=[bystander]))
    state = DIALECT.simulate(DIALECT.render_remove(spec), state)
    assert state.rules == [bystander]


# -- properties over generated specs --------------------------------------------------------------


@given(windows_specs())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_render_then_parse_gives_back_the_forwards(spec):
    assert DIALECT.parse(DIALECT.render(spec)) == DIALECT.expected(spec)


@given(windows_specs())
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_apply_is_idempotent_and_remove_leaves_nothing(spec):
    apply = DIALECT.render(spec)
    twice = DIALECT.simulate(apply, DIALECT.simulate(apply))
    assert twice.essences() == DIALECT.expected(spec)
    emptied = DIALECT.simulate(DIALECT.render_remove(spec), twice)
    assert emptied.proxies == {} and emptied.rules == []
