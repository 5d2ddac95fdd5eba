"""`fake` backend: a firewall that is a file, for driving the engine without root or a kernel.

The engine (netfwd.engine.core) holds the whole change life cycle — locks, snapshots, journal,
commit-confirm timer, rollback, crash recovery — once for every backend. This backend lets tests
exercise all of it as an unprivileged user and without touching any firewall: its "firewall" is
the text file ``$NETFWD_FAKE_FIREWALL/owned.txt`` (a file, not memory, because the commit-confirm
timer rolls back from another process). It is registered for tests only (not offered by
``--backend``); together with ``NETFWD_KERNEL`` (netfwd.engine.sysctl) nothing of the host changes.

``NETFWD_FAKE_FAIL=write`` makes a write fail half-way (the owned file already changed), the case
the engine must undo.
"""

from __future__ import annotations

import os
from pathlib import Path

from netfwd.backends import Context
from netfwd.backends.base import BaseBackend, Live, TransactionError
from netfwd.safefiles import write_atomic
from netfwd.errors import EnvironmentProblem
from netfwd.model import Essence, Spec


def _store() -> Path:
    folder = os.environ.get("NETFWD_FAKE_FIREWALL")
    if not folder:
        raise EnvironmentProblem("the fake backend needs NETFWD_FAKE_FIREWALL (a directory) to keep its rules in")
    return Path(folder)


def line_of(essence: Essence, comment: str) -> str:
    """One canonical owned line per forward; the field order is the parse order below."""
    sources = "any" if essence.sources is None else ",".join(essence.sources)
    return " ".join(["forward", essence.listen_address or "*", str(essence.listen_port), essence.protocol,
                     essence.to_address, str(essence.to_port), "masq" if essence.masquerade else "nomasq",
                     "local" if essence.local else "remote", sources, comment])


def parse_line(line: str) -> Essence:
    _, listen, port, proto, to, to_port, masq, local, sources, _comment = line.split(" ", 9)
    return Essence(None if listen == "*" else listen, int(port), proto, to, int(to_port), masq == "masq",
                   local == "local", None if sources == "any" else tuple(sources.split(",")))


class FakeBackend(BaseBackend):
    name = "fake"
    desired_depends_on_live = False

    def __init__(self, context: Context) -> None:
        self.context = context
        self.store = _store()

    @property
    def _owned(self) -> Path:
        return self.store / "owned.txt"

    @property
    def _generation(self) -> Path:
        return self.store / "generation"

    def check(self, spec: Spec) -> None:
        """Everything a spec can say is representable here."""

    def read(self) -> Live:
        try:
            return Live(self._owned.read_text())
        except FileNotFoundError:
            return Live("")

    def desired(self, spec: Spec, live: Live) -> str:
        return "".join(line_of(f.essence(), f"netfwd:{spec.cluster}/{f.name}") + "\n" for f in spec.forwards)

    def forwards(self, text: str) -> list[Essence]:
        return [parse_line(line) for line in text.splitlines() if line.startswith("forward ")]

    def validate(self, target: str, live: Live) -> None:
        self.forwards(target)  # a text this backend could not read back is not written either

    def write(self, target: str, live: Live) -> int:
        if os.environ.get("NETFWD_FAKE_FAIL") == "write":
            write_atomic(self._owned, target[: len(target) // 2])  # half a transaction, then the error
            self._bump()
            raise TransactionError("fake backend: write failed half-way (NETFWD_FAKE_FAIL=write)")
        write_atomic(self._owned, target)
        self._bump()
        return 1

    def fingerprint(self) -> str | None:
        try:
            return f"fake-gen:{int(self._generation.read_text())}"
        except (FileNotFoundError, ValueError):
            return "fake-gen:0"

    def persist(self, target: str) -> list[str]:
        path = self.context.root / "etc" / "netfwd-fake.rules"
        if target:
            write_atomic(path, target)
            return [f"saved {path}"]
        path.unlink(missing_ok=True)
        return [f"removed {path}"]

    def _bump(self) -> None:
        generation = int(self.fingerprint().rsplit(":", 1)[1]) + 1  # type: ignore[union-attr]
        write_atomic(self._generation, f"{generation}\n")


def make(context: Context) -> FakeBackend:
    return FakeBackend(context)
