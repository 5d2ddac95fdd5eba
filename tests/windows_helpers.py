"""Spec builders, hypothesis strategies and hostile values shared by the Windows dialect tests."""

from __future__ import annotations

import dataclasses

from hypothesis import assume
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork, cidr_merge

from netfwd.errors import ModelError
from netfwd.model import MANAGEMENT_PORTS, NAME_RE, Allow, Endpoint, Forward, Relay, Spec
from netfwd.spec import parse_spec


def windows_spec(*forwards: dict, cluster: str = "win-001") -> Spec:
    """A Windows spec from forward mappings written as in YAML (cidrs only: no catalog needed)."""
    import json

    doc = {"version": 1, "cluster": cluster, "relay": {"os": "windows"}, "forwards": list(forwards)}
    return parse_spec(json.dumps(doc), file="test.yaml")


def forward(name: str, port: int, to: str, to_port: int = 6443, address: str | None = None,
            cidrs: list[str] | None = None, **extra) -> dict:
    item = {"name": name, "listen": {"port": port}, "to": {"address": to, "port": to_port}, **extra}
    if address is not None:
        item["listen"]["address"] = address
    if cidrs is not None:
        item["allow"] = {"cidrs": cidrs}
    return item


def with_names(spec: Spec, cluster: str, names: list[str]) -> Spec:
    """The same spec with other cluster/forward names, bypassing validation (for hostile-value tests)."""
    forwards = []
    for original, name in zip(spec.forwards, names):
        copy = dataclasses.replace(original)
        object.__setattr__(copy, "name", name)
        forwards.append(copy)
    clone = dataclasses.replace(spec)
    object.__setattr__(clone, "cluster", cluster)
    object.__setattr__(clone, "forwards", tuple(forwards))
    return clone


# Every character class that means something to cmd, the C runtime argv rules, PowerShell or netsh.
HOSTILE = [
    "a&calc", "a&&b", "a||b", "a|b", "x>y", "x<y", "2>&1", "a^b", "a^", "%PATH%", "%%", "100%", "%~1", "%1",
    "!PATH!", "a(b)c", "a)b", "it's", "''", "$(calc)", "${env:PATH}", "$x", "a`b", "`", "a;b", "a,b", "a=b",
    "two words", " lead", "trail ", "a\\b", "a\\", "a\\\\", "*", "?", "[a]", "a*b", "#x", "<#x#>",
    "@(x)", "-Name", "--", "all", "any", "rem x", ":label", "::x", "a:b", "/c", "x/y", "{0}", "{", "}",
]
NOT_REPRESENTABLE = ["a\tb", 'a"b', '"', "a\nb", "a\r\nb", "a\x00b", "a\x1ab", "caf\u00e9", "\u2018x\u2019", "\u4e2d"]

_FAMILY_BITS = {4: 32, 6: 128}


def hostile_names(value: str) -> list[str]:
    """Four distinct forward names built around `value`: alone, as prefix, as suffix, in the middle."""
    return [value, value + "1", "2" + value, "x" + value + "y"]


@st.composite
def addresses(draw, version: int) -> IPAddress:
    raw = draw(st.ip_addresses(v=version))
    address = IPAddress(str(raw))
    assume(not address.is_multicast() and address.value != 0 and str(address) != "255.255.255.255")
    assume(not (version == 6 and address.is_link_local()))
    return address


@st.composite
def networks(draw, version: int) -> IPNetwork:
    address = draw(addresses(version))
    prefix = draw(st.integers(min_value=8 if version == 4 else 16, max_value=_FAMILY_BITS[version]))
    return IPNetwork(f"{address}/{prefix}").cidr


@st.composite
def windows_specs(draw, max_forwards: int = 5) -> Spec:
    """Valid specs for a Windows relay: every table (v4tov4 ... v6tov6), wildcard or fixed listen
    addresses, whitelists or none, distinct listen ports (so identities never clash)."""
    count = draw(st.integers(min_value=1, max_value=max_forwards))
    names = draw(st.lists(st.from_regex(NAME_RE, fullmatch=True), min_size=count, max_size=count,
                          unique_by=str.lower))
    free = st.integers(1, 65535).filter(lambda p: p not in MANAGEMENT_PORTS)  # refused without listen.takeover
    ports = draw(st.lists(free, min_size=count, max_size=count, unique=True))
    forwards = []
    for name, port in zip(names, ports):
        listen_family = draw(st.sampled_from([None, 4, 6]))
        listen = None if listen_family is None else draw(addresses(listen_family))
        target = draw(addresses(draw(st.sampled_from([4, 6]))))
        family = listen_family or 4
        allow = None
        if draw(st.booleans()):
            cidrs = tuple(draw(st.lists(networks(family), min_size=1, max_size=4)))
            allow = Allow((), cidrs, tuple(cidr_merge(list(cidrs))))
        try:
            forwards.append(Forward(name, Endpoint(port, listen), Endpoint(draw(st.integers(1, 65535)), target),
                                    local=draw(st.booleans()), allow=allow))
        except ModelError:
            assume(False)
    cluster = draw(st.from_regex(NAME_RE, fullmatch=True))
    try:
        return Spec(cluster=cluster, relay=Relay(os="windows"), forwards=tuple(forwards), origin="generated.yaml")
    except ModelError:
        assume(False)
        raise  # unreachable


def example_spec() -> Spec:
    """A spec with one forward per portproxy table, with and without whitelists."""
    return windows_spec(
        forward("api", 16443, "192.168.10.5", cidrs=["203.0.113.0/24", "198.51.100.7/32"]),
        forward("api-v6", 8443, "fd00:10::5", address="10.0.0.4"),
        forward("six-to-four", 9443, "192.168.10.6", address="2001:db8::4", cidrs=["2001:db8:100::/48"]),
        forward("six-to-six", 10443, "2001:db8:1::10", 443, address="2001:db8::4"),
    )
