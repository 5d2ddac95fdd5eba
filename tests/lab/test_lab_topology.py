"""The lab's address plan and state record: pure logic, no root needed."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from netfwd.host import proc_start
from netfwd.lab.state import LabState, Process, ns_name
from netfwd.lab.topology import CANDIDATES, Addresses, choose_block, plan


def test_client_addresses_straddle_the_allowed_cidr():
    a = plan("10.200.0.0/16")
    allowed = ip_network(a.allowed_cidr)
    assert ip_address(a.client_allowed) in allowed
    assert ip_address(a.client_denied) not in allowed
    assert ip_address(a.relay_outside) not in allowed  # the relay is never a "client" by accident


def test_every_address_lies_in_its_link_and_the_block():
    for router in (False, True):
        a = plan("10.201.0.0/16", router=router)
        block = ip_network(a.block)
        assert ip_address(a.client_allowed) in ip_network(a.client_net)
        assert ip_address(a.relay_outside) in ip_network(a.outside_net)
        assert ip_address(a.relay_inside) in ip_network(a.inside_net)
        assert ip_address(a.onprem) in ip_network(a.inside_net)
        used = [v for k, v in a.as_dict().items() if v and k not in ("block",) and not k.endswith("_if")]
        assert all(ip_network(v, strict=False).subnet_of(block) for v in used)
        assert len({a.client_allowed, a.client_denied, a.relay_outside, a.relay_inside, a.onprem}) == 5


def test_router_puts_the_relay_on_its_own_link():
    a = plan("10.200.0.0/16", router=True)
    assert a.client_gateway == a.router_client
    assert a.relay_outside != a.client_gateway
    assert ip_address(a.router_relay) in ip_network(a.outside_net)
    assert not ip_network(a.outside_net).overlaps(ip_network(a.client_net))


def test_addresses_read_like_a_mapping_and_round_trip():
    a = plan("10.200.0.0/16", relay_outside_if="eth0")
    assert a["onprem"] == a.onprem and a["relay_outside_if"] == "eth0"
    with pytest.raises(KeyError):
        a["nope"]
    assert Addresses.from_dict(a.as_dict()) == a


def test_block_choice_skips_every_routed_overlap():
    assert choose_block([]) == CANDIDATES[0]
    assert choose_block(["0.0.0.0/0", "192.0.2.0/24"]) == CANDIDATES[0]  # default route is not a clash
    assert choose_block(["10.200.5.0/24"]) == CANDIDATES[1]
    assert choose_block(["10.192.0.0/11", "fd00::/64"]) == "10.224.0.0/16"
    with pytest.raises(LookupError):
        choose_block(["10.0.0.0/8", "172.16.0.0/12"])


def test_state_round_trips_and_lists(tmp_path, monkeypatch):
    monkeypatch.setenv("NETFWD_LAB_DIR", str(tmp_path))
    state = LabState("ab12", namespaces=[ns_name("ab12", "client")],
                     processes=[Process(1, 5, "relay", "whoami", ["x"], 80)])
    state.save()
    again = LabState.load("ab12")
    assert again.namespaces == ["nf-ab12-client"]
    assert again.processes[0].port == 80 and again.processes[0].kind == "whoami"
    from netfwd.lab.state import recorded_labs
    assert recorded_labs() == ["ab12"]


def test_a_recycled_pid_is_not_our_process():
    import os
    me = Process(os.getpid(), proc_start(os.getpid()), "relay", "x", [])
    assert me.alive()
    assert not Process(os.getpid(), (proc_start(os.getpid()) or 0) + 1, "relay", "x", []).alive()
    assert proc_start(2 ** 22 + 7) is None


def test_the_builder_of_a_lab_is_recognised_by_pid_and_start_time(tmp_path, monkeypatch):
    monkeypatch.setenv("NETFWD_LAB_DIR", str(tmp_path))
    state = LabState("cd34")
    assert state.owner_alive()
    state.owner_starttime = (state.owner_starttime or 0) + 1  # same PID, another process: not ours
    assert not state.owner_alive()
