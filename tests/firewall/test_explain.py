"""`netfwd explain` offline: files in, verdict and path out (the kernel comparison is in
tests/firewall/test_explain_diff.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from netfwd.cli import cli
from netfwd.explain import make_probe, offline_host, read_ruleset_files
from netfwd.firewall.trace import Tracer
from netfwd.owned import LEGACY_CHAINS

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "explain"
PRE = LEGACY_CHAINS["PRE"]  # the fixture was saved on a relay set up by a version with global names
SAVE, NFT, ROUTES = str(HERE / "relay-iptables-save.txt"), str(HERE / "docker-nft.txt"), str(HERE / "routes.json")


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["explain", "--ruleset", SAVE, "--ruleset", NFT, "--routes", ROUTES, *args])
    return result.exit_code, result.output


def test_a_whitelisted_client_is_forwarded_dnated_and_masqueraded_with_every_rule_named():
    code, out = run("--src", "10.1.1.5", "--dst", "10.1.1.1", "--dport", "16443", "-o", "json")
    doc = json.loads(out)
    assert code == 0
    assert (doc["verdict"], doc["to"], doc["source_seen"], doc["out_interface"]) == \
        ("forward", {"address": "10.2.2.2", "port": 6443}, "10.2.2.1", "int0")
    chains = [(s["hook"], s["chain"], s["rule"], s["action"]) for s in doc["path"]]
    assert ("prerouting", PRE, 1, "dnat") in chains and ("postrouting", "POSTROUTING", 1, "masquerade") in chains
    assert ("forward", "FORWARD", 1, "accept") in chains


def test_others_are_local_rejected_or_dropped_as_the_rules_say():
    host = offline_host(ROUTES, [])
    tracer = Tracer(read_ruleset_files([SAVE, NFT]), host)
    unknown = tracer.explain(make_probe("10.9.9.9", "10.1.1.1", "tcp", 16443))  # no route back: which interface?
    assert unknown.verdict == "unknown" and "input interface" in unknown.reason
    local = tracer.explain(make_probe("10.9.9.9", "10.1.1.1", "tcp", 16443, in_interface="ext0"))
    assert (local.verdict, local.path[-1].action) == ("drop", "drop")  # inet filter input: policy drop
    ssh = tracer.explain(make_probe("10.9.9.9", "10.1.1.1", "tcp", 22, in_interface="ext0"))
    assert ssh.verdict == "local" and ssh.to_port == 22
    reset = tracer.explain(make_probe("10.1.1.5", "10.2.2.66", "tcp", 8080))
    assert (reset.verdict, reset.reject_with) == ("reject", "tcp-reset")
    dropped = tracer.explain(make_probe("10.1.1.5", "10.2.2.9", "tcp", 8080))
    assert dropped.verdict == "drop"  # FORWARD policy DROP in the iptables file
    unrouted = tracer.explain(make_probe("10.1.1.5", "192.0.2.1", "udp", 53))
    assert (unrouted.verdict, unrouted.reject_with) == ("reject", "icmp-net-unreachable")


def test_an_unmodelled_match_is_unknown_and_named_never_guessed():
    tracer = Tracer(read_ruleset_files([SAVE, NFT]), offline_host(ROUTES, []))
    answer = tracer.explain(make_probe("10.1.1.5", "10.2.2.67", "tcp", 80))
    assert answer.verdict == "unknown" and "meta mark" in answer.reason


def test_many_packets_as_json_lines(tmp_path):
    packets = tmp_path / "p.jsonl"
    packets.write_text('{"src": "10.1.1.5", "dst": "10.1.1.1", "dport": 16443}\n'
                       '{"src": "10.1.1.5", "dst": "10.1.1.1", "proto": "udp", "dport": 22}\n')
    code, out = run("--packets", str(packets), "-o", "json")
    answers = [json.loads(line) for line in out.splitlines()]
    assert [a["verdict"] for a in answers] == ["forward", "drop"] and code == 1


@pytest.mark.parametrize("args, message", [
    (["--src", "10.1.1.5", "--dst", "10.1.1.1"], "needs a destination port"),
    (["--src", "10.1.1.5", "--dst", "::1", "--dport", "1"], "different IP versions"),
    (["--src", "nope", "--dst", "10.1.1.1", "--dport", "1"], "not an IP address"),
    (["--dst", "10.1.1.1"], "name the packet"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    from netfwd.cli import main

    with pytest.raises(SystemExit) as done:
        main(["explain", "--ruleset", SAVE, "--routes", ROUTES, *args])
    assert done.value.code == 2


def test_a_ruleset_file_of_another_kind_is_refused_naming_it(tmp_path, capsys):
    from netfwd.cli import main

    bad = tmp_path / "list.txt"
    bad.write_text("10.0.0.0/8\n")
    with pytest.raises(SystemExit) as done:
        main(["explain", "--ruleset", str(bad), "--src", "10.1.1.5", "--dst", "10.1.1.1", "--dport", "1"])
    assert done.value.code == 2 and str(bad) in capsys.readouterr().err


def test_before_conntrack_a_state_is_invalid_and_a_status_never_matches(tmp_path):
    """xt_conntrack and nft_ct without an entry (raw, priority < -200): the state is INVALID alone,
    so `! --ctstate DNAT` matches; a status match (`--ctstatus`, `ct status`) never does."""
    save = tmp_path / "raw.txt"
    save.write_text("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                    "-A PREROUTING -p udp -m conntrack --ctstate DNAT -j DROP\n"
                    "-A PREROUTING -p udp -m conntrack --ctstatus CONFIRMED -j DROP\n"
                    "-A PREROUTING -p udp -m conntrack ! --ctstatus CONFIRMED -j DROP\n"
                    "-A PREROUTING -p udp -m udp --dport 53 -m conntrack ! --ctstate SNAT,DNAT -j DROP\n"
                    "COMMIT\n")
    nft = tmp_path / "early.nft"
    nft.write_text("table ip t {\n  chain early {\n    type filter hook prerouting priority -250; policy accept;\n"
                   "    tcp dport 80 ct status dnat drop\n    tcp dport 80 ct status != dnat drop\n"
                   "    tcp dport 81 ct state != new drop\n  }\n}\n")
    tracer = Tracer(read_ruleset_files([str(save), str(nft)]), offline_host(ROUTES, []))
    dropped = tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "udp", 53))
    assert dropped.verdict == "drop" and "! --ctstate SNAT,DNAT" in dropped.path[-1].text
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "udp", 54)).verdict == "forward"
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "tcp", 80)).verdict == "forward"
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "tcp", 81)).verdict == "drop"


def test_before_conntrack_xt_conntrack_decides_on_its_state_alone_and_entry_matches_never_match(tmp_path):
    """Without an entry, `-m conntrack` with a --ctstate answers the state and skips its other options;
    without a state it, like nft's `ct reply`/`ct original`, never matches (docs/facts.md)."""
    save = tmp_path / "raw.txt"
    save.write_text("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
                    "-A PREROUTING -p udp -m conntrack --ctproto udp -j DROP\n"
                    "-A PREROUTING -p udp -m conntrack ! --ctreplsrc 10.9.9.9/32 -j DROP\n"
                    "-A PREROUTING -p udp -m conntrack --ctstate NEW --ctstatus CONFIRMED -j DROP\n"
                    "-A PREROUTING -p udp -m udp --dport 53 -m conntrack ! --ctstate NEW --ctreplsrc 10.9.9.9/32 "
                    "-j DROP\n"
                    "COMMIT\n")
    nft = tmp_path / "early.nft"
    nft.write_text("table ip t {\n  chain early {\n    type filter hook prerouting priority -250; policy accept;\n"
                   "    tcp dport 80 ct reply ip saddr 10.2.2.2 drop\n"
                   "    tcp dport 80 ct original ip daddr != 10.9.9.9 drop\n  }\n}\n")
    tracer = Tracer(read_ruleset_files([str(save), str(nft)]), offline_host(ROUTES, []))
    dropped = tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "udp", 53))  # the --ctreplsrc is not looked at
    assert dropped.verdict == "drop" and "--ctreplsrc 10.9.9.9/32" in dropped.path[-1].text
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "udp", 54)).verdict == "forward"
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.2", "tcp", 80)).verdict == "forward"


