"""Readers that turn a whitelist source into groups of entries, one module per format.

Formats are imported only when used (`netfwd --help` must stay fast), and detected from the
content (`detect.py`) unless `--format` names one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from netaddr import IPSet

from netfwd.whitelist.model import Parsed

# name -> ("module:function", what it reads)
FORMATS: dict[str, tuple[str, str]] = {
    "list": ("netfwd.whitelist.sources.plain:parse", "one IP, CIDR or a-b range per line; # comments"),
    "spec": ("netfwd.whitelist.sources.spec:parse", "a netfwd spec: each forward's allow list"),
    "iptables": ("netfwd.whitelist.sources.iptables:parse", "iptables-save / ip6tables-save output"),
    "nft": ("netfwd.whitelist.sources.nft_text:parse", "`nft list ruleset` text"),
    "nft-json": ("netfwd.whitelist.sources.nft_json:parse", "`nft -j list ruleset` JSON"),
    "firewalld-xml": ("netfwd.whitelist.sources.firewalld:parse_xml", "a firewalld zone XML file"),
    "firewalld": ("netfwd.whitelist.sources.firewalld:parse_list_all", "`firewall-cmd --list-all` output"),
    "netsh": ("netfwd.whitelist.sources.netsh:parse", "`netsh advfirewall firewall show rule ... verbose`"),
    "script": ("netfwd.whitelist.sources.script:parse", "a script `netfwd render` wrote, of any dialect"),
}


@dataclass(frozen=True)
class Context:
    """What readers may need besides the text: the catalog, and facts about the relay."""

    catalog: object = None  # netfwd.catalog.Catalog (for specs that name regions)
    protocol: str = "tcp"
    port: int | None = None  # only this listening port; None = every port found
    relay_addresses: IPSet | None = None  # the relay's own addresses, for `-d` / `ip daddr` matches
    interface: str | None = None  # the interface clients arrive on, for `-i` / `iifname` matches


def reader(name: str):
    module, _, attr = FORMATS[name][0].partition(":")
    return getattr(importlib.import_module(module), attr)


def parse_text(text: str, file: str, name: str, context: Context) -> Parsed:
    return reader(name)(text, file, context)
