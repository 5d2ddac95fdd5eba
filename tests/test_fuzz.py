"""Fuzzing every parser the CLI feeds with user input (targets: tests/hostile/fuzztargets.py).

Each target may only ever end in InputError with a one-line message. In CI the example counts
are small (about a minute for all targets); `scripts/fuzz` runs the same targets for longer
(NETFWD_FUZZ_SCALE multiplies the counts; failures are kept in hypothesis' example database, so the
next run tries them first).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings

from tests.hostile.fuzztargets import targets

SCALE = float(os.environ.get("NETFWD_FUZZ_SCALE", "1"))
SLOW = {"windows-report": 0.3, "spec": 0.5, "whitelist-detect": 0.7}  # runs the doctor / renders every dialect
BASE = 500
TARGETS = targets()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_only_ever_refuses_cleanly(name):
    target, strategy = TARGETS[name]
    examples = max(5, int(BASE * SLOW.get(name, 1.0) * SCALE))

    @settings(max_examples=examples, deadline=None, print_blob=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
    @given(strategy)
    def fuzz(value):
        target(value)

    fuzz()


def test_every_input_kind_has_a_target():
    kinds = {"yaml", "spec", "catalog", "windows-report", "manifest", "audit-policy", "probe-targets"}
    assert kinds <= set(TARGETS)
    assert {n for n in TARGETS if n.startswith("whitelist-")} >= {
        "whitelist-list", "whitelist-spec", "whitelist-iptables", "whitelist-nft", "whitelist-nft-json",
        "whitelist-firewalld-xml", "whitelist-firewalld", "whitelist-netsh", "whitelist-detect"}
