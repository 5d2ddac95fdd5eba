"""The live firewall of a relay as one model: every table the kernel evaluates (iptables-nft,
iptables-legacy, native nft), read from the dumps a :class:`netfwd.relayfacts.LinuxRelay` took.
Shared by doctor (what the rules do to each forward) and explain (the path of one packet)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from netfwd.firewall.model import Ruleset

if TYPE_CHECKING:
    from netfwd.relayfacts import LinuxRelay


def read_live(relay: LinuxRelay, lazy: bool = False) -> tuple[Ruleset, list[str]]:
    """Every backend's rules in `relay`, as one ruleset, and what was read ("iptables-nft (IPv4)", ...).
    `lazy`: iptables rules are read whole when first used (explain; see read_ruleset)."""
    from netfwd.firewall.iptables_save import read_ruleset
    from netfwd.firewall.nft_json import build

    ruleset, read = Ruleset(), []
    for backend, texts in relay.saves.items():
        for version, text in texts.items():
            label = f"iptables-{backend} (IPv{version})"
            part = read_ruleset(text, label, lazy)
            for (tid, name), chain in part.chains.items():
                ruleset.chains[(f"{backend}/{tid}", name)] = chain
            read.append(label)
    compat = relay.compat_tables  # (nft family, table) that iptables-nft made: read above
    objects = relay.nft_objects
    if objects:
        native = [o for o in objects if _table_of(o) is not None and _table_of(o) not in compat]
        part = build(native, "nft ruleset")
        ruleset.chains.update(part.chains)
        read += sorted({f"nft table {f} {t}" for f, t in (_table_of(o) for o in native) if t})  # type: ignore[misc]
    return ruleset, read


def _table_of(obj: dict[str, Any]) -> tuple[str, str] | None:
    for kind in ("table", "chain", "rule", "set", "map"):
        if kind in obj and isinstance(obj[kind], dict):
            body = obj[kind]
            return body.get("family"), body.get("table", body.get("name") if kind == "table" else None)
    return None
