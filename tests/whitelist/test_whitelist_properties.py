"""Property tests: netfwd's whitelist arithmetic against independent oracles built on `ipaddress`.

The universes are tiny (a /24 and a /120) so the oracle can count every address one by one:
no CIDR arithmetic is shared with the code under test.
"""

from __future__ import annotations

import ipaddress

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netaddr import IPAddress, IPNetwork, IPSet

from netfwd.catalog import Catalog, Region
from netfwd.firewall.addresses import parse_token, range_set, to_cidrs
from netfwd.whitelist.render import aggregate, render
from netfwd.whitelist.sources import Context
from netfwd.whitelist.sources.iptables import parse as parse_iptables
from netfwd.whitelist.sources.plain import parse as parse_plain
from netfwd.whitelist.verify import verify

V4 = ipaddress.ip_network("10.9.8.0/24")
V6 = ipaddress.ip_network("2001:db8::/120")


@st.composite
def networks(draw, base=None):
    base = base or draw(st.sampled_from([V4, V6]))
    extra = draw(st.integers(0, base.max_prefixlen - base.prefixlen))
    subnets = list(base.subnets(prefixlen_diff=extra)) if extra <= 6 else None
    if subnets is None:  # too many to list: pick an address and mask it
        offset = draw(st.integers(0, base.num_addresses - 1))
        return ipaddress.ip_network(f"{base.network_address + offset}/{base.prefixlen + extra}", strict=False)
    return draw(st.sampled_from(subnets))


@st.composite
def entries(draw):
    """A whitelist line: a CIDR, a bare address, or a first-last range (as text), and its addresses."""
    base = draw(st.sampled_from([V4, V6]))
    kind = draw(st.sampled_from(["cidr", "ip", "range"]))
    if kind == "cidr":
        net = draw(networks(base))
        return str(net), set(range(int(net.network_address), int(net.broadcast_address) + 1)), base.version
    low = draw(st.integers(0, base.num_addresses - 1))
    if kind == "ip":
        addr = base.network_address + low
        return str(addr), {int(addr)}, base.version
    high = draw(st.integers(low, base.num_addresses - 1))
    a, b = base.network_address + low, base.network_address + high
    return f"{a}-{b}", set(range(int(a), int(b) + 1)), base.version


def ints(net: ipaddress._BaseNetwork) -> set[tuple[int, int]]:
    return {(net.version, i) for i in range(int(net.network_address), int(net.broadcast_address) + 1)}


def collapse(addresses: set[tuple[int, int]]) -> list[str]:
    """Minimal CIDRs of a set of (version, int) addresses, by ipaddress (the oracle)."""
    out = []
    for version in (4, 6):
        addrs = [ipaddress.ip_address(i) if version == 4 else ipaddress.IPv6Address(i)
                 for v, i in sorted(addresses) if v == version]
        out += [str(n) for n in ipaddress.collapse_addresses(addrs)]
    return out


def catalog(regions: dict[str, list[ipaddress._BaseNetwork]]) -> Catalog:
    rows = tuple(Region(rid, rid, (), tuple(IPNetwork(str(n)) for n in nets), False) for rid, nets in regions.items())
    return Catalog(rows, "test", "", "", "<test>")


region_maps = st.dictionaries(st.sampled_from(["r-a", "r-b", "r-c"]), st.lists(networks(), min_size=1, max_size=3),
                              min_size=1, max_size=3)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(whitelist=st.lists(entries(), max_size=12), regions=region_maps, local_net=networks())
