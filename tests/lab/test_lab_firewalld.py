"""firewalld in the lab's relay: a private D-Bus, mount namespace and /etc/firewalld that carry real traffic."""

from __future__ import annotations

from pathlib import Path

import pytest

from netfwd.errors import EnvironmentProblem

pytestmark = pytest.mark.netns


def test_firewalld_answers_and_forwards_only_the_allowed_source(lab_fw):
    lab, a = lab_fw, lab_fw.addrs
    assert lab.firewall_cmd("--state").stdout.strip() == "running"
    lab.start_server("onprem", 6443)
    zone = lab.firewall_cmd("--get-default-zone").stdout.strip()
    lab.firewall_cmd(f"--zone={zone}", "--add-interface", a.relay_outside_if)
    lab.firewall_cmd(f"--zone={zone}", "--add-rich-rule",
                     f'rule family="ipv4" source address="{a.allowed_cidr}" forward-port port="16443" '
                     f'protocol="tcp" to-port="6443" to-addr="{a.onprem}"')
    lab.firewall_cmd(f"--zone={zone}", "--add-rich-rule",
                     f'rule family="ipv4" destination address="{a.onprem}" masquerade')
    assert lab.whoami("client", a.relay_outside, 16443, source=a.client_allowed) == a.relay_inside
    denied = lab.connect("client", a.relay_outside, 16443, source=a.client_denied, timeout=0.7)
    assert not denied.ok
    assert "16443" in lab.firewall_cmd(f"--zone={zone}", "--list-rich-rules").stdout


def test_firewalld_config_and_bus_are_private(lab_fw):
    lab = lab_fw
    lab.firewall_cmd("--permanent", "--new-zone=nftest")
    private = lab.workdir / "firewalld" / "etc" / "zones" / "nftest.xml"
    assert private.exists()
    assert not Path("/etc/firewalld/zones/nftest.xml").exists()  # the host's config is untouched
    seen = lab.relay_exec_fw(["sh", "-c", "test -S /run/dbus/system_bus_socket && ls /etc/firewalld/zones"])
    assert "nftest.xml" in seen.stdout.split()
    host_bus = Path("/run/dbus/system_bus_socket")
    assert not host_bus.exists() or host_bus.stat().st_ino != int(
        lab.relay_exec_fw(["stat", "-c", "%i", "/run/dbus/system_bus_socket"]).stdout)


def test_firewall_cmd_needs_a_started_firewalld(lab):
    with pytest.raises(EnvironmentProblem, match="start_firewalld"):
        lab.firewall_cmd("--state")
    assert lab.start_firewalld() == lab.start_firewalld()  # idempotent: one firewalld per lab
    kinds = sorted(p.kind for p in lab.processes())
    assert kinds == ["dbus-daemon", "firewalld"]
