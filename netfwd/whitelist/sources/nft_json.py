"""`nft -j list ruleset` as a whitelist source: read by `netfwd.firewall.nft_json`, evaluated per port."""

from __future__ import annotations

from netfwd.firewall.nft_json import read_json
from netfwd.whitelist.evaluate import groups
from netfwd.whitelist.model import Parsed


def parse(text: str, file: str, context) -> Parsed:
    found, notes = groups(read_json(text, file), context)
    return Parsed("nft-json", file, tuple(found), tuple(notes))