def test_coverage_missing_and_findings_match_the_oracle(whitelist, regions, local_net):
    text = "".join(f"{line}\n" for line, _, _ in whitelist)
    admitted = {(v, i) for _, addrs, v in whitelist for i in addrs}
    cat = catalog(regions)
    local = IPSet([str(local_net)])
    report = verify(parse_plain(text or "# empty\n", "wl.txt"), cat, list(regions), local)
    (group,) = report.groups
    needed_all: set = set()
    for rid, nets in regions.items():
        needed = set().union(*(ints(n) for n in nets))
        needed_all |= needed
        missing = needed - admitted
        result = next(r for r in group.regions if r.region == rid)
        assert list(result.missing) == collapse(missing)
        assert result.missing_addresses == len(missing)
        assert result.status == ("covered" if not missing else "missing" if missing == needed else "partial")
    # too-broad: every entry that overlaps the requirement and admits more, with the exact count
    broad = {f.origin.line: f.count for f in group.findings if f.code == "too-broad"}
    private = {f.origin.line: f.count for f in group.findings if f.code == "private-range"}
    overlap = {f.origin.line: f.count for f in group.findings if f.code == "local-overlap"}
    unused = next((f for f in group.findings if f.code == "unused"), None)
    for line, (_, addrs, version) in enumerate(whitelist, 1):
        mine = {(version, i) for i in addrs}
        # 10.9.8.0/24 is RFC 1918, 2001:db8::/120 is not private
        assert private.get(line) == (len(mine) if version == 4 else None)
        assert overlap.get(line) == (len(mine & ints(local_net)) or None)
        beyond = len(mine - needed_all)
        if mine & needed_all and beyond:
            assert broad.get(line) == beyond
        else:
            assert line not in broad
        assert (unused is not None and whitelist[line - 1][0] in unused.cidrs) == (not mine & needed_all)


@settings(max_examples=200, deadline=None)
@given(regions=region_maps, extra=st.lists(networks(), max_size=5))
def test_aggregation_is_minimal_and_exact(regions, extra):
    cat = catalog(regions)
    nets = aggregate(cat, list(regions), [IPNetwork(str(n)) for n in extra])
    union = set().union(*(ints(n) for nets_ in regions.values() for n in nets_), *(ints(n) for n in extra))
    assert [str(n) for n in nets] == collapse(union)
    assert render(nets, "list").split() == collapse(union)


@settings(max_examples=300, deadline=None)
@given(entry=entries())
def test_tokens_parse_like_ipaddress(entry):
    text, addrs, version = entry
    got_version, first, last = parse_token(text)
    assert (got_version, first, last) == (version, min(addrs), max(addrs))


@settings(max_examples=300, deadline=None)
@given(entry=entries())
def test_range_set_is_the_ipset_netaddr_builds(entry):
    """The readers' quick set of one range (unpickled, for a CIDR) equals netaddr's own, and
    behaves as one: members, set algebra."""
    text, addrs, version = entry
    _, first, last = parse_token(text)
    quick, reference = range_set(version, first, last), IPSet(to_cidrs(version, first, last))
    assert quick == reference and quick.iter_cidrs() == reference.iter_cidrs()
    assert quick.size == len(addrs) and (quick | reference) == reference and not (quick - reference)
    assert all(IPAddress(a, version) in quick for a in sorted(addrs)[:3] + sorted(addrs)[-3:])


@given(st.from_regex(r"\A[0-9./:a-f-]{1,24}\Z"))
def test_garbage_tokens_are_refused_or_agree_with_ipaddress(text):
    try:
        version, first, last = parse_token(text)
    except ValueError:
        return
    if "-" in text:
        a, b = (ipaddress.ip_address(p) for p in text.split("-"))
        assert (first, last) == (int(a), int(b))
    else:
        net = ipaddress.ip_network(text, strict=True)
        assert (version, first, last) == (net.version, int(net.network_address), int(net.broadcast_address))


# -- the symbolic evaluator against a per-address iptables simulator ------------------------------------
SMALL = ipaddress.ip_network("10.9.8.0/28")
PROBES = [ipaddress.ip_address(int(SMALL.network_address) + i) for i in range(20)] + [ipaddress.ip_address("8.8.8.8")]


@st.composite
def rules(draw, chain_targets):
    negate = draw(st.booleans())
    src = draw(st.one_of(st.none(), networks(SMALL)))
    port = draw(st.sampled_from([6443, 6443, 22, None]))
    proto = draw(st.sampled_from(["tcp", "tcp", "udp"]))
    target = draw(st.sampled_from(chain_targets))
    return (negate if src is not None else False, src, port, proto, target)


