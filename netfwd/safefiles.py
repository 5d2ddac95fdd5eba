"""Crash-safe files: atomic replace (temp + fsync + rename + directory fsync), in trusted directories.

A reader (or the next netfwd after a crash) sees either the old file or the new one, never a torn
one. Shared by the engine (state, snapshots), the backends (saved rules) and the lab (records), so
it sits beside :mod:`netfwd.trust` rather than inside any of them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from netfwd import trust
from netfwd.errors import EnvironmentProblem


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644, dir_mode: int = 0o755) -> None:
    """Replace `path` atomically; a full disk (or any OS error) leaves the old file and no temp file
    behind and is reported as the environment problem it is (exit 3), naming the file.

    The directory (and every one on the way) must be trusted (netfwd.trust; missing ones are
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


# .NAME.PID.RANDOM.tmp (and .NAME.PID.tmp of netfwd before the random part). NAME is matched
# lazily: a RANDOM of 16 decimal digits must not be read as the PID.
_TEMP = re.compile(r"^\..+?\.(\d+)(?:\.[0-9a-f]{16})?\.tmp$")


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
    except (ProcessLookupError, OverflowError):  # gone, or no PID at all
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


def write_json(path: Path, data: Any, mode: int = 0o644, dir_mode: int = 0o755, *, compact: bool = False) -> None:
    """Indented for records people read; `compact` for caches (json's C encoder, which does not
    indent: ~10x faster on the 10,000-forward cache)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":")) if compact else json.dumps(data, indent=2, sort_keys=True)
    write_atomic(path, text + "\n", mode, dir_mode)


def read_json(path: Path) -> Any:
    try:
        return json.loads(trust.read_text(path))
    except FileNotFoundError:
        return None
    except (ValueError, OSError) as problem:
        raise EnvironmentProblem(f"{path} is unreadable ({problem}); move it aside to start afresh") from None
