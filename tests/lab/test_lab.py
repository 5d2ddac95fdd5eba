"""The lab itself, in real namespaces: topology, servers, DNAT + masquerade, teardown."""

from __future__ import annotations

import subprocess

import pytest

from netfwd.lab import Lab

pytestmark = pytest.mark.netns


def dnat(lab: Lab, listen: int, port: int, masquerade: bool = True) -> None:
    """The recipe's two iptables lines, inside the relay only."""
    a = lab.addrs
    lab.enable_forwarding()
    lab.run("relay", ["iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport",
                      str(listen), "-j", "DNAT", "--to-destination", f"{a.onprem}:{port}"])
    if masquerade:
        lab.run("relay", ["iptables", "-w", "5", "-t", "nat", "-A", "POSTROUTING", "-p", "tcp", "-d",
                          a.onprem, "--dport", str(port), "-j", "MASQUERADE"])


def test_namespaces_are_named_after_the_lab(lab):
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for node in ("client", "relay", "onprem"):
        assert lab.ns(node) == f"nf-{lab.name}-{node}"
        assert lab.ns(node) in names
    with pytest.raises(ValueError):
        lab.ns("router")


def test_addresses_are_configured_where_the_plan_says(lab):
    a = lab.addrs
    client = lab.run("client", ["ip", "-4", "-o", "addr"]).stdout
    assert f"{a.client_allowed}/" in client and f"{a.client_denied}/" in client
    relay = lab.run("relay", ["ip", "-4", "-o", "addr"]).stdout
    assert f"{a.relay_outside_if}    inet {a.relay_outside}/" in relay
    assert f"{a.relay_inside_if}    inet {a.relay_inside}/" in relay
    assert f"default via {a.relay_outside}" in lab.run("client", ["ip", "route"]).stdout
    assert "default" not in lab.run("onprem", ["ip", "route"]).stdout  # no route back
    assert lab.run("relay", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"


def test_whoami_reports_the_source_address_the_server_saw(lab):
    a = lab.addrs
    lab.start_server("relay", 7000, udp=True)
    assert lab.whoami("client", a.relay_outside, 7000) == a.client_allowed
    assert lab.whoami("client", a.relay_outside, 7000, source=a.client_denied) == a.client_denied
    assert lab.connect("client", a.relay_outside, 7000, udp=True).peer == a.client_allowed
    refused = lab.connect("client", a.relay_outside, 7001)
    assert not refused and refused.reason == "conn-refused" and refused.peer is None


def test_onprem_has_no_route_back_so_dnat_needs_masquerade(lab):
    a = lab.addrs
    lab.start_server("onprem", 6443)
    dnat(lab, 16443, 6443, masquerade=False)
    broken = lab.connect("client", a.relay_outside, 16443, timeout=0.7)
    assert broken.reason == "no-response"  # the SYN-ACK has nowhere to go
    lab.run("relay", ["iptables", "-w", "5", "-t", "nat", "-A", "POSTROUTING", "-p", "tcp", "-d",
                      a.onprem, "--dport", "6443", "-j", "MASQUERADE"])
    assert lab.whoami("client", a.relay_outside, 16443) == a.relay_inside


def test_route_back_makes_the_client_visible(make_lab):
    lab = make_lab(onprem_route_back=True)
    a = lab.addrs
    lab.start_server("onprem", 6443)
    dnat(lab, 16443, 6443, masquerade=False)
    assert lab.whoami("client", a.relay_outside, 16443) == a.client_allowed


def test_router_makes_the_relay_hop_two(make_lab):
    lab = make_lab(router=True)
    a = lab.addrs
    assert lab.ns("router") == f"nf-{lab.name}-router"
    lab.start_server("relay", 7000)
    assert lab.whoami("client", a.relay_outside, 7000) == a.client_allowed
    trace = lab.run("client", ["ip", "route", "get", a.relay_outside]).stdout
    assert f"via {a.router_client}" in trace


def test_apiserver_stand_in_through_dnat(lab):
    a = lab.addrs
    pid = lab.start_server("onprem", 6443, kind="apiserver", extra_sans=[a.relay_outside],
                           git_version="v1.27.9")
    dnat(lab, 16443, 6443)
    version = lab.https_get("client", a.relay_outside, 16443, "/version")
    assert version.ok and version.status == 200
    assert version.json()["gitVersion"] == "v1.27.9" and version.json()["minor"] == "27"
    for path in ("/livez", "/readyz", "/healthz"):
        answer = lab.https_get("client", a.relay_outside, 16443, path)
        assert (answer.status, answer.body) == (200, "ok")
    assert lab.https_get("client", a.relay_outside, 16443, "/api").status == 403
    assert any(line.startswith(f"https {a.relay_inside} GET /version 200") for line in lab.server_log(pid))


def test_apiserver_without_the_relay_in_its_sans_fails_verification(lab):
    a = lab.addrs
    lab.start_server("onprem", 6443, kind="apiserver")  # kubeadm-like SANs: not the relay
    dnat(lab, 16443, 6443)
    mismatch = lab.https_get("client", a.relay_outside, 16443)
    assert (mismatch.ok, mismatch.stage, mismatch.reason) == (False, "tls", "cert-verify")
    assert "mismatch" in (mismatch.detail or "") or "IP address" in (mismatch.detail or "")
    named = lab.https_get("client", a.relay_outside, 16443, server_name="kubernetes.default")
    assert named.ok and named.status == 200  # the tls-server-name workaround


def test_apiserver_with_anonymous_auth_off_answers_401(lab):
    a = lab.addrs
    lab.start_server("onprem", 6443, kind="apiserver", anonymous=False, token="s3cret")
    for path in ("/version", "/livez", "/api"):
        assert lab.https_get("relay", a.onprem, 6443, path, insecure=True).status == 401
    direct = lab.https_get("relay", a.onprem, 6443, "/livez", server_name=a.onprem)
    assert direct.status == 401 and direct.json()["reason"] == "Unauthorized"
    assert lab.https_get("relay", a.onprem, 6443, "/livez", token="s3cret").status == 200


def test_stop_server_stops_only_that_process(lab):
    a = lab.addrs
    first = lab.start_server("relay", 7000)
    second = lab.start_server("relay", 7001)
    lab.stop_server(first)
    assert lab.connect("client", a.relay_outside, 7000).reason == "conn-refused"
    assert lab.whoami("client", a.relay_outside, 7001) == a.client_allowed
    assert [p.pid for p in lab.processes()] == [second]
    with pytest.raises(ValueError):
        lab.stop_server(1)


def test_status_reads_the_kernel_and_shows_only_netfwd_rules(lab):
    a = lab.addrs
    lab.run("relay", ["iptables", "-w", "5", "-t", "nat", "-N", "NETFWD-PRE"])
    lab.run("relay", ["iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", "-p", "tcp", "--dport", "9",
                      "-j", "DNAT", "--to-destination", f"{a.onprem}:9"])  # not netfwd's
    lab.enable_forwarding()
    status = lab.status()
    assert status["applied"]["iptables-nft"] == [":NETFWD-PRE - [0:0]"]
    assert status["applied"]["ip_forward"] == ["1"]
    assert f"{a.relay_inside}/24" in status["nodes"]["relay"]["interfaces"][a.relay_inside_if]
    assert status["complete"] and set(status["nodes"]) == {"client", "relay", "onprem"}
