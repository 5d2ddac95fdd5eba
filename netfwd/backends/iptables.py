"""`iptables` (nf_tables flavour) and `iptables-legacy` backends: one `iptables-restore --noflush`.

Read: ONE `iptables-save -c` (owned chains, jumps and DNAT counters). Write: ONE restore of only
the owned chains that differ, with the missing jumps inserted and stale ones deleted in the same
payload (see netfwd.netfilter.xstate). A restore commits table by table; a failure in the first
table commits nothing, so only the later tables are checked with `--test` - while the restore
reads the first table, whose COMMIT it gets only once that test passed: "all or nothing" for the
nf_tables flavour and legacy alike, at the cost of about one restore, not two. The payload is
written to files first, so a restore that has started finishes even if netfwd is killed
meanwhile, and it holds netfwd's lock until it does.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from typing import TYPE_CHECKING, Callable

from netfwd.backends import Context
from netfwd.backends.base import BaseBackend, Live, TransactionError, ahead, failure, run, run_meanwhile
from netfwd.errors import EnvironmentProblem

if TYPE_CHECKING:
    from netfwd.model import Essence, Spec

WAIT = "5"  # seconds to wait for the xtables lock (`-w`): bounded, never forever


# $1 folder with head (the first table up to its COMMIT) and test (the later tables); the rest is
# the restore command; standard input is netfwd's gate. The test runs in the background while the
# restore reads the head; the head's COMMIT and the later tables follow only if the test passed
# (else its exit status is left in test.status) and netfwd said "go" on the gate - once its
# journal is written; if netfwd fails or dies first, the gate closes without it - else the
# restore gets no COMMIT. The test takes a lock file of its own
# (XTABLES_LOCKFILE, iptables(8); the test only reads the kernel's tables): a legacy restore holds
# the xtables lock from a table's first line to its COMMIT, so on the shared lock the test would
# wait for the very restore that waits for it. iptables 1.4.21's restore takes no lock at all.
_FEED_AFTER_TEST = """
folder=$1; shift
{ XTABLES_LOCKFILE="$folder/test.lock" "$@" --test <"$folder/test" >"$folder/test.out" 2>"$folder/test.err" &
  test=$!
  cat "$folder/head"
  if wait "$test"; then
    if read -r go && [ "$go" = go ]; then echo COMMIT; cat "$folder/test"; fi
  else echo "$?" >"$folder/test.status"; fi
} | "$@"
"""


def tool(flavour: str, kind: str) -> str:
    """The save/restore binary of a flavour: `iptables-nft-save`, else `iptables-save` if it is that flavour."""
    specific = f"iptables-{flavour}-{kind}"
    if shutil.which(specific):
        return specific
    generic = f"iptables-{kind}"
    if shutil.which(generic):
        version = run([generic, "--version"], check=False).stdout
        if ("nf_tables" in version) == (flavour == "nft"):
            return generic
    raise EnvironmentProblem(f"{specific} not found: install iptables (with the {flavour} flavour), "
                             "or choose another --backend")


_WAITS: dict[str, tuple[str, ...]] = {}  # restore binary -> its wait flags (probed once per process)


def restore_wait(restore: str, started: subprocess.Popen[str] | None = None) -> tuple[str, ...]:
    """How this iptables-restore waits for the xtables lock, probed once: `-w 5`, `-w`, or not at all.

    CentOS 7's iptables-restore 1.4.21 has no `-w`; it prints "invalid option" and goes on with exit
    status 0 (and would read `5` as its input file), so an answer counts only when it is silent.
    `started`: the first probe, begun by :func:`probe_wait` while netfwd did other work."""
    if restore not in _WAITS:
        found: tuple[str, ...] = ()
        for flag in (("-w", WAIT), ("-w",)):
            if started is not None and flag == ("-w", WAIT):
                out, err = started.communicate()
                done = subprocess.CompletedProcess(started.args, started.returncode, out, err)
            else:
                done = run([restore, "--test", "--noflush", *flag], input="", check=False)
            if done.returncode == 0 and not (done.stdout + done.stderr).strip():
                found = flag
                break
        _WAITS[restore] = found
    elif started is not None:
        started.communicate()
    return _WAITS[restore]


def probe_wait(restore: str) -> subprocess.Popen[str] | None:
    """Begin :func:`restore_wait`'s first probe in the background (None: known already, or it does not start)."""
    if restore in _WAITS:
        return None
    try:
        return subprocess.Popen([restore, "--test", "--noflush", "-w", WAIT], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    except OSError:
        return None


def _owned_names():
    from netfwd import owned

    return owned


@functools.cache
def _xstate():
    """The rule model loads the spec model (netaddr): only when rules are read or written, not on
    the no-change path, which needs nothing but the nf_tables generation. (Cached: a diff asks it
    once per line.)"""
    from netfwd.netfilter import xstate

    return xstate


class IptablesBackend(BaseBackend):
    def __init__(self, context: Context, flavour: str) -> None:
        self.context = context
        self.flavour = flavour
        self.name = "iptables" if flavour == "nft" else "iptables-legacy"
        self._save = tool(flavour, "save")
        self._restore = tool(flavour, "restore")

    @property
    def _wait(self) -> tuple[str, ...]:
        return restore_wait(self._restore)

    def check(self, spec: Spec) -> None:
        from netfwd.dialects.iptables_restore import DIALECT

        DIALECT.check(spec)

    def read(self) -> Live:
        out = run([self._save, "-c"], what=self._save).stdout
        every, counters = _xstate().parse(out)
        owned, claims = _xstate().split(every, self.context.cluster)
        prefix = _owned_names().comment_prefix(self.context.cluster)
        counters = {tag: value for tag, value in counters.items() if tag.startswith(prefix)}
        return Live(_xstate().canonical(owned), counters, {"owned": owned, "claims": claims})

    def desired(self, spec: Spec, live: Live) -> str:
        owned = _xstate().desired(spec)
        text = _xstate().canonical(owned)
        self._desired = (text, owned)  # write() of this very text need not parse it back
        return text

    def _owned(self, target: str):
        """`target` as the rule model: the one desired() built, else parsed once (apply after plan
        takes its text from plan's cache, and write() and persist() both need it)."""
        known = getattr(self, "_desired", None)
        if known is None or known[0] is not target:
            known = self._desired = (target, _xstate().parse(target)[0])
        return known[1]

    def _boot_payload(self, target: str) -> str:
        """The boot payload of `target` (worked out while the restore of `target` runs)."""
        known = getattr(self, "_boot", None)
        if known is None or known[0] is not target:
            known = self._boot = (target, _xstate().boot_payload(self._owned(target)))
        return known[1]

    def forwards(self, text: str) -> list[Essence]:
        from netfwd import xtables

        return xtables.parse_save(text)

    def tags(self, line: str) -> str | None:
        return _xstate().tag(line)

    def focus(self, text: str, tags: set[str]) -> str:
        return _xstate().focus(text, tags)

    def validate(self, target: str, live: Live) -> None:
        """`iptables-restore --test` of the whole transaction (what `plan` checks)."""
        xstate = _xstate()
        parts = xstate.transaction(live.extra.get("owned") or xstate.parse(live.text)[0], self._owned(target))
        if parts:
            run([self._restore, "--test", "--noflush", *self._wait], input=_xstate().payload(parts),
                what=f"{self._restore} --test")

    def write(self, target: str, live: Live) -> int:
        """Returns the number of commits (one per table) for the engine's fingerprint check."""
        return self.write_meanwhile(target, live, lambda: None)

    def write_meanwhile(self, target: str, live: Live, meanwhile: Callable[[], object],
                        before_commit: Callable[[], object] | None = None) -> int:
        """:meth:`write`; while the restore runs, `meanwhile()` and the boot payload that
        :meth:`persist` of this target writes are worked out, and (several tables) `before_commit()`
        runs while the restore reads the first one."""
        started = probe_wait(self._restore)  # while the transaction and its files are worked out
        try:
            return self._write(target, live, meanwhile, before_commit, started)
        finally:
            if started is not None and started.returncode is None:
                started.communicate()

    def _write(self, target: str, live: Live, meanwhile: Callable[[], object],
               before_commit: Callable[[], object] | None, started: subprocess.Popen[str] | None) -> int:
        owned = live.extra.get("owned") or _xstate().parse(live.text)[0]
        parts = _xstate().transaction(owned, self._owned(target))
        if not parts or len(parts) == 1:
            if before_commit is not None:
                before_commit()
        if not parts:
            ahead(meanwhile)
            return 0
        lock = () if self.context.lock_fd is None else (self.context.lock_fd,)

        def also() -> None:
            ahead(lambda: self._boot_payload(target))
            ahead(meanwhile)

        if len(parts) > 1:  # all or nothing: the tables committed after the first must be valid
            self._restore_tested_meanwhile(parts, lock, also, before_commit, started)
            return len(parts)
        fd, path = tempfile.mkstemp(prefix="restore.", dir=self.context.workdir)
        try:
            with os.fdopen(fd, "w") as out:
                out.write(_xstate().payload(parts))
            wait = restore_wait(self._restore, started)
            done = run_meanwhile([self._restore, "--noflush", *wait], also, stdin_file=path, pass_fds=lock,
                                 what=self._restore)
            if done.returncode != 0:
                raise failure(done, self._restore)
        finally:
            os.unlink(path)
        return len(parts)

    def _restore_tested_meanwhile(self, parts: list, lock: tuple[int, ...], meanwhile: Callable[[], object],
                                  before_commit: Callable[[], object] | None = None,
                                  started: subprocess.Popen[str] | None = None) -> None:
        """The same restore of the same bytes, but the `--test` of the later tables runs while the
        restore parses the first one, and the first table's COMMIT is fed only once that test
        passed (a restore that meets the end of its input inside a table commits nothing). A
        `sh` does the feeding, so the transaction still finishes (or commits nothing) if netfwd is
        killed meanwhile. The COMMIT also waits for `before_commit()`, which runs while the restore
        reads the first table."""
        payload = _xstate().payload
        first = payload(parts[:1])
        cut = first.rindex("COMMIT\n")
        with tempfile.TemporaryDirectory(prefix="restore.", dir=self.context.workdir) as folder:
            for name, text in {"head": first[:cut], "test": payload(parts[1:])}.items():  # the sh echoes the COMMIT
                Path(folder, name).write_text(text)
            wait = restore_wait(self._restore, started)
            done = run_meanwhile(["sh", "-c", _FEED_AFTER_TEST, "sh", folder, self._restore, "--noflush", *wait],
                                 meanwhile, pass_fds=lock, what=self._restore, before_commit=before_commit, gate=True)
            status = Path(folder, "test.status")
            if status.exists():  # the test failed: the restore saw no COMMIT, nothing was committed
                test = subprocess.CompletedProcess([], int(status.read_text() or 1),
                                                   Path(folder, "test.out").read_text(errors="replace"),
                                                   Path(folder, "test.err").read_text(errors="replace"))
                raise failure(test, f"{self._restore} --test")
            if done.returncode != 0:
                raise failure(done, self._restore)

    def fingerprint(self) -> str | None:
        if self.flavour != "nft":
            return None
        from netfwd.netfilter.nfgen import generation

        gen = generation()
        return None if gen is None else f"nft-gen:{gen}"

    def persisted_files(self) -> list[Path]:
        """What persist may write (the engine checks their directories before changing anything)."""
        from netfwd import bootunit, owned

        cluster = self.context.cluster
        return [self.context.root / owned.xtables_file(cluster), self.context.root / bootunit.unit_file(cluster)]

    def persist(self, target: str) -> list[str]:
        """The cluster's own `iptables-restore --noflush` payload and the unit that loads it at boot
        (netfwd.bootunit) - never an `iptables-save` of the host, which holds everyone's rules."""
        from netfwd import bootunit, owned

        root, cluster = self.context.root, self.context.cluster
        path = owned.xtables_file(cluster)
        if not target:
            return bootunit.uninstall(root, cluster, path)
        text = self._boot_payload(target)
        restore = shutil.which(self._restore) or f"/usr/sbin/{self._restore}"
        return bootunit.install(root, cluster, path, text, [restore, "--noflush", f"/{path}"])


def make(context: Context, flavour: str = "nft") -> IptablesBackend:
    return IptablesBackend(context, flavour)


__all__ = ["IptablesBackend", "TransactionError", "make", "tool"]
