"""The iptables-save reader's quick path for the canonical rule shape reads every line it accepts
exactly as the general word scan does (same rule, same error), on lines built from that shape with
awkward values (quotes, negations, option-like words, empty comments, bad addresses and ports)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from netfwd.errors import InputError
from netfwd.firewall.iptables_save import _CANONICAL, _Reader, _RuleParser, words

PLAIN = ["10.0.0.1", "10.0.0.0/8", "10.0.0.1/32", "::1", "2001:db8::/64", "1.2.3.4-1.2.3.9", "300.1.1.1", "tcp",
         "udp", "6", "eth0", "eth+", "80", "1:1024", "80,443", "99999", "NEW,DNAT", "DNAT", "ACCEPT", "DROP",
         "REJECT", "DNAT", "MASQUERADE", "X-CHAIN", "10.2.2.2:6443", "[::1]:80", "1.1.1.1:5-6", "tcp-reset"]
AWKWARD = ["-1", "!", "!x", "-x", "a'b", 'a"b', "a\\b", "", "a b"]
VALUES = PLAIN * 5 + AWKWARD  # mostly lines of the shape, some that only look like it
OPTIONAL = [("-s", None), ("-d", None), ("-i", None), ("-o", None), ("-p", None), ("-m tcp --dport", None),
            ("-m udp --dport", None), ("-m conntrack --ctstate", None), ("-m comment --comment", "comment"),
            ("-j", "target")]
TARGET_OPTIONS = ["--to-destination", "--to-source", "--reject-with"]
COMMENTS = ['"netfwd:c/f1"', '""', '"a b"', '"-j DROP"', '"!"', "plain", '"x"y"', "'q'", '"a\\"b"']


@st.composite
def lines(draw):
    parts = ["-A", draw(st.sampled_from(["FORWARD", "NETFWD-PRE", "-X", '"q"']))]
    for option, kind in OPTIONAL:
        if not draw(st.booleans()):
            continue
        if kind == "comment":
            parts += [option, draw(st.sampled_from(COMMENTS))]
        else:
            parts += [option, draw(st.sampled_from(VALUES))]
        if kind == "target" and draw(st.booleans()):
            parts += [draw(st.sampled_from(TARGET_OPTIONS)), draw(st.sampled_from(VALUES))]
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
