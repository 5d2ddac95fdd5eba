"""`--userland centos7`: the relay sees CentOS 7's iptables 1.4.21 and firewalld 0.6.3, no nf_tables tool,
and the host (and the lab's other nodes) keep their own programs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from netfwd.lab import Lab

pytestmark = pytest.mark.netns


@pytest.fixture
def c7(make_lab, centos7_userland):
    return make_lab(userland="centos7")


def test_relay_has_only_the_old_iptables(c7):
    assert c7.run("relay", ["iptables", "-V"]).stdout.strip() == "iptables v1.4.21"
    for name in ("iptables-save", "iptables-restore", "ip6tables", "ip6tables-save", "ip6tables-restore"):
        assert c7.run("relay", ["sh", "-c", f"readlink -f \"$(command -v {name})\""]).stdout.strip().endswith(
            "/bin/xtables-multi")
    hidden = "nft iptables-nft iptables-legacy iptables-nft-restore xtables-nft-multi xtables-legacy-multi"
    found = c7.run("relay", ["sh", "-c", f"for t in {hidden}; do command -v $t; ls /usr/sbin/$t /sbin/$t; done"],
                   check=False)
    assert found.stdout.strip() == ""
    # its quirks, as the issue reported them: -w takes no seconds, iptables-restore has no -w
    bad = c7.run("relay", ["iptables", "-w", "5", "-t", "nat", "-N", "X"], check=False)
    assert bad.returncode != 0 and "Bad argument `5'" in bad.stderr
    assert c7.run("relay", ["iptables-restore", "--test", "-w", "5"], input="", check=False).returncode != 0
    # the client and the host still have the modern one
    assert "v1.4.21" not in c7.run("client", ["iptables", "-V"]).stdout
    assert "v1.4.21" not in subprocess.run(["iptables", "-V"], capture_output=True, text=True).stdout


def test_old_iptables_carries_traffic_through_dnat(c7):
    a = c7.addrs
    c7.enable_forwarding()
    c7.start_server("onprem", 6443)
    c7.run("relay", ["iptables", "-w", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "16443",
                     "-j", "DNAT", "--to-destination", f"{a.onprem}:6443"])
    c7.run("relay", ["iptables", "-w", "-t", "nat", "-A", "POSTROUTING", "-d", a.onprem, "-j", "MASQUERADE"])
    assert c7.whoami("client", a.relay_outside, 16443) == a.relay_inside
    assert "v1.4.21" in c7.run("relay", ["iptables-save"]).stdout


def test_firewalld_063_with_the_iptables_backend(make_lab, centos7_userland):
    c7 = make_lab(userland="centos7", firewalld=True)
    assert c7.firewall_cmd("--version").stdout.strip() == "0.6.3"
    assert "PREROUTING_ZONES" in c7.relay_exec_fw(["iptables-save", "-t", "nat"]).stdout  # its iptables backend
    assert c7.relay_exec_fw(["sh", "-c", "command -v nft"], check=False).stdout == ""


def test_cli_lab_up_userland_centos7_and_down(centos7_userland):
    name = "c7cli" + str(abs(hash(sys.argv[0])) % 1000)
    up = subprocess.run([sys.executable, "-m", "netfwd", "lab", "up", "--name", name, "--userland", "centos7",
                         "--no-apiserver", "--output", "json"], capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        assert Lab.attach(name).userland == "centos7"
        run = subprocess.run([sys.executable, "-m", "netfwd", "lab", "exec", "--name", name, "relay", "--",
                              "iptables", "-V"], capture_output=True, text=True, timeout=60)
        assert run.stdout.strip() == "iptables v1.4.21"
        assert json.loads(up.stdout)["userland"] == "centos7"
    finally:
        subprocess.run([sys.executable, "-m", "netfwd", "lab", "down", "--name", name], capture_output=True, timeout=60)
    assert not any(line.startswith(f"nf-{name}-") for line in
                   subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines())


def test_status_shows_the_userland_and_the_rules_applied(c7, tmp_path):
    from netfwd import owned
    from netfwd.dialects import get_dialect
    from netfwd.spec import load_spec

    script = get_dialect("iptables-restore").render(load_spec("rules/example.yaml"))
    c7.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "bash", "-s"], input=script)
    status = c7.status()
    assert status["userland"] == "centos7"
    pre = owned.chain(load_spec("rules/example.yaml").cluster, "PRE")
    assert any(pre in line for line in status["applied"]["iptables-legacy"])
