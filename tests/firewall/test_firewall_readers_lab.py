"""Each firewall reader against what the real tool prints, in a lab relay: iptables-save of both
flavours, `nft list ruleset` and `nft -j list ruleset`, firewalld's `--list-all` / `--list-rich-rules`.

The rulesets are loaded with the real tools; the readers must see every chain, rule, match and
verdict, and the two nft syntaxes must give the same model.
"""

from __future__ import annotations

import pytest
from netaddr import IPAddress, IPSet

from netfwd.firewall import rich
from netfwd.firewall.iptables_save import read_ruleset
from netfwd.firewall.model import DAddr, DPort, Iface, Origin, Proto, Unknown
from netfwd.firewall.nft_json import read_json
from netfwd.firewall.nft_text import read_text
from netfwd.whitelist.sources.firewalld import parse_rich

pytestmark = pytest.mark.netns
HERE = Origin("--list-rich-rules", 1)

SAVE = """*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:T-USER - [0:0]
-A PREROUTING -p tcp -m tcp --dport 8000:8010 -j T-USER
-A T-USER ! -s 10.99.0.0/16 -p tcp -m multiport --dports 8001,8005 -m comment --comment "two words" -j DNAT --to-destination 10.98.0.7:80
-A T-USER -i ext0 -j RETURN
-A POSTROUTING -o int0 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:T-FWD - [0:0]
-A FORWARD -g T-FWD
-A T-FWD -d 10.98.0.7/32 -p tcp -m conntrack --ctstate NEW,DNAT -j ACCEPT
-A T-FWD -p tcp -m statistic --mode random --probability 0.5 -j REJECT --reject-with tcp-reset
COMMIT
"""


@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_iptables_save_reader_reads_each_flavour_as_the_tool_prints_it(lab, flavour):
    lab.run("relay", [f"iptables-{flavour}-restore"], input=SAVE)
    printed = lab.run("relay", [f"iptables-{flavour}-save"]).stdout
    model = read_ruleset(printed, f"iptables-{flavour}-save")
    nat = {name: chain for (tid, name), chain in model.chains.items() if tid == "ipv4:nat"}
    user = nat["T-USER"]
    assert [r.verdict.kind for r in nat["PREROUTING"].rules] == ["jump"]
    dnat, ret = user.rules
    assert (dnat.verdict.kind, dnat.verdict.to_addr, dnat.verdict.to_port) == ("dnat", IPAddress("10.98.0.7"), 80)
    assert dnat.sources[0].negated and dnat.sources[0].addresses == IPSet(["10.99.0.0/16"])
    assert DPort(((8001, 8001), (8005, 8005))) in dnat.conds and Proto(frozenset({"tcp"})) in dnat.conds
    assert ret.verdict.kind == "return" and Iface("in", "ext0") in ret.conds
    filt = {name: chain for (tid, name), chain in model.chains.items() if tid == "ipv4:filter"}
    assert filt["FORWARD"].policy == "drop" and filt["FORWARD"].rules[0].verdict.kind == "goto"
    accept, odd = filt["T-FWD"].rules
    assert accept.verdict.kind == "accept" and DAddr(IPSet(["10.98.0.7/32"])) in accept.conds
    assert any(isinstance(c, Unknown) and "statistic" in c.what for c in odd.conds)  # never guessed
    assert not [c for c in dnat.conds + accept.conds if isinstance(c, Unknown)]


NFT = """table inet t {
    set allow { type ipv4_addr; flags interval; elements = { 10.99.1.0/24, 10.99.3.1 } }
    chain t_pre { type nat hook prerouting priority dstnat; policy accept;
        ip saddr @allow tcp dport { 8001, 8005 } counter dnat ip to 10.98.0.7:80
        iifname "ext0" tcp dport 9000-9010 jump t_user
    }
    chain t_user { ip saddr != 10.99.0.0/16 return; meta l4proto udp drop; }
    chain t_fwd { type filter hook forward priority filter - 5; policy drop;
        ct state vmap { established : accept, related : accept, new : jump t_user }
        ip daddr 10.98.0.7 tcp dport 80 ct status dnat accept
        ct state established,related accept
        tcp dport 22 reject with tcp reset
        udp dport 53 reject with icmp type host-unreachable
    }
    chain t_post { type nat hook postrouting priority srcnat; oifname "int0" masquerade; }
}
"""