def test_nat_chains_sharing_a_priority_are_unknown_when_their_order_would_change_the_verdict(tmp_path):
    """The NAT core stops at the first nat chain that maps or drops, and of two at one priority the
    one created last runs first (no dump tells): a drop and a mapping tied is unknown, two drops are not."""
    nft = tmp_path / "nat.nft"
    nft.write_text("table ip a {\n  chain pre {\n    type nat hook prerouting priority -100; policy accept;\n"
                   "    tcp dport { 80, 81 } drop\n  }\n}\n"
                   "table ip b {\n  chain pre {\n    type nat hook prerouting priority -100; policy accept;\n"
                   "    tcp dport 80 dnat to 10.2.2.2:8080\n    tcp dport { 81, 82 } drop\n  }\n}\n")
    tracer = Tracer(read_ruleset_files([str(nft)]), offline_host(ROUTES, []))
    tied = tracer.explain(make_probe("10.1.1.5", "10.2.2.3", "tcp", 80))
    assert tied.verdict == "unknown" and "share priority -100" in tied.reason
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.3", "tcp", 81)).verdict == "drop"
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.3", "tcp", 82)).verdict == "drop"
    assert tracer.explain(make_probe("10.1.1.5", "10.2.2.3", "tcp", 83)).verdict == "forward"
