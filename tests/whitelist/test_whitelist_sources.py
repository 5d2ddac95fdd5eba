"""Each whitelist SOURCE format, read from realistic fixtures that include foreign rules.

Every expectation here was worked out by hand from the fixture: which rule admits which source,
and why each foreign rule (another port, protocol or target, LOG, `! -s`, a disabled or block
rule) must not count as coverage.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from netaddr import IPSet

from netfwd.catalog import load_catalog
from netfwd.errors import InputError
from netfwd.whitelist.detect import detect
from netfwd.whitelist.load import load
from netfwd.whitelist.sources import Context
from netfwd.whitelist.verify import verify

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "whitelist"
CATALOG = load_catalog()
SHANGHAI = {str(n) for n in CATALOG.region("cn-shanghai").networks}


def run(name: str, regions=("cn-hangzhou", "cn-shanghai"), **context):
    parsed = load(str(FIX / name), Context(catalog=CATALOG, **context))
    return parsed, verify(parsed, CATALOG, list(regions), None)


def group(report, port: int):
    (found,) = [g for g in report.groups if g.port == port]
    return found


def status(group_report) -> dict[str, tuple[str, set[str]]]:
    return {r.region: (r.status, set(r.missing)) for r in group_report.regions}


@pytest.mark.parametrize("name, fmt", [
    ("iptables-docker-relay.txt", "iptables"), ("iptables-handwritten.txt", "iptables"),
    ("ipset-and-iptables.txt", "iptables"), ("nft-relay.txt", "nft"), ("nft-relay.json", "nft-json"),
    ("firewalld-public.xml", "firewalld-xml"), ("firewalld-list-all.txt", "firewalld"),
    ("netsh-show-rule.txt", "netsh"), ("spec-relay.yaml", "spec"), ("plain-list.txt", "list"),
])
def test_formats_are_detected_from_content(name, fmt):
    assert detect((FIX / name).read_text(encoding="utf-8")) == fmt


def test_plain_list_with_comments_ranges_and_commas():
    parsed, report = run("plain-list.txt")
    (g,) = report.groups
    assert status(g)["cn-hangzhou"] == ("covered", set())
    state, missing = status(g)["cn-shanghai"]
    assert state == "partial" and missing == SHANGHAI - {"139.224.15.48/32", "101.132.180.26/32", "100.104.43.0/26"}
    codes = {(f.code, f.origin.line) for f in g.findings}
    assert ("too-broad", 8) in codes  # 47.96.166.0/24 around Hangzhou's one address
    broad = next(f for f in g.findings if f.code == "too-broad")
    assert broad.count == 255
    assert ("private-range", 11) in codes  # 192.168.0.0/16
    unused = next(f for f in g.findings if f.code == "unused")
    assert unused.cidrs == ("203.0.113.7", "192.168.0.0/16") and unused.origin.line == 10


def test_iptables_relay_with_docker_counts_only_netfwd_dnat_on_the_port():
    _, report = run("iptables-docker-relay.txt", port=16443)
    (g,) = report.groups
    assert g.label == "tcp/16443 -> 10.200.2.2:6443"
    assert status(g)["cn-hangzhou"] == ("covered", set())
    # the LOG rule (8.8.8.0/24), the udp DNAT (100.104.43.0/26) and the DNAT on port 16444
    # (101.132.180.26) are foreign: none of them admits anything to tcp/16443
    assert status(g)["cn-shanghai"] == ("partial", SHANGHAI - {"139.224.15.48/32"})
    assert not [f for f in report.all_findings() if f.code == "unevaluated"]


def test_iptables_without_port_reports_every_forward_and_explains_docker():
    _, report = run("iptables-docker-relay.txt")
    assert [g.port for g in report.groups] == [8080, 16443, 16444]
    docker = group(report, 8080)
    assert all(r.status == "missing" for r in docker.regions)
    notes = [f for f in report.findings if f.code == "unevaluated"]
    assert notes and notes[0].origin.line == 20 and "docker0" in notes[0].message


def test_iptables_handwritten_negation_log_and_foreign_rules():
    _, report = run("iptables-handwritten.txt", regions=["cn-hangzhou"])
    (g,) = report.groups
    # 47.96.166.214: only LOGged, then dropped by `! -s 100.104.0.0/16 ... -j DROP` before its ACCEPT;
    # 100.104.12.96/27: accepted only to another target, for udp, or for port 22
    assert status(g)["cn-hangzhou"] == ("partial", {"47.96.166.214/32", "100.104.12.96/27"})


def test_iptables_negated_source_accept_is_too_broad_and_does_not_cover_the_negated_address():
    _, report = run("iptables-negated-accept.txt", regions=["cn-hangzhou"], port=6443)
    (g,) = report.groups
    assert status(g)["cn-hangzhou"] == ("partial", {"47.96.166.214/32"})
    broad = [f for f in g.findings if f.code == "too-broad"]
    assert len(broad) == 1 and broad[0].origin.line == 7
    assert broad[0].count == 2**32 - 1 - 64  # everything but the excluded /32, less the required /26


def test_ipset_members_nomatch_and_return_before_dnat():
    _, report = run("ipset-and-iptables.txt", regions=["cn-hangzhou"])
    (g,) = report.groups
    # 100.104.12.70 is RETURNed (not DNATed) by the scanners set; .80/28 is a nomatch exception;
    # the `-i docker0` DNAT never sees clients from the network
    assert status(g)["cn-hangzhou"] == ("partial", {"100.104.12.70/32", "100.104.12.80/28"})


def test_destination_matches_need_the_relay_address():
    _, unknown = run("iptables-dual-stack.txt", regions=["cn-hangzhou"])
    assert status(unknown.groups[0])["cn-hangzhou"][0] == "missing"
    assert sum(f.code == "unevaluated" for f in unknown.findings) == 2
    _, known = run("iptables-dual-stack.txt", regions=["cn-hangzhou"], relay_addresses=IPSet(["10.0.0.4"]))
    (g,) = known.groups
    assert status(g)["cn-hangzhou"] == ("covered", set())
    assert "[fd00::20]:6443" in g.label and "10.0.5.20:6443" in g.label
    unused = next(f for f in g.findings if f.code == "unused")
    assert unused.cidrs == ("-s 2001:db8:100::/48",)


def test_nft_text_and_json_agree():
    text, by_text = run("nft-relay.txt")
    js, by_json = run("nft-relay.json")
    assert [g.label for g in by_text.groups] == [g.label for g in by_json.groups]
    for a, b in zip(by_text.groups, by_json.groups):
        assert a.regions == b.regions
        assert [(f.code, f.count) for f in a.findings] == [(f.code, f.count) for f in b.findings]
    g = group(by_text, 16443)
    assert status(g)["cn-hangzhou"] == ("covered", set())
    # `ip saddr != 101.132.180.26 ... jump probe` only logs; the udp DNAT is another protocol
    assert status(g)["cn-shanghai"] == ("partial", SHANGHAI - {"139.224.15.48/32"})
    assert next(f for f in g.findings if f.code == "unused").origin.line == 18  # the IPv6 set


def test_nft_redirect_without_source_is_too_broad():
    _, report = run("nft-relay.txt", port=16505)
    (g,) = report.groups
    assert g.label == "tcp/16505 -> local:8080"
    assert any(f.code == "too-broad" and f.origin.line == 45 for f in g.findings)


def test_firewalld_zone_xml_rich_rules_and_plain_forward_port():
    _, report = run("firewalld-public.xml")
    fwd = group(report, 16443)
    # the ipset rule is unreadable without ipsets/; 139.224.15.48 is accepted to the *local* port only
    assert status(fwd)["cn-hangzhou"] == ("partial", {"100.104.12.64/26"})
    assert status(fwd)["cn-shanghai"] == ("missing", SHANGHAI)
    assert any(f.code == "unevaluated" and f.origin.line == 15 for f in report.findings)
    plain = group(report, 8443)
    assert any(f.code == "too-broad" for f in plain.findings)


def test_firewalld_zone_reads_its_ipsets_from_the_config_tree():
    _, report = run("firewalld-etc/zones/relay.xml")
    fwd = group(report, 16443)
    assert status(fwd)["cn-hangzhou"] == ("covered", set())
    # the ipset holds 139.224.15.48 too, and it is used by a forward-port rule
    assert status(fwd)["cn-shanghai"] == ("partial", SHANGHAI - {"139.224.15.48/32"})


def test_firewalld_list_all_with_deny_rule():
    _, report = run("firewalld-list-all.txt")
    fwd = group(report, 16443)
    assert status(fwd)["cn-hangzhou"] == ("partial", {"100.104.12.96/27"})
    assert status(fwd)["cn-shanghai"] == ("missing", SHANGHAI)


def test_netsh_block_beats_allow_and_disabled_or_udp_rules_do_not_count():
    _, report = run("netsh-show-rule.txt", port=16443)
    (g,) = report.groups
    assert status(g)["cn-hangzhou"] == ("partial", {"100.104.12.96/27"})
    assert status(g)["cn-shanghai"] == ("partial", SHANGHAI - {"139.224.15.48/32"})


def test_spec_groups_per_forward():
    _, report = run("spec-relay.yaml")
    by_name = {g.label: g for g in report.groups}
    assert all(r.status == "covered" for r in by_name["apiserver"].regions)
    hand = by_name["apiserver-handpicked"]
    assert status(hand)["cn-hangzhou"] == ("partial", {"100.104.12.96/27"})
    assert any(f.code == "private-range" for f in hand.findings)
    open_forward = by_name["metrics"]
    assert any(f.code == "too-broad" and f.origin.line == 18 for f in open_forward.findings)  # the forward


@pytest.mark.parametrize("text, fmt, where", [
    ("10.0.0.0/8\n10.0.0.1/8\n", "list", ":2: entry: 10.0.0.1/8 has host bits set (did you mean 10.0.0.0/8?)"),
    ("1.2.3.4\n300.1.1.1\n", "list", ":2: entry: '300.1.1.1' is not an IPv4 address"),
    ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -s 10.0.0.0/33 -j ACCEPT\nCOMMIT\n", "iptables",
     ":3: -s: /33 is outside 0-32 for IPv4"),
    ("-A INPUT -j ACCEPT\n", "iptables", ":1: line: not inside a table"),
    ('{"nftables": 3}', "nft-json", ": nftables: not `nft -j` output"),
    ("table inet x {\n chain c {\n", "nft", ": table: ends inside a table or chain"),
    ("<zone><port port='x' protocol='tcp'/></zone>", "firewalld-xml", ":1: port: 'x' is not a port"),
    ("<!DOCTYPE z [<!ENTITY a 'b'>]><zone/>", "firewalld-xml", ":1: XML with a DOCTYPE"),
    ("Rule Name: a\nRemoteIP: 1.2.3.4/99\nEnabled: Yes\nDirection: In\nAction: Allow\n", "netsh",
     ":1: a: RemoteIP: /99 is outside 0-32"),
])
def test_bad_input_names_file_line_and_field(tmp_path, text, fmt, where):
    path = tmp_path / "source"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as problem:
        load(str(path), Context(catalog=CATALOG), fmt)
    assert problem.value.render().startswith(str(path) + where)


@pytest.mark.parametrize("name", ["nft-vmap.txt", "nft-vmap.json"])
def test_nft_verdict_maps_are_split_per_key(name):
    """`ct state vmap`, `tcp dport vmap { 6443 : jump api }` and `ip saddr vmap` (the whitelist
    itself): the same answer from `nft list` text and from `nft -j`."""
    _, report = run(name, regions=["cn-hangzhou"], port=6443)
    (g,) = report.groups
    assert g.label == "tcp/6443 (local)"
    # 100.104.13.0/27 -> drop is not required; .96/27 has no element, so the input policy drops it
    assert status(g)["cn-hangzhou"] == ("partial", {"100.104.12.96/27"})
    _, ssh = run(name, regions=["cn-hangzhou"], port=22)
    assert any(f.code == "too-broad" for f in ssh.groups[0].findings)  # `jump ssh` accepts everyone
