"""The change life cycle (plan, apply, confirm, rollback, remove, status, recovery) on the fake
backend: no root, no namespaces, no firewall — the engine's own logic, every step."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from netfwd.backends.base import TransactionError
from netfwd.engine.core import NothingToDo
from netfwd.engine.state import State
from netfwd.errors import EnvironmentProblem, NetfwdError

ONE = ("api", 16443, "192.168.10.5")
MOVED = ("api", 16443, "192.168.10.9")
TWO = ("etcd", 12379, "192.168.10.6")


def test_plan_lists_the_changes_and_touches_nothing(relay):
    spec = relay.spec("one", ONE, TWO)
    outcome = relay.engine().plan(spec)
    ops = sorted((c.op, c.kind, c.key) for c in outcome.plan.changes())
    assert ("+", "forward", "*:16443/tcp") in ops and ("+", "forward", "*:12379/tcp") in ops
    assert any(kind == "sysctl" for _, kind, _ in ops)  # ip_forward is 0 and no sysctl.d file yet
    assert not outcome.changed and relay.rules() == "" and relay.ip_forward() == "0"
    assert not (relay.root / "etc/sysctl.d").exists()


def test_apply_is_one_write_then_idempotent(relay):
    spec = relay.spec("one", ONE, TWO)
    first = relay.engine().apply(spec)
    assert first.changed and first.change_id
    assert [line.split()[2] for line in relay.rules().splitlines()] == ["16443", "12379"]
    assert relay.ip_forward() == "1"
    assert "net.ipv4.ip_forward = 1" in next((relay.root / "etc/sysctl.d").iterdir()).read_text()
    generation = (relay.firewall / "generation").read_text()

    again = relay.engine().apply(spec)
    assert not again.changed and again.fast  # same spec, firewall generation unchanged: not even parsed
    assert (relay.firewall / "generation").read_text() == generation  # no second write


def test_a_changed_target_is_a_replace_and_its_old_connections_are_forgotten(relay):
    relay.engine().apply(relay.spec("one", ONE))
    outcome = relay.engine().apply(relay.spec("moved", MOVED))
    assert [(c.op, c.key) for c in outcome.plan.changes() if c.kind == "forward"] == [("~", "*:16443/tcp")]
    assert "192.168.10.9" in relay.rules() and "192.168.10.5" not in relay.rules()
    assert (relay.kernel / "conntrack-forgotten").read_text() == "tcp 16443 192.168.10.5:6443\n"


def test_rollback_restores_the_previous_state_exactly_and_twice_redoes(relay):
    relay.engine().apply(relay.spec("one", ONE))
    before = relay.rules()
    relay.engine().apply(relay.spec("two", ONE, TWO))
    after = relay.rules()
    relay.engine().rollback()
    assert relay.rules() == before
    relay.engine().rollback()  # a rollback is a change too
    assert relay.rules() == after


def test_drift_is_reported_by_status_and_repaired_by_apply(relay):
    spec = relay.spec("one", ONE)
    relay.engine().apply(spec)
    relay.tamper("")  # someone flushed netfwd's rules
    report = relay.engine().status()
    assert report["drift"]["lines_missing"] == 1 and "apply" in report["drift"]["hint"]
    assert relay.engine().apply(spec).changed and relay.engine().status()["drift"] is None


def test_remove_takes_away_rules_and_the_persisted_sysctl_only(relay):
    relay.engine().apply(relay.spec("one", ONE))
    outcome = relay.engine().remove()
    assert outcome.changed and relay.rules() == ""
    assert not list((relay.root / "etc/sysctl.d").iterdir())
    assert relay.ip_forward() == "1"  # forwarding stays on until reboot (other services may rely on it)
    assert not relay.engine().remove().changed


def test_a_failed_write_is_undone(relay, monkeypatch):
    relay.engine().apply(relay.spec("one", ONE))
    before = relay.rules()
    monkeypatch.setenv("NETFWD_FAKE_FAIL", "write")
    with pytest.raises(TransactionError):
        relay.engine().apply(relay.spec("two", ONE, TWO))
    assert relay.rules() == before
    state = State.load(relay.state)
    assert state.journal() is None and state.pending is None and state.applied_text() == before


def test_commit_confirm_keeps_a_confirmed_change(relay):
    relay.engine().apply(relay.spec("one", ONE), confirm_timeout=30)
    pending = relay.engine().status()["pending"]
    assert pending and pending["timer_alive"]
    with pytest.raises(EnvironmentProblem, match="waiting for confirmation"):
        relay.engine().apply(relay.spec("two", ONE, TWO))
    assert relay.engine().confirm().startswith("confirmed change")
    assert relay.engine().status()["pending"] is None and "16443" in relay.rules()
    assert (relay.root / "etc/netfwd-fake.rules").read_text() == relay.rules()  # persisted on confirm only
    with pytest.raises(NothingToDo):
        relay.engine().confirm()


def test_commit_confirm_timer_rolls_back_by_itself(relay):
    relay.engine().apply(relay.spec("one", ONE))
    before = relay.rules()
    relay.engine().apply(relay.spec("two", ONE, TWO), confirm_timeout=0.5)
    assert relay.rules() != before
    deadline = time.time() + 20
    while relay.rules() != before and time.time() < deadline:
        time.sleep(0.1)
    assert relay.rules() == before, (relay.state / "timer.log").read_text()
    while relay.engine().status()["pending"] and time.time() < deadline:
        time.sleep(0.1)
    assert relay.engine().status()["pending"] is None


@pytest.mark.parametrize("stage", ["before-write", "after-write", "after-rename", "after-records"])
def test_a_crash_at_every_stage_is_recovered_by_the_next_command(relay, stage):
    relay.engine().apply(relay.spec("one", ONE))
    before = relay.rules()
    two = relay.spec("two", ONE, TWO)
    done = relay.run(f"engine.apply({two!r})", NETFWD_CRASH_AT=stage)
    assert done.returncode == -9, done.stderr  # SIGKILLed at the crash point
    assert json.loads((relay.state / "state.json").read_text())  # the records are never torn
    live = relay.rules()
    assert live == before or "12379" in live  # old or new, never a mixture

    report = relay.engine().status()  # reads only: says a change was interrupted
    assert report["interrupted"] is not None  # the journal outlives every crash point
    outcome = relay.engine().apply(two)  # recovers first, then applies
    assert "12379" in relay.rules() and relay.engine().status()["drift"] is None
    assert State.load(relay.state).journal() is None
    assert outcome.changed == (stage == "before-write")


def test_the_cli_does_not_offer_the_fake_backend(relay, capsys):
    from netfwd.cli import main

    with pytest.raises(SystemExit) as done:
        main(["plan", relay.spec("one", ONE), "--backend", "fake", "--state-dir", str(relay.state),
              "--root", str(relay.root)])
    assert done.value.code == 2 and "unknown backend 'fake'" in capsys.readouterr().err


def test_errors_are_netfwd_errors_not_tracebacks(relay, monkeypatch):
    monkeypatch.delenv("NETFWD_FAKE_FIREWALL")
    with pytest.raises(NetfwdError, match="NETFWD_FAKE_FIREWALL"):
        relay.engine().plan(relay.spec("one", ONE))


def test_the_whole_cycle_runs_as_an_unprivileged_user(tmp_path):
    """The point of the fake backend: engine logic needs no root. Proven by running as nobody."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    from tests.engine.conftest import FakeRelay

    if os.geteuid() != 0:
        pytest.skip("already unprivileged: the other tests prove it")
    nobody = shutil.which("setpriv")
    if nobody is None:
        pytest.skip("setpriv (util-linux) not installed")
    base = tempfile.mkdtemp(prefix="netfwd-nobody-", dir="/tmp")
    try:
        fake = FakeRelay(Path(base) / "relay")
        one, two = fake.spec("one", ONE), fake.spec("two", ONE, TWO)
        for path in [Path(base), *Path(base).rglob("*")]:
            os.chown(path, 65534, 65534)
        code = (f"e.apply({one!r}); first = open({str(fake.firewall / 'owned.txt')!r}).read()\n"
                f"e.apply({two!r}); e.rollback()\n"
                f"assert open({str(fake.firewall / 'owned.txt')!r}).read() == first\nprint('ok', os.geteuid())")
        prelude = ("import os\nfrom pathlib import Path\nfrom netfwd.engine.core import Engine\n"
                   f"e = Engine(Path({str(fake.state)!r}), Path({str(fake.root)!r}), 'fake', log=lambda m: None)\n")
        repo = str(Path(__file__).resolve().parents[2])
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                               "-c", prelude + code], capture_output=True, text=True, timeout=60, cwd=base,
                              env={**os.environ, **fake.env(), "PYTHONPATH": repo})
        assert done.returncode == 0 and done.stdout.strip() == "ok 65534", done.stderr
    finally:
        shutil.rmtree(base, ignore_errors=True)
