"""Crash-safe files: atomic replace (temp + fsync + rename + directory fsync) and the state lock.

A reader (or the next netfwd after a crash) sees either the old file or the new one, never a torn
one. The lock is an flock(2) on ``STATE_DIR/lock``: it belongs to the open file, so a child handed
the descriptor (the iptables-restore that commits) keeps it held until the child exits, even when
netfwd itself was killed - the next netfwd waits for that transaction instead of racing it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from netfwd.engine import trust
from netfwd.errors import EnvironmentProblem, NetfwdError, EXIT_ENVIRONMENT


class LockBusy(NetfwdError):
    """Another netfwd holds the state lock (exit 3): one apply at a time."""

    exit_code = EXIT_ENVIRONMENT


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Replace `path` atomically; a full disk (or any OS error) leaves the old file and no temp file
    behind and is reported as the environment problem it is (exit 3), naming the file.

    The directory (and every one on the way) must be trusted (netfwd.engine.trust; missing ones are
    made with `dir_mode`); the temp file is created there with O_EXCL|O_NOFOLLOW under a name nobody
    can predict, and a symlink or non-regular file at `path` is refused rather than replaced."""
    raw = data.encode() if isinstance(data, str) else data
    directory = trust.open_dir(path.parent, create=dir_mode)
    tmp = f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp"
    made = False
    try:
        trust.refuse_foreign(directory, path.name, path)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=directory)
        made = True
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path.name, src_dir_fd=directory, dst_dir_fd=directory)
        made = False
        os.fsync(directory)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot write {path}: {problem.strerror or problem}") from None
    finally:
        if made:
            try:
                os.unlink(tmp, dir_fd=directory)
            except OSError:
                pass
        os.close(directory)


def publish(source: Path, target: Path) -> None:
    """rename(2) `source` over `target` (same file system), refusing a symlink or non-regular file
    planted at `target`; the directory is fsynced so the rename survives a crash."""
    origin, directory = trust.open_dir(source.parent), trust.open_dir(target.parent)
    try:
        trust.refuse_foreign(directory, target.name, target)
        os.replace(source.name, target.name, src_dir_fd=origin, dst_dir_fd=directory)
        os.fsync(directory)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot move {source} to {target}: {problem.strerror or problem}") from None
    finally:
        os.close(origin)
        os.close(directory)


def remove_file(path: Path) -> bool:
    """Delete netfwd's own file `path` (False: there was none); a symlink or a non-regular file
    there was not made by netfwd and is refused, not removed."""
    try:
        directory = trust.open_dir(path.parent)
    except FileNotFoundError:
        return False
    try:
        if not trust.refuse_foreign(directory, path.name, path):
            return False
        os.unlink(path.name, dir_fd=directory)
        os.fsync(directory)
        return True
    except OSError as problem:
        raise EnvironmentProblem(f"cannot remove {path}: {problem.strerror or problem}") from None
    finally:
        os.close(directory)


def open_log(path: Path) -> int:
    """An append-only log of the state directory (0600, never through a symlink)."""
    directory = trust.open_dir(path.parent, create=0o700)
    try:
        return trust.open_file(path.name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600, dir_fd=directory,
                               shown=path)
    except OSError as problem:
        raise EnvironmentProblem(f"cannot open {path}: {problem.strerror or problem}") from None
    finally:
        os.close(directory)


# .NAME.PID.RANDOM.tmp (and .NAME.PID.tmp of netfwd before the random part)
_TEMP = re.compile(r"^\..+\.(\d+)(?:\.[0-9a-f]{16})?\.tmp$")


def sweep_temp_files(directory: Path) -> list[Path]:
    """Delete temp files that `write_atomic` calls killed before their rename left behind.

    Only files whose writer is gone are removed (the PID is in the name); they were never read,
    since the rename is what publishes a file. Called under the state lock."""
    swept = []
    for folder in (directory, directory / "snapshots"):
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        for name in names:
            match = _TEMP.match(name)
            if match and not _alive(int(match.group(1))):
                (folder / name).unlink(missing_ok=True)
                swept.append(folder / name)
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True) + "\n", mode, dir_mode)


def read_json(path: Path) -> Any:
    try:
        return json.loads(trust.read_text(path))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as problem:
        raise EnvironmentProblem(f"{path} is unreadable ({problem}); move it aside to start afresh") from None


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
