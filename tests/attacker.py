"""A real unprivileged local user for tests: `nobody`, via setuid in a forked child."""

from __future__ import annotations

import os
import pwd


def nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def as_nobody(action) -> None:
    """Run `action()` in a forked child that has become `nobody` for real (setgid/setuid)."""
    uid, gid = nobody()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            action()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the plant made as nobody failed"
