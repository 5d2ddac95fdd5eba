"""Output dialects: one module per platform, each rendering apply and remove scripts from a Spec.

Every dialect module exposes ``DIALECT``, an object satisfying :class:`netfwd.dialects.base.Dialect`.
Modules are imported on first use so the CLI stays fast.
"""

from __future__ import annotations

import importlib

from netfwd.errors import InputError

# name -> module; the order is the order of `--dialect all`
MODULES: dict[str, str] = {
    "iptables": "netfwd.dialects.iptables",
    "iptables-restore": "netfwd.dialects.iptables_restore",
    "nft": "netfwd.dialects.nft",
    "firewalld": "netfwd.dialects.firewalld",
    "netsh": "netfwd.dialects.netsh",
    "powershell": "netfwd.dialects.powershell",
}
NAMES = tuple(MODULES)


def get_dialect(name: str):
    """The dialect called `name`; an unknown name is bad input that lists the known ones."""
    module = MODULES.get(name)
    if module is None:
        raise InputError(f"unknown dialect {name!r}; choose one of: {', '.join(NAMES)}, all", field="--dialect")
    return importlib.import_module(module).DIALECT


def dialects_for(relay_os: str) -> list:
    """Every dialect that targets a relay running `relay_os` (what `--dialect all` renders)."""
    return [d for d in (get_dialect(n) for n in NAMES) if d.relay_os == relay_os]
