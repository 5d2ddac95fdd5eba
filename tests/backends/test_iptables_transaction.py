"""The iptables backends' one transaction: both tables or neither, through the real restore tools.

Both flavours test the later table while the restore reads the first one and feed the first
COMMIT only after that test passed and the engine's journal is written (netfwd/backends/iptables.py).
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
def before_commit():  # argv[2] "refuse": the engine could not write its journal, say
    if sys.argv[2:] == ["refuse"]:
        raise TransactionError("no journal")
try:
    print("parts", backend.write_meanwhile(sys.stdin.read(), live, lambda: None, before_commit))
except TransactionError as problem:
    print("refused", problem)
print(xstate.canonical(xstate.parse(backend.read().text)[0]), end="")
"""


def target(broken: str | None = None) -> str:
    """netfwd's owned state for one forward (nat: chains, jumps, DNAT, masquerade; filter: the
    accept); `broken` names the table whose rule gets a match iptables does not know."""
    from netfwd.netfilter import xstate
    from netfwd.spec import parse_spec

    spec = parse_spec("version: 1\ncluster: t\nforwards:\n  - name: a\n    listen: {port: 16443}\n"
                      "    to: {address: 10.0.0.5, port: 6443}\n", "t.yaml")
    text = xstate.canonical(xstate.desired(spec))
    if broken:
        head, _, tail = text.partition(f"*{broken}\n")
        table, _, rest = tail.partition("COMMIT\n")
        table = table.replace(" -m comment ", " -m no-such-match -m comment ", 1)  # an owned rule, not a jump
        assert "no-such-match" in table
        text = f"{head}*{broken}\n{table}COMMIT\n{rest}"
    return text


def order() -> list[str]:
    """The tables in the order the transaction feeds them to the restore."""
    from netfwd.netfilter import xstate

    return [table for table, _ in xstate.transaction({}, xstate.parse(target())[0])]


def write_in_fresh_namespace(flavour: str, text: str, *mode: str) -> str:
    name = f"nfw-tx-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", WRITE, flavour, *mode], input=text,
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

    first, later = order()
    bad = target(broken=later)  # the later table fails its test, run while the first is parsed
    out = write_in_fresh_namespace(flavour, bad)
    head, rest = out.split("\n", 1)
    assert head.startswith(f"refused iptables-{flavour}-restore --test failed (exit ")
    assert rest == ""  # the first table's valid chains, jumps and rules were not committed either

    bad = target(broken=first)  # the first table fails in the restore itself: it commits nothing
    out = write_in_fresh_namespace(flavour, bad)
    head, rest = out.split("\n", 1)
    assert head.startswith(f"refused iptables-{flavour}-restore failed (exit ")
    assert rest == ""

    # the restore reads the first table while the engine writes its journal: if that fails, the
    # restore never gets a COMMIT - valid tables, nothing committed
    out = write_in_fresh_namespace(flavour, good, "refuse")
    assert out == "refused no journal\n"
