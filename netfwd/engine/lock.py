"""The state lock: one change of a relay's firewall at a time.

The lock is an flock(2) on ``STATE_DIR/lock``: it belongs to the open file, so a child handed
the descriptor (the iptables-restore that commits) keeps it held until the child exits, even when
netfwd itself was killed - the next netfwd waits for that transaction instead of racing it.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path

from netfwd import trust
from netfwd.errors import EXIT_ENVIRONMENT, EnvironmentProblem, NetfwdError


class LockBusy(NetfwdError):
    """Another netfwd holds the state lock (exit 3): one apply at a time."""

    exit_code = EXIT_ENVIRONMENT


class StateLock:
    """flock on STATE_DIR/lock. ``exclusive`` for anything that changes the firewall."""

    def __init__(self, directory: Path, exclusive: bool = True, wait: float = 60.0, what: str = "netfwd") -> None:
        self.path = directory / "lock"
        self.exclusive, self.wait, self.what = exclusive, wait, what
        self.fd: int | None = None

    def __enter__(self) -> "StateLock":
        directory = trust.open_dir(self.path.parent, create=0o700)
        try:
            self.fd = trust.open_file(self.path.name, os.O_RDWR | os.O_CREAT, 0o600, dir_fd=directory,
                                      shown=self.path)
        except OSError as problem:
            raise EnvironmentProblem(f"cannot open {self.path}: {problem.strerror or problem}") from None
        finally:
            os.close(directory)
        kind = fcntl.LOCK_EX if self.exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + self.wait
        told = False
        while True:
            try:
                fcntl.flock(self.fd, kind | fcntl.LOCK_NB)
                break
            except OSError as problem:
                if problem.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
            holder = self.holder()
            if time.monotonic() >= deadline:
                os.close(self.fd)
                self.fd = None
                raise LockBusy(f"another netfwd is changing this relay ({holder or 'holder unknown'}); "
                               f"gave up after {self.wait:g} s - try again when it has finished "
                               f"(lock: {self.path})")
            if not told:
                print(f"netfwd: waiting for the lock: {holder or 'another netfwd'} holds {self.path}",
                      file=sys.stderr)
                told = True
            time.sleep(0.05)
        if self.exclusive:
            try:  # who holds it, for whoever waits: a full disk must not stop the change itself
                os.ftruncate(self.fd, 0)
                os.pwrite(self.fd, f"pid {os.getpid()}: {self.what}\n".encode(), 0)
            except OSError:
                pass
        return self

    def holder(self) -> str:
        try:
            return trust.read_text(self.path).strip()
        except (OSError, NetfwdError):
            return ""

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
