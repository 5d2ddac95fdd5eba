"""The one reader of firewalld rich rules in their text form, as `firewall-cmd --list-rich-rules` and
`--list-all` print them and as netfwd's firewalld dialect writes them.

firewalld prints an inverted source as `source NOT address="..."` and accepts `not` or `NOT` (and
the XML attribute `invert="true"`) on input; both spellings are read the same (docs/firewall.md).
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r"""([A-Za-z-]+)=(?:"([^"]*)"|'([^']*)'|(\S+))|(\S+)""")
ACTIONS = ("accept", "reject", "drop", "mark")


def elements(rule: str) -> dict[str, dict[str, str]]:
    """`rule family="ipv4" source NOT ipset="x" forward-port port="1" ...` -> {element: {attribute: value}}.

    An inversion (`not`/`NOT`) becomes the attribute `invert="true"` of its element, as in zone XML.
    """
    parts: dict[str, dict[str, str]] = {"rule": {}}
    element = "rule"
    for key, double, single, bare, word in _TOKEN.findall(rule):
        if key:
            parts.setdefault(element, {})[key] = double or single or bare
        elif word in ("not", "NOT"):
            parts.setdefault(element, {})["invert"] = "true"
        elif word != "rule":
            element = word
            parts.setdefault(element, {})
    return parts


def inverted(attributes: dict[str, str]) -> bool:
    return attributes.get("invert", "").lower() in ("true", "yes", "1")


def action(parts: dict[str, dict[str, str]]) -> str:
    """The rule's action element (accept, reject, drop, mark), '' when it has none."""
    return next((name for name in parts if name in ACTIONS), "")
