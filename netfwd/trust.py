"""Trusted directories and files, because netfwd runs as root next to unprivileged local users.

A directory netfwd reads its state from or writes into (the state directory, `--root` targets,
the lab directory) must be one that only root (or the user running netfwd) can change - and so
must every directory on the way to it, or someone could swap a parent for their own. That is
OpenSSH's StrictModes rule: every directory walked is owned by root or the invoking user and is
not writable by group or others; a parent may be world-writable only with the sticky bit (like
/tmp), where nobody can rename or delete what is not theirs. Anything else is refused with exit 3,
naming the path and the fix.

The walk opens each directory relative to the one before (openat with O_NOFOLLOW) and checks the
open descriptor, so what was checked is what is used; a symlink on the way is followed only when
its owner is trusted (in a sticky directory only its owner could replace it). Files netfwd writes
are opened relative to the checked directory's descriptor with O_NOFOLLOW, and a symlink or a
non-regular file where netfwd expects its own file is refused, never followed or replaced.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from netfwd.errors import EnvironmentProblem

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
PARENT_MODE = 0o755  # missing parents of a directory netfwd makes: as the distro's /var, /etc
MAX_LINKS = 40  # as the kernel's own limit for one path walk


class Untrusted(EnvironmentProblem):
    """A directory or file others could change, where root would read or write (exit 3)."""


def trusted_uids() -> set[int]:
    return {0, os.getuid(), os.geteuid()}


def open_dir(path: str | os.PathLike[str], create: int | None = None) -> int:
    """A descriptor of directory `path`, every directory on the way checked; a missing `path` is
    made with mode `create`, missing parents 0755 (None: a missing one is FileNotFoundError)."""
    fd, missing = _walk(Path(path), create)
    if missing is not None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", missing)
    return fd


def check_dir(path: str | os.PathLike[str]) -> None:
    """Refuse `path` unless it, and every directory on the way, is trusted. A missing tail is fine
    (nothing can be read from it; whoever writes there later makes it with open_dir)."""
    fd, _ = _walk(Path(path), None)
    os.close(fd)


def _walk(path: Path, create: int | None) -> tuple[int, str | None]:
    """(fd of the deepest directory reached, the first missing path or None)."""
    absolute = path if path.is_absolute() else Path(os.getcwd()) / path
    pending = list(absolute.parts[1:])
    shown = "/"
    fd = os.open("/", _DIR_FLAGS)
    links = 0
    try:
        _check(fd, shown, final=not pending)
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            here = os.path.join(shown, name)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create is None:
                    return fd, here
                child = _make(fd, name, here, create if not pending else PARENT_MODE)
            except OSError as problem:
                if problem.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise _problem(here, problem) from None
                info = os.lstat(name, dir_fd=fd)
                if not stat.S_ISLNK(info.st_mode):
                    raise Untrusted(f"{here} is not a directory") from None
                if info.st_uid not in trusted_uids():
                    raise Untrusted(f"refusing {here}: a symlink owned by uid {info.st_uid}, who can point it "
                                    f"anywhere; fix: use the directory it names directly, or have root own "
                                    f"the link") from None
                links += 1
                if links > MAX_LINKS:
                    raise Untrusted(f"{here}: too many levels of symbolic links") from None
                target = os.readlink(name, dir_fd=fd)
                pending[:0] = [p for p in target.split("/") if p]
                if target.startswith("/"):
                    os.close(fd)
                    fd, shown = os.open("/", _DIR_FLAGS), "/"
                continue
            os.close(fd)
            fd = child
            shown = os.path.dirname(shown) if name == ".." else here
            _check(fd, shown, final=not pending)
        return fd, None
    except OSError as problem:  # a race with someone changing the directories under us
        os.close(fd)
        raise _problem(str(path), problem) from None
    except BaseException:
        os.close(fd)
        raise


def _make(fd: int, name: str, here: str, mode: int) -> int:
    try:
        try:
            os.mkdir(name, mode, dir_fd=fd)
            made = True
        except FileExistsError:  # made by someone else meanwhile: checked like any other
            made = False
        child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        if made:
            os.fchmod(child, mode)  # exactly this mode, whatever the umask
        return child
    except OSError as problem:
        raise _problem(here, problem) from None


def _check(fd: int, shown: str, final: bool) -> None:
    info = os.fstat(fd)
    if info.st_uid not in trusted_uids():
        raise Untrusted(f"refusing {shown}: owned by uid {info.st_uid}, who could plant files netfwd (as root) "
                        f"reads or writes there; fix: chown root {shown}, or choose a directory root owns")
    writable = info.st_mode & 0o022
    sticky_parent = info.st_mode & stat.S_ISVTX and not final
    if writable and not sticky_parent:
        who = "group and others" if writable == 0o022 else "group" if writable == 0o020 else "others"
        raise Untrusted(f"refusing {shown}: writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}), who could "
                        f"plant files netfwd (as root) reads or writes there; fix: chmod go-w {shown}, or "
                        f"choose a directory only root can write")


def _problem(path: str, problem: OSError) -> EnvironmentProblem:
    return EnvironmentProblem(f"cannot open {path}: {problem.strerror or problem}")


def refuse_foreign(dir_fd: int, name: str, shown: str | os.PathLike[str]) -> bool:
    """Is `name` in the directory there (False: it is not)? Refuse it unless a regular file:
    a symlink or a device where netfwd's own file belongs was planted, not written by netfwd."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    _refuse_unless_regular(info, shown)
    return True


def _refuse_unless_regular(info: os.stat_result, shown: str | os.PathLike[str]) -> None:
    if not stat.S_ISREG(info.st_mode):
        kind = "a symlink" if stat.S_ISLNK(info.st_mode) else "not a regular file"
        raise Untrusted(f"refusing {shown}: {kind} where netfwd keeps its own file; fix: look at who made "
                        f"it, then remove it")


def refuse_planted(path: Path) -> None:
    """Refuse a symlink or non-regular file at `path` (a missing one is fine)."""
    try:
        info = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    _refuse_unless_regular(info, path)


def open_file(path: str | os.PathLike[str], flags: int, mode: int = 0o600, *, dir_fd: int | None = None,
              shown: str | os.PathLike[str] | None = None) -> int:
    """os.open with O_NOFOLLOW; a symlink or a non-regular file there is refused (Untrusted)."""
    shown = shown or path
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as problem:
        if problem.errno == errno.ELOOP:
            raise Untrusted(f"refusing {shown}: a symlink where netfwd keeps its own file; fix: look at who "
                            f"made it, then remove it") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Untrusted(f"refusing {shown}: not a regular file where netfwd keeps its own file")
    return fd


def read_text(path: str | os.PathLike[str]) -> str:
    """The text of netfwd's own file `path`, never through a symlink (FileNotFoundError if none)."""
    fd = open_file(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode()
