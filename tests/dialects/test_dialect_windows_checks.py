"""What both Windows dialects check on the relay, run against the Windows state model.

The apply scripts stop before any change when a Windows Firewall profile is off (or warn, with the
documented switch), scope their allow rules to the IP Helper service, and after apply look for a
listening socket, not only the stored port proxy. The netsh script runs through the batch
interpreter (netfwd.dialects.cmdrun), which reads the registry values and netstat lines the state
model prints; the PowerShell script's checks run as the model of the functions it defines.
"""

from __future__ import annotations

import itertools

import pytest

from netfwd.dialects import cmdsyntax as cmd
from netfwd.dialects import pssyntax as ps
from netfwd.dialects.cmdrun import Run, _findstr
from netfwd.dialects.netsh import ALLOW_FIREWALL_OFF as CMD_SWITCH
from netfwd.dialects.netsh import DIALECT as NETSH
from netfwd.dialects.netsh import listening_lines
from netfwd.dialects.powershell import ALLOW_FIREWALL_OFF as PS_SWITCH
from netfwd.dialects.powershell import DIALECT as POWERSHELL
from netfwd.dialects.winbase import IPHLPSVC, PROFILES, FirewallRule, ScriptExit, WindowsState, plan
from tests.windows_helpers import example_spec, forward, windows_spec

DIALECTS = [(NETSH, CMD_SWITCH), (POWERSHELL, PS_SWITCH)]
FOREIGN = FirewallRule("Remote Desktop", None, 3389, None, None, service="termservice")


def snapshot(state: WindowsState):
    return dict(state.proxies), list(state.rules)


@pytest.mark.parametrize("dialect,switch", DIALECTS, ids=["netsh", "powershell"])
@pytest.mark.parametrize("profile", PROFILES)
def test_a_profile_that_is_off_stops_the_script_before_any_change(dialect, switch, profile):
    state = WindowsState(proxies={("v4tov4", "*", 8080): ("10.9.9.9", 80)}, rules=[FOREIGN],
                         local_firewall={profile: False})
    before = snapshot(state)
    with pytest.raises(ScriptExit) as stopped:
        dialect.simulate(dialect.render(example_spec()), state)
    assert stopped.value.code == 1 and profile in " ".join(stopped.value.messages)
    assert snapshot(state) == before


@pytest.mark.parametrize("dialect,switch", DIALECTS, ids=["netsh", "powershell"])
def test_the_switch_goes_on_with_a_warning(dialect, switch):
    state = WindowsState(local_firewall={"Public": False})
    dialect.simulate(dialect.render(example_spec()), state, args=(switch,))
    assert state.essences() == dialect.expected(example_spec())
    with pytest.raises(ScriptExit):  # any other argument is not the switch
        dialect.simulate(dialect.render(example_spec()), WindowsState(local_firewall={"Public": False}),
                         args=("/other",))


def test_the_netsh_script_warns_on_stderr_when_the_switch_is_given():
    run = Run(WindowsState(policy_firewall={"Domain": False}), (CMD_SWITCH,))
    run.run(NETSH.render(example_spec()))
    assert "netfwd: Windows Firewall is off for the Domain profile" in run.stderr
    assert any(line.startswith("netfwd: warning:") for line in run.stderr)


@pytest.mark.parametrize("local,policy", list(itertools.product([None, True, False], repeat=2)))
def test_group_policy_wins_over_the_local_setting_in_both_dialects(local, policy):
    """The enforced state is group policy's value where set, else the local one (on by default); the
    .cmd reads both registry values itself, the .ps1 asks for the merged ActiveStore."""
    enforced_off = policy is False or (policy is None and local is False)
    for dialect, _ in DIALECTS:
        state = WindowsState(local_firewall={} if local is None else {"Private": local},
                             policy_firewall={} if policy is None else {"Private": policy})
        if enforced_off:
            with pytest.raises(ScriptExit):
                dialect.simulate(dialect.render(example_spec()), state)
            assert state.proxies == {}
        else:
            dialect.simulate(dialect.render(example_spec()), state)
            assert state.essences() == dialect.expected(example_spec())


