"""`--against live`: netfwd's rules as they are in a relay namespace this test creates (random name).

The namespace gets a veth uplink (both ends inside it) with an address and a default route (never used to send
anything: no traffic at all is generated), netfwd's own iptables ruleset from a spec, plus a
foreign DROP in FORWARD that the live reading must evaluate in context.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess

import pytest

from netfwd.cli import main
from netfwd.spec import parse_spec

pytestmark = pytest.mark.netns

SPEC = """
version: 1
cluster: live
relay: {os: linux, interface: uplink0, address: 10.66.0.4}
forwards:
  - name: apiserver
    listen: {port: 16443, address: 10.66.0.4}
    to: {address: 10.66.1.5, port: 6443}
    allow: {regions: [cn-hangzhou]}
"""

NFT = """
table inet netfwd {
  set allow4 { type ipv4_addr; flags interval; elements = { 47.96.166.214, 100.104.12.64/26 } }
  chain pre { type nat hook prerouting priority dstnat; policy accept;
    iifname "uplink0" ip saddr @allow4 tcp dport 16443 dnat ip to 10.66.1.5:6443
  }
  chain forward_filter { type filter hook forward priority filter; policy accept;
    ip saddr 100.104.12.64/28 drop
  }
}
"""


def sh(*argv: str, stdin: str | None = None) -> str:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{argv}: {done.stderr}"
    return done.stdout


@pytest.fixture
def relay_ns():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 missing")
    name = f"nfwl-{secrets.token_hex(4)}"
    sh("ip", "netns", "add", name)
    try:
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1")
        sh("ip", "-n", name, "addr", "add", "10.66.0.4/24", "dev", "uplink0")
        sh("ip", "-n", name, "link", "set", "uplink0", "up")
        sh("ip", "-n", name, "route", "add", "default", "via", "10.66.0.1")
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30)


def verify_live(name: str, capsys, *extra: str) -> tuple[int, dict]:
    with pytest.raises(SystemExit) as done:
        main(["whitelist", "verify", "-r", "cn-hangzhou", "--against", "live", "--netns", name,
              "--local-networks", "none", "-o", "json", *extra])
    return done.value.code, json.loads(capsys.readouterr().out)


def test_live_iptables_with_a_foreign_drop(relay_ns, capsys):
    if shutil.which("iptables-restore") is None:
        pytest.skip("iptables missing")
    from netfwd import xtables

    spec = parse_spec(SPEC, "live.yaml")
    sh("ip", "netns", "exec", relay_ns, "iptables-restore", "-w", "5", "--noflush", stdin=xtables.restore_payload(spec))
    for table, builtin, owned in xtables.jumps(spec.cluster):
        sh("ip", "netns", "exec", relay_ns, "iptables", "-w", "5", "-t", table, "-I", builtin, "1", "-j", owned)
    code, doc = verify_live(relay_ns, capsys)
    assert code == 0 and doc["format"] == "live-iptables"
    (group,) = doc["groups"]
    assert group["label"] == "tcp/16443 -> 10.66.1.5:6443" and group["regions"][0]["status"] == "covered"
    # the relay's address (-d 10.66.0.4) and interface (-i uplink0) were read from the namespace
    assert not [f for f in doc["findings"] if f["code"] == "unevaluated"]
    # someone else's DROP, inserted before netfwd's jump, must be seen
    sh("ip", "netns", "exec", relay_ns, "iptables", "-w", "5", "-I", "FORWARD", "1", "-s", "100.104.12.96/27",
       "-j", "DROP")
    code, doc = verify_live(relay_ns, capsys)
    assert code == 1 and doc["groups"][0]["regions"][0]["missing"] == ["100.104.12.96/27"]


def test_live_nft_table(relay_ns, capsys):
    if shutil.which("nft") is None:
        pytest.skip("nft missing")
    sh("ip", "netns", "exec", relay_ns, "nft", "-f", "-", stdin=NFT)
    code, doc = verify_live(relay_ns, capsys)
    assert code == 1 and doc["format"] == "live-nft"
    assert doc["groups"][0]["regions"][0]["missing"] == ["100.104.12.64/28"]
    # with another ingress interface, netfwd's iifname match does not apply: nothing is forwarded
    code, doc = verify_live(relay_ns, capsys, "--interface", "eth9")
    assert code == 1 and doc["groups"] == []
    assert any("no whitelist found" in f["message"] for f in doc["findings"])


def test_live_without_netfwd_rules_is_an_environment_problem(relay_ns, capsys):
    with pytest.raises(SystemExit) as done:
        main(["whitelist", "verify", "-r", "cn-hangzhou", "--against", "live", "--netns", relay_ns,
              "--local-networks", "none"])
    assert done.value.code == 3 and "no netfwd-owned rules" in capsys.readouterr().err
