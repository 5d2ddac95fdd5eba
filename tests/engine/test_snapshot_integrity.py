"""Snapshots are restored only as netfwd wrote them (fake backend: no root, no firewall).

Each change records the sha256 of the state it snapshots; rollback, the timer and crash recovery
compare before restoring. A snapshot changed since is refused (exit 3) and nothing is restored."""

from __future__ import annotations

import json

import pytest

from netfwd.engine.state import SnapshotTampered
from netfwd.errors import EXIT_ENVIRONMENT

ONE = ("api", 16443, "192.168.10.5")
TWO = ("etcd", 12379, "192.168.10.6")


def snapshot_of(relay, record: str = "rollback") -> object:
    state = json.loads((relay.state / "state.json").read_text())
    return relay.state / state[record]["snapshot"]


def test_rollback_refuses_a_changed_snapshot_and_restores_the_genuine_one(relay):
    relay.engine().apply(relay.spec("one", ONE))
    first = relay.rules()
    relay.engine().apply(relay.spec("two", ONE, TWO))
    second = relay.rules()
    snapshot = snapshot_of(relay)
    honest = snapshot.read_text()
    snapshot.write_text(honest.replace("192.168.10.5", "203.0.113.66"))
    with pytest.raises(SnapshotTampered) as caught:
        relay.engine().rollback()
    assert caught.value.exit_code == EXIT_ENVIRONMENT and f"refusing to restore {snapshot}" in str(caught.value)
    assert relay.rules() == second
    assert "refusing to restore" in relay.engine().status()["rollback"]["problem"]
    snapshot.write_text(honest)
    assert relay.engine().status()["rollback"]["problem"] is None
    relay.engine().rollback()
    assert relay.rules() == first


def test_crash_recovery_refuses_to_restore_a_changed_snapshot(relay):
    """Cut short before its write, then the firewall moved on and the snapshot was swapped: the
    next command would restore that snapshot to undo the change; it refuses instead."""
    relay.engine().apply(relay.spec("one", ONE))
    two = relay.spec("two", ONE, TWO)
    assert relay.run(f"engine.apply({two!r})", NETFWD_CRASH_AT="before-write").returncode == -9
    journal = json.loads((relay.state / "journal.json").read_text())
    before = relay.state / journal["before"]
    relay.tamper(relay.rules() + "half a change\n")  # neither the state before nor after
    live, honest = relay.rules(), before.read_text()
    before.write_text(honest + "planted\n")
    done = relay.run(f"engine.apply({two!r})")
    assert done.returncode != 0 and "refusing to restore" in done.stderr, done.stderr
    assert relay.rules() == live
    before.write_text(honest)  # the genuine snapshot: restored, then the change is made
    done = relay.run(f"engine.apply({two!r})")
    assert done.returncode == 0 and "restoring the state before it" in done.stderr, done.stderr
    assert "half a change" not in relay.rules() and "12379" in relay.rules()
