"""`iptables` (nf_tables flavour) and `iptables-legacy` backends: one `iptables-restore --noflush`.

Read: ONE `iptables-save -c` (owned chains, jumps and DNAT counters). Write: ONE restore of only
the owned chains that differ, with the missing jumps inserted and stale ones deleted in the same
payload (see netfwd.backends.xstate). A restore commits table by table; a failure in the first
table commits nothing, so only the later tables are checked with `--test` first - the cheap part
of the validation that still guarantees "all or nothing" (for the nf_tables flavour and legacy
alike). The payload is written to a file first, so a restore that has started finishes even if
netfwd is killed meanwhile, and it holds netfwd's lock until it does.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING

from netfwd.backends import Context
from netfwd.backends.base import Live, TransactionError, run
from netfwd.errors import EnvironmentProblem

if TYPE_CHECKING:
    from netfwd.model import Essence, Spec

WAIT = "5"  # seconds to wait for the xtables lock (`-w`): bounded, never forever
PERSIST_TARGETS = ("etc/iptables/rules.v4", "etc/sysconfig/iptables")  # Debian/Ubuntu, RHEL/Fedora


def tool(flavour: str, kind: str) -> str:
    """The save/restore binary of a flavour: `iptables-nft-save`, else `iptables-save` if it is that flavour."""
    specific = f"iptables-{flavour}-{kind}"
    if shutil.which(specific):
        return specific
    generic = f"iptables-{kind}"
    if shutil.which(generic):
        version = run([generic, "--version"], check=False).stdout
        if ("nf_tables" in version) == (flavour == "nft"):
            return generic
    raise EnvironmentProblem(f"{specific} not found: install iptables (with the {flavour} flavour), "
                             "or choose another --backend")


def _xstate():
    """The rule model loads the spec model (netaddr): only when rules are read or written, not on
    the no-change path, which needs nothing but the nf_tables generation."""
    from netfwd.backends import xstate

    return xstate


class IptablesBackend:
    def __init__(self, context: Context, flavour: str) -> None:
        self.context = context
        self.flavour = flavour
        self.name = "iptables" if flavour == "nft" else "iptables-legacy"
        self._save = tool(flavour, "save")
        self._restore = tool(flavour, "restore")

    def check(self, spec: Spec) -> None:
        from netfwd.dialects.iptables_restore import DIALECT

        DIALECT.check(spec)

    def read(self) -> Live:
        out = run([self._save, "-c"], what=self._save).stdout
        owned, counters = _xstate().parse(out)
        return Live(_xstate().canonical(owned), counters, {"owned": owned})

    def desired(self, spec: Spec, live: Live) -> str:
        return _xstate().canonical(_xstate().desired(spec))

    def forwards(self, text: str) -> list[Essence]:
        from netfwd import xtables

        return xtables.parse_save(text)

    def tags(self, line: str) -> str | None:
        return _xstate().tag(line)

    def focus(self, text: str, tags: set[str]) -> str:
        return _xstate().focus(text, tags)

    def validate(self, target: str, live: Live) -> None:
        """`iptables-restore --test` of the whole transaction (what `plan` checks)."""
        xstate = _xstate()
        parts = xstate.transaction(live.extra.get("owned") or xstate.parse(live.text)[0], xstate.parse(target)[0])
        if parts:
            run([self._restore, "--test", "--noflush", "-w", WAIT], input=_xstate().payload(parts),
                what=f"{self._restore} --test")

    def write(self, target: str, live: Live) -> int:
        """Returns the number of commits (one per table) for the engine's fingerprint check."""
        owned = live.extra.get("owned") or _xstate().parse(live.text)[0]
        parts = _xstate().transaction(owned, _xstate().parse(target)[0])
        if not parts:
            return 0
        if len(parts) > 1:  # all or nothing: the tables committed after the first must be valid
            run([self._restore, "--test", "--noflush", "-w", WAIT], input=_xstate().payload(parts[1:]),
                what=f"{self._restore} --test")
        fd, path = tempfile.mkstemp(prefix="restore.", dir=self.context.workdir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(_xstate().payload(parts))
            lock = () if self.context.lock_fd is None else (self.context.lock_fd,)
            run([self._restore, "--noflush", "-w", WAIT], stdin_file=path, pass_fds=lock, what=self._restore)
        finally:
            os.unlink(path)
        return len(parts)

    def fingerprint(self) -> str | None:
        if self.flavour != "nft":
            return None
        from netfwd.backends.nfgen import generation

        gen = generation()
        return None if gen is None else f"nft-gen:{gen}"

    def persist(self, target: str) -> list[str]:
        """Save the whole ruleset where iptables-persistent / iptables-services restore it at boot."""
        root = self.context.root
        for relative in PERSIST_TARGETS:
            path = root / relative
            if path.parent.is_dir() if relative.startswith("etc/iptables/") else path.exists():
                text = run([self._save], what=self._save).stdout
                _write_atomic(path, text)
                return [f"saved the ruleset to {path}"]
        return ["no iptables persistence found (iptables-persistent or iptables-services): "
                "the rules last until reboot"]


def _write_atomic(path: Path, text: str) -> None:
    from netfwd.engine.files import write_atomic

    write_atomic(path, text, mode=0o600)


def make(context: Context, flavour: str = "nft") -> IptablesBackend:
    return IptablesBackend(context, flavour)


__all__ = ["IptablesBackend", "TransactionError", "make", "tool"]
