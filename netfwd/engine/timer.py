"""The commit-confirm timer: a detached process that rolls a change back unless it is confirmed.

    python -m netfwd.engine.timer STATE_DIR CHANGE_ID DEADLINE

It runs in its own session (setsid), with no terminal and no pipe to the CLI, so neither the CLI
being killed (even SIGKILL) nor the SSH session dropping stops it. It inherits the network (and,
under firewalld in a lab, mount) namespace of the `netfwd apply` that started it. At the deadline
it takes the state lock and rolls back - only if that very change is still pending: `netfwd
confirm` clears the record (and stops this process by PID), a later rollback replaces it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from netfwd.host import child_env, proc_start





def alive(pid: int | None, start: int | None) -> bool:
    return bool(pid) and start is not None and proc_start(pid) == start  # type: ignore[arg-type]


def spawn(state_dir: Path, change_id: str, deadline: float) -> tuple[int, int | None]:
    """Start the timer; returns (pid, start time) for the state record."""
    env = child_env()
    env.pop("NETFWD_CRASH_AT", None)  # a test's crash point is meant for the CLI, not its timer
    from netfwd.safefiles import open_log

    log = open_log(state_dir / "timer.log")
    try:
        child = subprocess.Popen([sys.executable, "-m", "netfwd.engine.timer", str(state_dir), change_id,
                                  f"{deadline:.3f}"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                 start_new_session=True, close_fds=True, cwd="/", env=env)
    finally:
        os.close(log)
    return child.pid, proc_start(child.pid)


def stop(pid: int | None, start: int | None) -> bool:
    """Stop a timer by PID, only if it is still the process we started."""
    if not alive(pid, start) or pid == os.getpid():  # the timer itself may be the one rolling back
        return False
    try:
        os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
    except ProcessLookupError:
        return False
    return True


def _deadline_now(state_dir: Path, change_id: str) -> float | None:
    from netfwd.engine.state import State

    try:
        pending = State.load(state_dir).pending
    except Exception:  # noqa: BLE001 - unreadable now: act on the deadline we have
        return None
    return float(pending["deadline"]) if pending and pending.get("id") == change_id else None


def main(argv: list[str]) -> int:
    state_dir, change_id, deadline = Path(argv[0]), argv[1], float(argv[2])
    stamp = lambda: time.strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(deadline))
    print(f"{stamp()} timer {os.getpid()}: change {change_id} rolls back at {when} unless confirmed",
          flush=True)
    from netfwd.engine.core import Engine  # imported up front: roll back right at the deadline
    from netfwd.errors import NetfwdError

    while True:
        while (left := deadline - time.time()) > 0:
            time.sleep(min(left, 5.0))
        later = _deadline_now(state_dir, change_id)  # apply moves it to "live + timeout" once live
        if later is None or later <= time.time():
            break
        deadline = later

    try:
        message = Engine.for_timer(state_dir).expire(change_id)
    except NetfwdError as problem:
        print(f"{stamp()} timer {os.getpid()}: rollback of {change_id} FAILED: {problem}", flush=True)
        return 1
    print(f"{stamp()} timer {os.getpid()}: {message}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
