"""Live backends: apply a spec to a running relay's firewall, one module per firewall.

Every module exposes ``make(context)`` returning an object that satisfies
:class:`netfwd.backends.base.Backend` (most derive from its defaults, ``BaseBackend``). Modules load on first use (python-iptables, for one, needs
the iptables shared libraries at import time).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from netfwd.errors import InputError

if TYPE_CHECKING:
    from netfwd.backends.base import Backend

# name -> (module, keyword arguments for its make())
MODULES: dict[str, tuple[str, dict[str, Any]]] = {
    "iptables": ("netfwd.backends.iptables", {"flavour": "nft"}),
    "iptables-nft": ("netfwd.backends.iptables", {"flavour": "nft"}),
    "iptables-legacy": ("netfwd.backends.iptables", {"flavour": "legacy"}),
    "libiptc": ("netfwd.backends.libiptc", {}),
    "nft": ("netfwd.backends.nft", {}),
    "firewalld": ("netfwd.backends.firewalld", {}),
    "fake": ("netfwd.backends.fake", {}),  # a file for a firewall: engine tests without root
}
NAMES = (*(name for name in MODULES if name != "fake"), "auto")  # what --backend offers


@dataclass(frozen=True)
class Context:
    """What a backend may need from the engine: where persisted files go (`root`), a private work
    directory (`workdir`, for transaction files), the lock to hand to the child that commits, and
    the cluster whose objects it reads and writes (netfwd.owned names them; `legacy()` names objects
    of earlier versions this cluster owns where the objects themselves cannot say so - a call, so
    that only a backend that has such objects (firewalld's ipsets) makes the engine work them out)."""

    root: Path
    workdir: Path
    lock_fd: int | None = None
    cluster: str = ""
    legacy: Callable[[], tuple[str, ...]] = tuple
    allow_runtime_loss: bool = False  # firewalld: reload even if others' runtime-only configuration is lost


def get_backend(name: str, context: Context) -> Backend:
    """The backend called `name` ("auto" is resolved by netfwd.engine.auto first)."""
    if name not in MODULES:
        raise InputError(f"unknown backend {name!r}; choose one of: {', '.join(NAMES)}", field="--backend")
    module, options = MODULES[name]
    backend: Backend = importlib.import_module(module).make(context, **options)
    return backend
