"""A rehearsal of the hybrid-cluster path (client -> relay -> on-prem API server) in network namespaces.

The same code serves `netfwd lab` and the pytest fixtures, so what the tests exercise is what an
engineer rehearses. Names are resolved lazily (PEP 562): the helper processes the lab starts
(`python -m netfwd.lab.servers`) import nothing but the standard library, and pyroute2 and
cryptography load only when a lab is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from netfwd.lab.core import ConnectResult, HttpsResult, Lab, LabCommandError
    from netfwd.lab.topology import Addresses

__all__ = ["Addresses", "ConnectResult", "HttpsResult", "Lab", "LabCommandError"]


def __getattr__(name: str) -> Any:
    if name == "Addresses":
        from netfwd.lab.topology import Addresses

        return Addresses
    if name in __all__:
        from netfwd.lab import core

        return getattr(core, name)
    raise AttributeError(f"module 'netfwd.lab' has no attribute {name!r}")
