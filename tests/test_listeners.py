"""Which local listeners a forward would take over (plan/apply refuse those; doctor's listen-port)."""

from __future__ import annotations

import pytest
from netaddr import IPAddress

from netfwd.host import Socket
from netfwd.listeners import clashes, rows, serves
from netfwd.spec import parse_spec


def sock(address: str, port: int = 2222, protocol: str = "tcp") -> Socket:
    return Socket(protocol, IPAddress(address), port, inode=1)


@pytest.mark.parametrize("address,listen,family,local,taken", [
    ("0.0.0.0", None, 4, False, True),         # sshd on every address: a wildcard forward takes it
    ("::", None, 4, False, True),              # :: may be dual-stack
    ("0.0.0.0", None, 6, False, False),        # an IPv4 wildcard serves no IPv6 client
    ("10.0.0.5", None, 4, False, True),        # a wildcard forward covers every local address
    ("10.0.0.5", "10.0.0.5", 4, False, True),
    ("10.0.0.6", "10.0.0.5", 4, False, False),  # another address: untouched
    ("0.0.0.0", "10.0.0.5", 4, False, True),
    ("127.0.0.1", None, 4, False, False),      # remote clients never reach loopback...
    ("127.0.0.1", None, 4, True, True),        # ...but the relay's own connections (local: true) do
])
def test_serves(address, listen, family, local, taken):
    assert serves(sock(address), None if listen is None else IPAddress(listen), family, local) is taken


def test_clashes_name_the_forward_by_index_and_respect_takeover_and_protocol():
    spec = parse_spec("""version: 1
cluster: c
forwards:
  - {name: a, listen: {port: 16443}, to: {address: 10.0.0.2, port: 6443}}
  - {name: b, listen: {port: 2222}, to: {address: 10.0.0.2, port: 22}}
  - {name: c, listen: {port: 2223, takeover: true}, to: {address: 10.0.0.2, port: 22}}
  - {name: d, listen: {port: 53}, to: {address: 10.0.0.2, port: 53}, protocol: udp}
""")
    found = [sock("0.0.0.0"), sock("0.0.0.0", 2223), sock("0.0.0.0", 53, "tcp"), sock("0.0.0.0", 16443, "udp")]
    assert [index for index, _ in clashes(rows(spec), found)] == [1]
