"""Trusted directories and files (netfwd.trust), with a real unprivileged user making the plants.

Every test here builds its directories under a fresh root-owned 0711 directory in /tmp (a real
sticky, world-writable parent), and `nobody` creates what an attacker would: directories of their
own, symlinks, FIFOs. netfwd's file layer must refuse each with exit 3 and write nothing outside.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from netfwd import trust
from netfwd.engine.lock import StateLock
from netfwd.safefiles import publish, remove_file, write_atomic
from netfwd.errors import EXIT_ENVIRONMENT
from tests.attacker import as_nobody, nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (to act as nobody)")


@pytest.fixture
def base():
    """A root-owned 0711 directory in /tmp: nobody can pass through it, not write it."""
    directory = Path(tempfile.mkdtemp(prefix="netfwd-trust-", dir="/tmp"))
    os.chmod(directory, 0o711)
    (directory / "victim").write_text("precious\n")
    try:
        yield directory
    finally:
        shutil.rmtree(directory)


def shared(base: Path, mode: int = 0o777) -> Path:
    """A directory any local user can write (mode 0777, as scratch directories often are)."""
    directory = base / "shared"
    directory.mkdir()
    os.chmod(directory, mode)
    return directory


def refused(action, *words: str) -> str:
    with pytest.raises(trust.Untrusted) as caught:
        action()
    assert caught.value.exit_code == EXIT_ENVIRONMENT
    message = str(caught.value)
    for word in words:
        assert word in message, message
    assert "\n" not in message
    return message


def test_world_writable_directory_is_refused_with_the_fix(base):
    folder = shared(base)
    refused(lambda: trust.check_dir(folder), f"refusing {folder}", "writable by group and others", "chmod go-w")
    refused(lambda: trust.check_dir(folder / "state"), f"refusing {folder}")  # a parent counts too
    refused(lambda: write_atomic(folder / "state" / "state.json", "{}"), f"refusing {folder}")
    assert os.listdir(folder) == []


def test_group_writable_and_sticky_final_directories_are_refused(base):
    folder = shared(base, 0o770)
    refused(lambda: trust.check_dir(folder), "writable by group")
    os.chmod(folder, 0o1777)  # sticky protects names of others, but anyone may plant new ones
    refused(lambda: trust.check_dir(folder), "writable by group and others", "mode 1777")


def test_sticky_parent_is_fine_and_made_directories_get_exact_modes(base):
    folder = shared(base, 0o1777)
    old = os.umask(0)
    try:
        fd = trust.open_dir(folder / "state", create=0o700)
        os.close(fd)
        write_atomic(folder / "root" / "etc" / "sysctl.d" / "90-netfwd.conf", "x = 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((folder / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "root" / "etc").stat().st_mode) == 0o755
    assert (folder / "root" / "etc" / "sysctl.d" / "90-netfwd.conf").read_text() == "x = 1\n"


def test_directory_owned_by_another_user_is_refused(base):
    folder = shared(base, 0o1777)
    as_nobody(lambda: os.mkdir(folder / "mine", 0o700))
    uid, _ = nobody()
    refused(lambda: trust.check_dir(folder / "mine"), f"refusing {folder / 'mine'}", f"owned by uid {uid}",
            "chown root")
    refused(lambda: StateLock(folder / "mine").__enter__(), f"owned by uid {uid}")


def test_symlinked_directory_is_followed_only_when_its_owner_is_trusted(base):
    folder = shared(base, 0o1777)
    real = base / "real"
    real.mkdir(mode=0o700)
    os.symlink(real, folder / "roots")  # root's own link: nobody can repoint it in a sticky /tmp
    trust.check_dir(folder / "roots")
    write_atomic(folder / "roots" / "file", "ok\n")
    assert (real / "file").read_text() == "ok\n"
    as_nobody(lambda: os.symlink(real, folder / "theirs"))
    refused(lambda: trust.check_dir(folder / "theirs" / "state"), f"refusing {folder / 'theirs'}",
            "a symlink owned by uid")


def test_planted_files_are_refused_not_followed_or_replaced(base):
    folder = base / "state"
    folder.mkdir(mode=0o700)
    victim = base / "victim"
    os.symlink(victim, folder / "state.json")
    os.mkfifo(folder / "applied.txt")
    os.symlink(victim, folder / "lock")
    os.symlink(victim, folder / "sysctl.conf")
    refused(lambda: write_atomic(folder / "state.json", "{}"), "a symlink where netfwd keeps its own file")
    refused(lambda: write_atomic(folder / "applied.txt", "x"), "not a regular file")
    refused(lambda: StateLock(folder).__enter__(), "a symlink")
    refused(lambda: trust.read_text(folder / "state.json"), "a symlink")
    refused(lambda: trust.read_text(folder / "applied.txt"), "not a regular file")  # no hang on a FIFO
    refused(lambda: remove_file(folder / "sysctl.conf"), "a symlink")
    (folder / "new").write_text("new\n")
    refused(lambda: publish(folder / "new", folder / "state.json"), "a symlink")
    assert victim.read_text() == "precious\n"
    assert (folder / "state.json").is_symlink() and (folder / "sysctl.conf").is_symlink()
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]


def test_temp_names_cannot_be_predicted(base, monkeypatch):
    """The old name (.NAME.PID.tmp) planted as a symlink is never opened; the real one is random."""
    folder = base / "state"
    folder.mkdir(mode=0o700)
    os.symlink(base / "victim", folder / f".state.json.{os.getpid()}.tmp")
    seen = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b, **kw: (seen.append(a), real_replace(a, b, **kw))[1])
    write_atomic(folder / "state.json", "{}\n")
    write_atomic(folder / "state.json", "{}\n")
    assert (base / "victim").read_text() == "precious\n"
    assert len(seen) == 2 and seen[0] != seen[1]
    assert all(re.fullmatch(rf"\.state\.json\.{os.getpid()}\.[0-9a-f]{{16}}\.tmp", name) for name in seen), seen
