"""The iptables backends' one transaction: both tables or neither, through the real restore tools.

The nf_tables flavour tests the later table while the restore reads the first one and feeds the
first COMMIT only after that test passed (netfwd/backends/iptables.py); legacy tests first.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]

# Runs inside the namespace: write TARGET over an empty firewall with the flavour's backend.
WRITE = r"""
import sys, tempfile
from pathlib import Path
from netfwd.backends import Context
from netfwd.backends.base import TransactionError
from netfwd.backends.iptables import IptablesBackend
from netfwd.netfilter import xstate
backend = IptablesBackend(Context(Path(tempfile.mkdtemp()), Path(tempfile.mkdtemp()), cluster="t"), sys.argv[1])
live = backend.read()
try:
    print("parts", backend.write(sys.stdin.read(), live))
except TransactionError as problem:
    print("refused", problem)
print(xstate.canonical(xstate.parse(backend.read().text)[0]), end="")
"""


def target(broken: bool = False) -> str:
    """netfwd's owned state for one forward (nat: chains, jumps, DNAT, masquerade; filter: the
    accept); `broken` gives the filter table's rule a match iptables does not know."""
    from netfwd.netfilter import xstate
    from netfwd.spec import parse_spec

    spec = parse_spec("version: 1\ncluster: t\nforwards:\n  - name: a\n    listen: {port: 16443}\n"
                      "    to: {address: 10.0.0.5, port: 6443}\n", "t.yaml")
    text = xstate.canonical(xstate.desired(spec))
    if broken:
        head, _, tail = text.partition("*filter\n")
        tail = tail.replace(" -j ACCEPT", " -m no-such-match -j ACCEPT")
        assert "no-such-match" in tail
        text = f"{head}*filter\n{tail}"
    return text


def write_in_fresh_namespace(flavour: str, text: str) -> str:
    name = f"nfw-tx-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", WRITE, flavour], input=text,
                              capture_output=True, text=True, cwd=REPO, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.mark.parametrize("flavour", ["nft", "legacy"])
def test_both_tables_or_neither(flavour):
    if shutil.which(f"iptables-{flavour}-restore") is None:
        pytest.skip(f"iptables-{flavour} not installed")
    good = target()
    out = write_in_fresh_namespace(flavour, good)
    assert out.splitlines()[0] == "parts 2"
    assert out.split("\n", 1)[1] == good  # both tables committed, exactly as asked

    bad = target(broken=True)  # the later (smaller) table fails its test
    out = write_in_fresh_namespace(flavour, bad)
    first, rest = out.split("\n", 1)
    assert first.startswith(f"refused iptables-{flavour}-restore --test failed (exit ")
    assert rest == ""  # the first table's valid chains, jumps and DNAT rule were not committed either