def line(chain, rule, verdict_name):
    negate, src, port, proto, target = rule
    words = ["-A", chain]
    if src is not None:
        words += (["!"] if negate else []) + ["-s", str(src)]
    words += ["-p", proto]
    if port is not None:
        words += ["-m", proto, "--dport", str(port)]
    words += ["-j", verdict_name.get(target, target)]
    if target == "GOOD" and verdict_name["GOOD"] == "DNAT":
        words += ["--to-destination", "192.0.2.1:6443"]
    return " ".join(words)


def simulate(chains, policy_good, addr):
    def matches(rule):
        negate, src, port, proto, _ = rule
        if proto != "tcp" or (port is not None and port != 6443):
            return False
        return src is None or ((addr in src) != negate)

    def run(name):
        for rule in chains[name]:
            if not matches(rule):
                continue
            target = rule[4]
            if target in ("GOOD", "BAD"):
                return target
            if target == "RETURN":
                return None
            if target == "USER":
                result = run("USER")
                if result:
                    return result
        return None

    result = run("MAIN")
    return result == "GOOD" or (result is None and policy_good)


@settings(max_examples=200, deadline=None)
@given(main=st.lists(rules(["GOOD", "BAD", "USER", "RETURN"]), max_size=8),
       user=st.lists(rules(["GOOD", "BAD", "RETURN"]), max_size=5),
       policy_good=st.booleans(), nat=st.booleans())
def test_iptables_evaluation_matches_a_per_address_simulator(main, user, policy_good, nat):
    """Random chains of -s / ! -s / ports / protocols / jumps / RETURN, in the filter INPUT chain
    (local port) or the nat PREROUTING chain (DNAT): admitted sources agree address by address."""
    if nat:
        names = {"GOOD": "DNAT", "BAD": "ACCEPT", "USER": "USERCHAIN", "RETURN": "RETURN"}
        # not DNATed means delivered locally, where INPUT drops it: so only DNAT admits
        head = ["*filter", ":INPUT DROP [0:0]", "COMMIT", "*nat", ":PREROUTING ACCEPT [0:0]", ":USERCHAIN - [0:0]"]
        builtin, policy_good = "PREROUTING", False
    else:
        names = {"GOOD": "ACCEPT", "BAD": "DROP", "USER": "USERCHAIN", "RETURN": "RETURN"}
        head = ["*filter", f":INPUT {'ACCEPT' if policy_good else 'DROP'} [0:0]", ":USERCHAIN - [0:0]"]
        builtin = "INPUT"
    body = [line(builtin, r, names) for r in main] + [line("USERCHAIN", r, names) for r in user]
    text = "\n".join(head + body + ["COMMIT", ""])
    parsed = parse_iptables(text, "dump", Context(port=6443))
    (group,) = parsed.groups
    admitted = set()
    for entry in group.entries:
        admitted |= {a for a in PROBES if any(f <= int(a) <= l for f, l in entry.ranges)}
    expected = {a for a in PROBES if simulate({"MAIN": main, "USER": user}, policy_good, a)}
    assert admitted == expected, text


@given(st.one_of(st.from_regex(r"\A[0-9./-]{1,20}\Z"), entries().map(lambda e: e[0]),
                 st.builds(lambda a, n: f"{ipaddress.IPv4Address(a)}/{n}", st.integers(0, 2**32 - 1),
                           st.integers(0, 40))))
def test_plain_fast_path_agrees_with_the_general_parser(token):
    """The list reader's IPv4 shortcut must accept and refuse exactly what parse_token does."""
    from netfwd.errors import InputError

    try:
        expected = parse_token(token)
    except ValueError:
        expected = None
    try:
        (entry,) = parse_plain(token + "\n", "wl.txt").groups[0].entries
        got = (entry.version, *entry.ranges[0])
    except InputError:
        got = None
    assert got == expected
