"""Hypothesis strategies: valid Linux-relay specs, built straight from the model (no YAML, no catalog).

Targets, listen addresses and relay addresses come from disjoint ranges, and listen ports are
unique, so every generated spec passes the model's loop and identity checks by construction.
"""

from __future__ import annotations

from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork, cidr_merge

from netfwd.model import MANAGEMENT_PORTS, Allow, Endpoint, Forward, Relay, Spec

NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
names = st.builds(lambda head, mid, tail: head + mid + tail,
                  st.sampled_from(NAME_CHARS), st.text(NAME_CHARS + "_.-", max_size=61),
                  st.sampled_from(NAME_CHARS)) | st.sampled_from(NAME_CHARS)
ports = st.integers(1, 65535)
listen_ports = ports.filter(lambda port: port not in MANAGEMENT_PORTS)  # refused without listen.takeover


def _address(version: int, prefix: str) -> st.SearchStrategy[IPAddress]:
    if version == 4:  # 192.168.0.0/16 targets, 10.0.0.0/8 listen addresses
        base = IPAddress(prefix)
        return st.integers(1, 2 ** 16 - 2).map(lambda n: IPAddress(base.value + n))
    base = IPAddress(prefix)
    return st.integers(1, 2 ** 64).map(lambda n: IPAddress(base.value + n, 6))


def _cidr(version: int) -> st.SearchStrategy[IPNetwork]:
    width = 32 if version == 4 else 128

    def make(value: int, prefix: int) -> IPNetwork:
        return IPNetwork((value >> (width - prefix) << (width - prefix), prefix), version=version) if prefix \
            else IPNetwork((0, 0), version=version)

    return st.builds(make, st.integers(0, 2 ** width - 1), st.integers(0, width))


def allows(version: int) -> st.SearchStrategy[Allow | None]:
    lists = st.lists(_cidr(version), min_size=1, max_size=6).map(
        lambda nets: Allow((), tuple(nets), tuple(cidr_merge(nets))))
    return st.none() | lists


@st.composite
def forwards(draw, name: str, port: int, families: tuple[int, ...], local: bool) -> Forward:
    version = draw(st.sampled_from(families))
    target = draw(_address(version, "192.168.0.0" if version == 4 else "2001:db8:1::"))
    listen = draw(st.none() | _address(version, "10.1.0.0" if version == 4 else "2001:db8:2::"))
    return Forward(name=name, listen=Endpoint(port, listen), to=Endpoint(draw(ports), target),
                   protocol=draw(st.sampled_from(("tcp", "udp"))), masquerade=draw(st.booleans()),
                   local=draw(st.booleans()) if local else False, allow=draw(allows(version)))


@st.composite
def linux_specs(draw, families: tuple[int, ...] = (4, 6), local: bool = True, max_forwards: int = 6) -> Spec:
    """A valid spec for a Linux relay whose forwards use `families` (and `local` only when allowed)."""
    count = draw(st.integers(0, max_forwards))
    forward_names = draw(st.lists(names, min_size=count, max_size=count, unique=True))
    chosen = draw(st.lists(listen_ports, min_size=count, max_size=count, unique=True))
    items = tuple(draw(forwards(n, p, families, local)) for n, p in zip(forward_names, chosen))
    interface = draw(st.none() | st.from_regex(r"[A-Za-z0-9_.-]{1,15}", fullmatch=True))
    return Spec(cluster=draw(names), relay=Relay("linux", interface, None), forwards=items,
                origin="hypothesis", digest="0" * 64)
