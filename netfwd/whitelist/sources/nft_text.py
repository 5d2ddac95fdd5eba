"""`nft list ruleset` text as a whitelist source: read by `netfwd.firewall.nft_text`, evaluated per port."""

from __future__ import annotations

from netfwd.firewall.nft_text import read_text
from netfwd.whitelist.evaluate import groups
from netfwd.whitelist.model import Parsed


def parse(text: str, file: str, context) -> Parsed:
    found, notes = groups(read_text(text, file), context)
    return Parsed("nft", file, tuple(found), tuple(notes))