def _shape(model) -> dict:
    """What both nft syntaxes must agree on: every chain's hook, priority, policy and rules."""
    out = {}
    for key, chain in model.chains.items():
        rules = [(r.verdict.kind, r.verdict.target, r.verdict.to_addr, r.verdict.to_port,
                  sorted(repr(c) for c in r.conds), [(s.addresses, s.negated) for s in r.sources])
                 for r in chain.rules]
        out[key] = (chain.hook, chain.priority, chain.policy, rules)
    return out


def test_nft_text_and_json_readers_read_what_nft_prints_alike(lab):
    lab.run("relay", ["nft", "-f", "-"], input=NFT)
    text = lab.run("relay", ["nft", "list", "ruleset"]).stdout
    as_json = lab.run("relay", ["nft", "-j", "list", "ruleset"]).stdout
    from_text, from_json = read_text(text, "nft list ruleset"), read_json(as_json, "nft -j list ruleset")
    assert _shape(from_text) == _shape(from_json)
    chains = {name: chain for (_, name), chain in from_json.chains.items()}
    assert (chains["t_fwd"].hook, chains["t_fwd"].priority, chains["t_fwd"].policy) == ("forward", -5, "drop")
    assert chains["t_pre"].priority == -100 and chains["t_post"].hook == "postrouting"
    dnat = chains["t_pre"].rules[0]
    assert dnat.sources[0].addresses == IPSet(["10.99.1.0/24", "10.99.3.1/32"])
    assert (dnat.verdict.to_addr, dnat.verdict.to_port) == (IPAddress("10.98.0.7"), 80)
    fwd = chains["t_fwd"].rules
    assert [r.verdict.kind for r in fwd[:4]] == ["accept", "accept", "jump", "accept"]  # vmap split
    assert [(r.verdict.action, r.verdict.detail) for r in fwd[5:]] == [("reject", "tcp-reset"),
                                                                      ("reject", "icmp-host-unreachable")]
    assert not [c for r in fwd for c in r.conds if isinstance(c, Unknown)]
    assert not [c for r in chains["t_pre"].rules for c in r.conds if isinstance(c, Unknown)]


def test_firewalld_rich_rules_are_read_as_firewalld_prints_them(lab_fw):
    lab, a = lab_fw, lab_fw.addrs
    zone = lab.firewall_cmd("--get-default-zone").stdout.strip()
    lab.firewall_cmd(f"--zone={zone}", "--add-rich-rule",
                     f'rule family="ipv4" source not address="{a.client_denied}" port port="16443" '
                     'protocol="tcp" accept')
    lab.firewall_cmd(f"--zone={zone}", "--add-rich-rule",
                     f'rule family="ipv4" source address="{a.allowed_cidr}" forward-port port="16444" '
                     f'protocol="tcp" to-port="6443" to-addr="{a.onprem}"')
    listed = lab.firewall_cmd(f"--zone={zone}", "--list-rich-rules").stdout.splitlines()
    inverted = next(line for line in listed if "16443" in line)
    assert "source NOT address=" in inverted  # firewalld's own spelling, whatever we typed
    parts = rich.elements(inverted)
    assert rich.inverted(parts["source"]) and rich.action(parts) == "accept"
    read = parse_rich(inverted, HERE, "--list-rich-rules")
    assert a.client_denied not in read.source and a.client_allowed in read.source
    forward = parse_rich(next(line for line in listed if "16444" in line), HERE, "--list-rich-rules")
    assert forward.kind == "forward-port" and forward.to == f"{a.onprem}:6443"
    everything = lab.firewall_cmd(f"--zone={zone}", "--list-all").stdout
    assert inverted in everything  # --list-all prints the same rule text
