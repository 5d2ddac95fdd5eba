"""`netfwd whitelist verify|render` end to end: exit codes, the three outputs, one-line bad input."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from netfwd.cli import main

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "whitelist"


def run(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


def verify(*args):
    return ["whitelist", "verify", "--local-networks", "none", *args]


def test_covered_exits_0_and_gaps_exit_1(tmp_path, capsys):
    good = tmp_path / "good.txt"
    good.write_text("47.96.166.214\n100.104.12.64/26\n", encoding="utf-8")
    code, out, err = run(verify("-r", "cn-hangzhou", "--against", str(good)), capsys)
    assert code == 0 and "covered" in out and err == ""
    code, out, _ = run(verify("-r", "cn-hangzhou,cn-beijing", "--against", str(good)), capsys)
    assert code == 1 and "missing" in out and "47.95.202.245/32" in out


def test_strict_fails_on_warnings(tmp_path, capsys):
    wide = tmp_path / "wide.txt"
    wide.write_text("0.0.0.0/0\n", encoding="utf-8")
    assert run(verify("-r", "cn-hangzhou", "--against", str(wide)), capsys)[0] == 0
    assert run(verify("-r", "cn-hangzhou", "--against", str(wide), "--strict"), capsys)[0] == 1


def test_json_report(capsys):
    code, out, _ = run(verify("-r", "cn-hangzhou,cn-huhehaote", "--against", str(FIX / "plain-list.txt"),
                              "-o", "json"), capsys)
    doc = json.loads(out)
    assert code == 1 and doc["exit_code"] == 1 and doc["format"] == "list" and not doc["covered"]
    regions = {r["region"]: r for r in doc["groups"][0]["regions"]}
    assert regions["cn-hangzhou"]["status"] == "covered"
    assert regions["cn-huhehaote"] == {**regions["cn-huhehaote"], "status": "missing",
                                       "missing": ["39.104.147.68/32", "100.104.36.0/26"], "missing_addresses": 65}
    duplicate = [f for f in doc["findings"] if f["code"] == "catalog-duplicate"]
    assert duplicate and duplicate[0]["cidrs"] == ["100.104.36.0/26"] and "us-east-1" in duplicate[0]["message"]
    codes = {f["code"] for f in doc["groups"][0]["findings"]}
    assert {"too-broad", "private-range", "unused"} <= codes


def test_junit_report(capsys):
    code, out, _ = run(verify("-r", "cn-hangzhou,cn-shanghai", "--against", str(FIX / "iptables-docker-relay.txt"),
                              "--port", "16443", "-o", "junit"), capsys)
    root = ET.fromstring(out.split("\n", 1)[1])
    assert code == 1 and root.get("tests") == "2" and root.get("failures") == "1"
    (failure,) = root.iter("failure")
    assert failure.get("type") == "partial" and "47.100.0.176/32" in failure.text


def test_local_overlap_from_option(capsys):
    code, out, _ = run(["whitelist", "verify", "-r", "eu-west-1", "--against", str(FIX / "plain-list.txt"),
                        "--local-networks", "172.16.4.0/24,192.168.7.0/24", "-o", "json"], capsys)
    doc = json.loads(out)
    overlaps = [f for f in doc["groups"][0]["findings"] if f["code"] == "local-overlap"]
    assert [f["cidrs"] for f in overlaps] == [["192.168.7.0/24"]]
    assert doc["local_networks"] == ["172.16.4.0/24", "192.168.7.0/24"]


def test_local_networks_default_to_the_routing_table(tmp_path, capsys):
    wide = tmp_path / "wide.txt"
    wide.write_text("0.0.0.0/0\n", encoding="utf-8")
    code, out, _ = run(["whitelist", "verify", "-r", "cn-hangzhou", "--against", str(wide), "-o", "json"], capsys)
    assert code == 0
    from netfwd.whitelist.localnets import from_routing_table

    assert json.loads(out)["local_networks"] == [str(n) for n in from_routing_table().iter_cidrs()]


@pytest.mark.parametrize("args, message", [
    (["-r", "cn-nowhere", "--against", "x"], "--regions: unknown region 'cn-nowhere'"),
    (["-r", "cn-hangzhou", "--against", "/nonexistent/wl.txt"], "/nonexistent/wl.txt: cannot read"),
    (["-r", "cn-hangzhou", "--against", str(FIX / "plain-list.txt"), "--format", "pf"], "--format: 'pf' is not"),
    (["-r", "cn-hangzhou", "--against", str(FIX / "plain-list.txt"), "--local-networks", "10.0.0.1/8"],
     "--local-networks: 10.0.0.1/8 has host bits set"),
    (["-r", "cn-hangzhou", "--against", str(FIX / "plain-list.txt"), "--netns", "x"], "--netns: only applies"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    code, out, err = run(["whitelist", "verify", *args], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def test_bad_source_line_is_reported_with_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("47.96.166.214\n47.96.166.214/24\n", encoding="utf-8")
    code, _, err = run(verify("-r", "cn-hangzhou", "--against", str(bad)), capsys)
    assert code == 2 and err.strip() == (f"netfwd: error: {bad}:2: entry: 47.96.166.214/24 has host bits set "
                                         "(did you mean 47.96.166.0/24?)")


@pytest.mark.parametrize("dialect, expected", [
    ("ipset", ["create netfwd_allow hash:net family inet maxelem 65536 -exist", "flush netfwd_allow",
               "add netfwd_allow 47.96.166.214/32 -exist", "add netfwd_allow 100.104.12.64/26 -exist",
               "add netfwd_allow 203.0.113.0/24 -exist"]),
    ("nft", ["add table inet netfwd", "add set inet netfwd netfwd_allow { type ipv4_addr; flags interval; }",
             "flush set inet netfwd netfwd_allow",
             "add element inet netfwd netfwd_allow { 47.96.166.214/32, 100.104.12.64/26, 203.0.113.0/24 }"]),
    ("netsh", ["remoteip=47.96.166.214/32,100.104.12.64/26,203.0.113.0/24"]),
    ("powershell", ["-RemoteAddress @('47.96.166.214/32', '100.104.12.64/26', '203.0.113.0/24')"]),
    ("list", ["47.96.166.214/32", "100.104.12.64/26", "203.0.113.0/24"]),
])
def test_render_aggregates_minimally(dialect, expected, capsys):
    code, out, _ = run(["whitelist", "render", "-r", "cn-hangzhou", "--cidrs", "203.0.113.0-203.0.113.255",
                        "--dialect", dialect], capsys)
    assert code == 0 and out.splitlines() == expected


def test_render_firewalld_ipsets_per_family(capsys):
    code, out, _ = run(["whitelist", "render", "--cidrs", "10.1.0.0/25,10.1.0.128/25,2001:db8::/64",
                        "--dialect", "firewalld", "--name", "relay_allow"], capsys)
    assert code == 0
    docs = out.split("<!-- ")[1:]
    v4 = ET.fromstring(docs[0].split("\n", 1)[1])
    v6 = ET.fromstring(docs[1].split("\n", 1)[1])
    assert [e.text for e in v4.iter("entry")] == ["10.1.0.0/24"]
    assert [e.text for e in v6.iter("entry")] == ["2001:db8::/64"]
    assert v6.find("option").get("value") == "inet6" and docs[1].startswith("relay_allow6.xml")


def test_render_rendered_ipset_is_accepted_by_verify(tmp_path, capsys):
    _, out, _ = run(["whitelist", "render", "-r", "all", "--dialect", "list"], capsys)
    path = tmp_path / "all.txt"
    path.write_text(out, encoding="utf-8")
    code, _, _ = run(verify("-r", "all", "--against", str(path)), capsys)
    assert code == 0


@pytest.mark.parametrize("args, message", [
    (["--dialect", "nft"], "--regions: give --regions and/or --cidrs"),
    (["-r", "cn-hangzhou", "--dialect", "pf"], "--dialect: 'pf' is not a whitelist dialect"),
    (["-r", "cn-hangzhou", "--dialect", "nft", "--name", "a;b"], "--name: 'a;b' is not a safe set name"),
    (["--cidrs", "1.2.3.4/40", "--dialect", "nft"], "--cidrs: /40 is outside 0-32"),
])
def test_render_bad_input(args, message, capsys):
    code, _, err = run(["whitelist", "render", *args], capsys)
    assert code == 2 and message in err and err.count("\n") == 1


def test_regions_table_names_the_region_a_duplicate_cidr_is_shared_with(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run(["regions"], capsys)
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
    assert code == 0
    assert "catalog-duplicate (with us-east-1)" in rows["cn-huhehaote"]
    assert "catalog-duplicate (with eu-west-1)" in rows["eu-central-1"] and "private-range" in rows["eu-central-1"]
    assert "!" not in rows["cn-hangzhou"]
