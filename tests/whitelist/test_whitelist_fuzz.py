"""Whatever text a reader is given, it answers with groups or one InputError: never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netfwd.catalog import load_catalog
from netfwd.errors import InputError
from netfwd.whitelist.sources import FORMATS, Context, parse_text

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "whitelist"
SAMPLES = {"list": "plain-list.txt", "iptables": "iptables-docker-relay.txt", "nft": "nft-relay.txt",
           "nft-json": "nft-relay.json", "firewalld-xml": "firewalld-public.xml",
           "firewalld": "firewalld-list-all.txt", "netsh": "netsh-show-rule.txt", "spec": "spec-relay.yaml",
           "script": "script-iptables-restore.sh"}
CONTEXT = Context(catalog=load_catalog())


@st.composite
def mutated(draw, fmt):
    """A real sample with lines dropped, duplicated, cut or spliced with junk."""
    lines = (FIX / SAMPLES[fmt]).read_text(encoding="utf-8").splitlines()
    junk = st.sampled_from(["", "{", "}", "-A", "!", "-s", "::", "1.2.3.4/99", "@x", '"', "<rule>", "=", ":",
                            "dnat to", "vmap {", "Rule Name:", "  rich rules:", "*nat", "COMMIT", "\t", "-j"])
    out = []
    for line in lines:
        action = draw(st.integers(0, 9))
        if action == 0:
            continue
        if action == 1:
            line = line[: draw(st.integers(0, max(len(line), 0)))]
        elif action == 2:
            words = line.split()
            if words:
                words.insert(draw(st.integers(0, len(words))), draw(junk))
            line = " ".join(words)
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_mutated_sources_never_crash(fmt, data):
    text = data.draw(mutated(fmt))
    try:
        parsed = parse_text(text, "fuzzed", fmt, CONTEXT)
    except InputError as problem:
        assert problem.render().startswith("fuzzed") and "\n" not in problem.render()
        return
    assert parsed.format.split(":")[0] == fmt  # "script:nft": the format, then the dialect that wrote it
