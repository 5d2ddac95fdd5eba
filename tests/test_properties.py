"""Property tests: render -> parse is lossless for the iptables dialects, and hostile input is either
rejected cleanly (InputError, nothing else) or provably inert."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd.dialects import get_dialect
from netfwd.errors import InputError
from netfwd.model import IFACE_RE, NAME_RE
from netfwd.spec import parse_spec
from tests.linux_specs import linux_specs

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(linux_specs(families=(4,)))
def test_iptables_dialects_round_trip(spec):
    for name in ("iptables", "iptables-restore"):
        dialect = get_dialect(name)
        assert dialect.parse(dialect.render(spec)) == dialect.expected(spec)


def _spec_with(field: str, value):
    forward = {"name": "api", "listen": {"port": 16443}, "to": {"address": "192.168.10.5", "port": 6443}}
    document = {"version": 1, "cluster": "c1", "relay": {"os": "linux"}, "forwards": [forward]}
    path = field.split(".")
    target = forward if path[0] == "forward" else document
    for key in path[1:-1] if path[0] == "forward" else path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value
    return yaml.safe_dump(document, allow_unicode=True)


STRING_FIELDS = ["cluster", "relay.os", "relay.interface", "relay.address", "forward.name",
                 "forward.protocol", "forward.to.address", "forward.listen.address"]
hostile = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["$(reboot)", "`id`", "a;b", "a\nb", "a b", "%PATH%", "^&|<>", "'", '"', "\u202ea",
                     "ｅｔｈ０", "eth0\x00", "10.0.0.1; rm -rf /", "fe80::1%eth0", "1.2.3.4/24", "-j ACCEPT"]),
)


@FAST
@given(st.sampled_from(STRING_FIELDS), hostile)
def test_hostile_strings_are_rejected_or_inert(field, value):
    try:
        spec = parse_spec(_spec_with(field, value), "hostile.yaml")
    except InputError as problem:
        assert "\n" not in str(problem) and str(problem).startswith("hostile.yaml")
        return
    # accepted: then the value must be one of the validated shapes, which need no quoting anywhere
    if field in ("cluster", "forward.name"):
        assert NAME_RE.match(value)
    elif field == "relay.interface":
        assert IFACE_RE.match(value)
    elif field in ("relay.os", "forward.protocol"):
        assert value in ("linux", "windows", "tcp", "udp")
    else:  # addresses were parsed into netaddr objects: what gets rendered is their canonical text
        assert all(c in "0123456789abcdef.:" for c in str(spec.forwards[0].to.address))


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text_never_escapes_as_anything_but_input_error(text):
    try:
        parse_spec(text, "fuzz.yaml")
    except InputError as problem:
        assert "\n" not in str(problem)
