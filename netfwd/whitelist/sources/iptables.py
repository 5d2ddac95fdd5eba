"""`iptables-save` / `ip6tables-save` output (optionally after `ipset save`) as a whitelist source:
read by the one iptables-save reader (`netfwd.firewall.iptables_save`), then evaluated per port."""

from __future__ import annotations

from netfwd.firewall.iptables_save import read_ruleset
from netfwd.whitelist.evaluate import groups
from netfwd.whitelist.model import Parsed


def parse(text: str, file: str, context) -> Parsed:
    found, notes = groups(read_ruleset(text, file), context)
    return Parsed("iptables", file, tuple(found), tuple(notes))