def test_the_powershell_check_asks_the_enforced_store_and_throws():
    text = POWERSHELL.render(example_spec())
    inside = [c for c in ps.commands(text) if c.depth > 0]
    (profiles,) = [c for c in inside if c.name == "Get-NetFirewallProfile"]
    assert profiles.params() == {"policystore": "ActiveStore"}
    (call,) = [c for c in ps.commands(text) if c.depth == 0 and c.name == "Assert-NetfwdFirewallOn"]
    assert call.params() == {"allowoff": ps.Opaque("$AllowFirewallOff")}
    assert "param([switch] $AllowFirewallOff)" in text.splitlines()[:8]
    assert "param([switch]" not in POWERSHELL.render_remove(example_spec())  # removing opens nothing


def test_the_netsh_check_runs_before_the_first_change():
    commands = [c for c in cmd.tokenize(NETSH.render(example_spec())) if c.depth == 0]
    refusal = next(i for i, c in enumerate(commands) if c.kind == "if" and c.head == "defined NETFWD_OFF")
    first_change = next(i for i, c in enumerate(commands) if c.argv[:2] == ["sc", "config"])
    reads = [i for i, c in enumerate(commands) if c.kind == "for" and "EnableFirewall" in c.head]
    assert len(reads) == 2 * len(PROFILES) and max(reads) < refusal < first_change


@pytest.mark.parametrize("dialect,switch", DIALECTS, ids=["netsh", "powershell"])
def test_allow_rules_are_scoped_to_the_ip_helper_service(dialect, switch):
    state = dialect.simulate(dialect.render(example_spec()))
    assert {r.service for r in state.rules} == {IPHLPSVC}
    # a rule scoped to another service admits nobody to the port proxy
    other = WindowsState(dict(state.proxies), [FirewallRule(r.display_name, r.rule_id, r.local_port, r.local_ip,
                                                            r.remote, service="termservice") for r in state.rules])
    assert all(e.sources == () for e in other.essences())


@pytest.mark.parametrize("dialect,switch", DIALECTS, ids=["netsh", "powershell"])
def test_a_stored_proxy_that_does_not_listen_fails_the_apply(dialect, switch):
    spec = example_spec()
    port = spec.forwards[1].listen.port
    state = WindowsState(unbound={port})
    with pytest.raises(ScriptExit) as failed:
        dialect.simulate(dialect.render(spec), state)
    assert f"forward {spec.forwards[1].name}" in " ".join(failed.value.messages)
    assert (("v4tov6", "10.0.0.4", port) in state.proxies)  # stored, yet not served
    dialect.simulate(dialect.render(spec), WindowsState())  # listening everywhere: passes


def test_listening_lines_match_netstat_in_any_display_language():
    """netstat localises the state column, not the addresses: the .cmd keeps tokens 1-3 of each row."""
    api, v6 = plan(windows_spec(forward("api", 16443, "192.168.1.5"),
                                forward("six", 10443, "fd00::5", address="2001:db8::4")))
    rows = {"  TCP    0.0.0.0:16443          0.0.0.0:0              ABH\u00d6REN": True,  # German
            "  TCP    [2001:db8::4]:10443    [::]:0                 LISTENING": True,
            "  TCP    10.0.0.4:16443         10.0.0.9:50000         HERGESTELLT": False,  # a connection
            "  UDP    0.0.0.0:16443          *:*": False}
    for row, listening in rows.items():
        normalised = " ".join(row.split()[:3])
        assert (_findstr([normalised], listening_lines(api), {"/x", "/i", "/l"})
                or _findstr([normalised], listening_lines(v6), {"/x", "/i", "/l"})) == listening, row


def test_remove_needs_no_firewall_and_no_listener():
    spec = example_spec()
    for dialect, _ in DIALECTS:
        state = dialect.simulate(dialect.render(spec))
        state.local_firewall = {p: False for p in PROFILES}
        dialect.simulate(dialect.render_remove(spec), state)
        assert state.proxies == {} and state.rules == []
