"""netfwd's two netlink reads of nf_tables (netfwd/netfilter/nfgen.py), against the real kernel and nft.

The nft backend lists table names with one GETTABLE dump instead of `nft list tables` (which
fetches every rule first); the dump must name exactly the tables nft names, in every family.
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
TABLES = ("inet netfwd-a", "ip nat", "ip6 filter", "bridge br", "netdev nd", "arp ar", "inet netfwd-b.c_d")


def in_namespace(code: str, setup: str = "") -> str:
    name = f"nfw-nl-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        if setup:
            subprocess.run(["ip", "netns", "exec", name, "nft", "-f", "-"], input=setup, text=True, check=True)
        done = subprocess.run(["ip", "netns", "exec", name, sys.executable, "-c", code], capture_output=True,
                              text=True, cwd=REPO, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_the_table_dump_names_what_nft_lists():
    if shutil.which("nft") is None:
        pytest.skip("nft not installed")
    setup = "".join(f"table {table} {{ }}\n" for table in TABLES)
    # many tables (more than one datagram of the dump) and the listing nft gives of them
    setup += "".join(f"table ip many-{i} {{\n  chain c {{\n    counter\n  }}\n}}\n" for i in range(1000))
    code = ("import subprocess; from netfwd.netfilter import nfgen\n"
            "listed = [l[6:] for l in subprocess.run(['nft', 'list', 'tables'], capture_output=True, text=True,"
            " check=True).stdout.splitlines()]\n"
            "print(nfgen.tables() == listed, len(listed))")
    assert in_namespace(code, setup).split() == ["True", str(len(TABLES) + 1000)]
    assert in_namespace("from netfwd.netfilter import nfgen; print(nfgen.tables())") == "[]\n"


def test_a_reply_it_cannot_read_means_ask_nft():
    from netfwd.netfilter import nfgen

    error = b"\x24\x00\x00\x00\x02\x00" + b"\x00" * 30  # NLMSG_ERROR
    assert nfgen._parse_tables(error) == (True, None)
    done = b"\x14\x00\x00\x00\x03\x00\x02\x00" + b"\x00" * 12
    assert nfgen._parse_tables(done) == (True, [])
    table = (b"\x20\x00\x00\x00\x00\x0a\x02\x00" + b"\x00" * 8 + b"\x01\x00\x00\x00"  # NEWTABLE, inet
             + b"\x08\x00\x01\x00ab\x00\x00" + b"\x04\x00\x02\x00")
    assert nfgen._parse_tables(table) == (False, ["inet ab"])
    assert nfgen._parse_tables(table[:-6]) == (True, None)  # cut short
