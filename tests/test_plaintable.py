"""The fast plain table prints exactly what rich prints for the same table (netfwd/plaintable.py)."""

from __future__ import annotations

import io
import random

import pytest
from rich.console import Console

from netfwd.plaintable import SMALL, _rich_table, print_table

COLUMNS = ("name", "listen", "to", "proto", "masq", "local", "sources")
WORDS = ["a", "fwd-7", "*:16443", "[fd00::5]:6443", "10.200.30.40:65535", "3 CIDR(s) (cn-hangzhou, ap-south-1)",
         "yes", "no", "tcp", "udp", "x" * 41, "very long words that   wrap over several lines", "any"]


def rows_for(seed: int, count: int) -> list[tuple[str, ...]]:
    pick = random.Random(seed).choice
    return [tuple(pick(WORDS) for _ in COLUMNS) for _ in range(count)]


def printed(rows, width: int, fast: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width)
    if fast:
        print_table("bench: many forward(s) on a linux relay", COLUMNS, rows, console)
    else:
        console.print(_rich_table("bench: many forward(s) on a linux relay", COLUMNS, rows))
    return out.getvalue()


@pytest.mark.parametrize("width", [20, 45, 80, 120, 400])
@pytest.mark.parametrize("seed", range(4))
def test_same_text_as_rich(width, seed):
    rows = rows_for(seed, SMALL + 30)
    assert printed(rows, width, fast=True) == printed(rows, width, fast=False)


def test_non_ascii_cells_go_through_rich():
    rows = [*rows_for(1, SMALL + 5), ("名字", "*:1", "10.0.0.1:2", "tcp", "yes", "no", "any")]
    assert printed(rows, 80, fast=True) == printed(rows, 80, fast=False)
