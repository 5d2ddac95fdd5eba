"""`netfwd explain` against the kernel: random rulesets loaded into a real lab relay, random packets
really sent from the lab client, explain's answer (read from the live relay) compared with what
happened. See tests/firewall/explain_diff.py for the generator and how outcomes are observed;
scripts/explain-diff runs thousands of cases.
"""

from __future__ import annotations

import os

import pytest

from tests.firewall.explain_diff import Bench, Case, generate, regressions

pytestmark = pytest.mark.netns

CASES = int(os.environ.get("NETFWD_EXPLAIN_CASES", "120"))
PACKETS = 32
LABS = 3  # cases mostly wait for timeouts: three relays side by side cut the wall time, not the CPU


@pytest.fixture(scope="module")
def benches():
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from netfwd.lab import Lab

    labs = []
    try:
        for _ in range(LABS):
            labs.append(Lab.up(onprem_route_back=True))
        yield [Bench(lab) for lab in labs]
    finally:
        for lab in labs:
            lab.down()


@pytest.fixture(scope="module")
def bench(benches):
    return benches[0]


@pytest.mark.parametrize("doc", regressions(), ids=lambda d: d["why"][:40])
def test_cases_that_once_disagreed_agree(bench, doc):
    case = Case.from_template(doc, bench.env)
    assert bench.run(case) == []


def test_random_rulesets_and_packets_agree_with_the_kernel(benches):
    """CASES random rulesets (every kind: iptables-nft, iptables-legacy, nft, mixed), PACKETS packets each."""
    from concurrent.futures import ThreadPoolExecutor

    def share(index: int) -> list:
        bench, found = benches[index], []
        for seed in range(index, CASES, len(benches)):
            case = generate(seed, bench.env, PACKETS, first_sport=20000 + seed * PACKETS)
            kinds.add(case.kind)
            wrong_here = bench.run(case)
            if wrong_here:
                found.append((seed, case.kind, wrong_here[:2], case.templated(bench.env)))
        return found

    kinds: set[str] = set()
    with ThreadPoolExecutor(len(benches)) as pool:
        wrong = [item for part in pool.map(share, range(len(benches))) for item in part]
    assert not wrong, "\n".join(f"seed {s} ({k}): {w[0]['packet']}: explain {w[0]['expected']}, kernel "
                                 f"{w[0]['observed']}" for s, k, w, _ in wrong[:5])
    assert kinds == {"iptables-nft", "iptables-legacy", "nft", "mixed-nft", "mixed-legacy"} or CASES < 20
