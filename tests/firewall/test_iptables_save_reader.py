"""The iptables-save reader's quick path for the canonical rule shape reads every line it accepts
exactly as the general word scan does (same rule, same error), and a rule read lazily is the rule an
eager read makes (same index keys, fields, error), on lines built from that shape with awkward
values (quotes, negations, option-like words, empty comments, bad addresses and ports)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netfwd.errors import InputError
from netfwd.firewall.iptables_save import _CANONICAL, _Reader, _RuleParser, read_ruleset, words
from netfwd.firewall.trace import INDEXED_PORTS

ADDRESSES = ["10.0.0.1", "10.0.0.0/8", "10.0.0.1/32", "10.0.0.1,10.0.0.1", "10.0.0.0,10.0.0.1", "::1",
             "2001:db8::/64", "1.2.3.4-1.2.3.9", "1.2.3.4-1.2.3.4", "10.0.0.1/24", "300.1.1.1", "10.0.0.1/33", "x"]
PORTS = ["80", "1:1024", "1:64", "1:65", "80,443", ":10", "0", "99999", "1_0", "a"]
TARGETS = ["ACCEPT", "DROP", "REJECT", "DNAT", "SNAT", "MASQUERADE", "RETURN", "LOG", "X-CHAIN", "NETFWD-PRE", "NOPE"]
TARGET_VALUES = ["10.2.2.2:6443", "10.2.2.2", "[::1]:80", "1.1.1.1:5-6", "10.0.0.0/8", "1.1.1.1:0", ":80",
                 "tcp-reset", "icmp-port-unreachable"]
# each option's values: mostly what it takes, some awkward words that only look like the shape
AWKWARD = ["-1", "!", "!x", "-x", "a'b", 'a"b', "a\\b", "", "a b"]
OPTIONS = [("-s", ADDRESSES), ("-d", ADDRESSES), ("-i", ["eth0", "eth+", "lo"]), ("-o", ["eth1", "int0"]),
           ("-p", ["tcp", "udp", "6", "all", "icmp"]), ("-m tcp --dport", PORTS), ("-m udp --dport", PORTS),
           ("-m conntrack --ctstate", ["NEW", "NEW,DNAT", "DNAT", "INVALID"]), ("-m comment --comment", None),
           ("-j", TARGETS)]
TARGET_OPTIONS = ["--to-destination", "--to-source", "--reject-with"]
COMMENTS = ['"netfwd:c/f1"', '""', '"a b"', '"-j DROP"', '"!"', "plain", '"x"y"', "'q'", '"a\\"b"']


@st.composite
def lines(draw):
    parts = ["-A", draw(st.sampled_from(["FORWARD", "NETFWD-PRE", "FORWARD", "-X", '"q"']))]
    for option, values in OPTIONS:
        if not draw(st.booleans()):
            continue
        choices = COMMENTS if values is None else values * 3 + AWKWARD
        parts += [option, draw(st.sampled_from(choices))]
        if option == "-j" and draw(st.booleans()):
            parts += [draw(st.sampled_from(TARGET_OPTIONS)), draw(st.sampled_from(TARGET_VALUES * 3 + AWKWARD))]
    return " ".join(parts)


def outcome(read):
    try:
        return read()
    except InputError as problem:
        return str(problem)


@settings(max_examples=1500, deadline=None)
@given(line=lines())
def test_canonical_lines_read_as_the_word_scan_reads_them(line):
    match = _CANONICAL.match(line)
    if match is None:
        return  # not the canonical shape: only the word scan reads it
    quick, scanned = _Reader("", "f"), _Reader("", "f")
    assert match["chain"] == words(line)[1]
    assert outcome(lambda: _RuleParser(quick, [], 0, 1, line).canonical(match)) == \
        outcome(lambda: _RuleParser(scanned, words(line), 2, 1, line).parse())


def dump(line: str) -> str:
    return f"*filter\n:FORWARD ACCEPT [0:0]\n:NETFWD-PRE - [0:0]\n:X-CHAIN - [0:0]\n{line}\nCOMMIT\n"


def read(line: str, lazy: bool):
    """(index keys, then the rules' fields) of a one-rule dump, or the error: keys first, so a lazy
    rule answers them before it is read whole."""
    try:
        ruleset = read_ruleset(dump(line), "f", lazy=lazy)
    except InputError as problem:
        return str(problem)
    rules = [rule for chain in ruleset.chains.values() for rule in chain.rules]
    keys = [rule.index_keys(INDEXED_PORTS) for rule in rules]
    return keys, [(r.origin, r.sources, r.conds, r.verdict, r.source_text) for r in rules], rules


@settings(max_examples=1500, deadline=None)
@given(line=lines())
def test_a_lazily_read_rule_is_the_rule_an_eager_read_makes(line):
    """Same error when the dump is read; same index keys before the rule is read whole; same fields
    (and equal rules) after."""
    lazy, eager = read(line, True), read(line, False)
    if isinstance(eager, str):
        assert lazy == eager
        return
    assert lazy[:2] == eager[:2] and lazy[2] == eager[2]
