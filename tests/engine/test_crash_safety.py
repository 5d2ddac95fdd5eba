"""Crash safety of `netfwd apply`: SIGKILL at every state-file step, and a full state directory.

netfwd acts on a network namespace made here (nft backend); its state directory is a 256 KB tmpfs
mounted inside a private mount namespace (a `sleep` holds it), so filling it never touches the
host's disks. After every interrupted or failed apply:

* the live owned state is exactly the old or the new one (never a mix, never nothing);
* `netfwd status` runs and, when a change was cut short, says so ("interrupted");
* the next `netfwd apply` finishes or undoes it, and the records then match what is live.

SIGKILL lands on the Nth rename(2) netfwd makes (strace --inject), for every N: each atomic
write of the state directory ends in one, so every gap between two steps is hit once; plus the
engine's own crash points around the firewall transaction.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netfwd import owned
from netfwd.engine.state import cluster_dir

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(shutil.which("strace") is None or shutil.which("nft") is None,
                                 reason="needs strace and nft")]

REPO = Path(__file__).resolve().parents[2]
SPEC = """version: 1
cluster: crash
forwards:
  - name: api
    listen: {{port: 16443}}
    to: {{address: 10.77.0.2, port: {port}}}
    allow: {{cidrs: [203.0.113.0/24, 198.51.100.0/24]}}
"""


class Relay:
    """netfwd against a namespace of our own, its state directory on a tmpfs only it can see."""

    def __init__(self, tmp: Path) -> None:
        self.ns = f"nf-crash-{secrets.token_hex(4)}"
        self.root, self.state = tmp / "root", tmp / "state"
        self.root.mkdir()
        self.state.mkdir()
        self.specs = []
        for port in (6443, 6444):
            path = tmp / f"spec-{port}.yaml"
            path.write_text(SPEC.format(port=port))
            self.specs.append(str(path))
        self.holder: subprocess.Popen | None = None

    def __enter__(self) -> "Relay":
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sleep", "900"])
        ours = os.readlink("/proc/self/ns/mnt")
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{self.holder.pid}/ns/mnt") == ours:  # until unshare has exec'd sleep
            assert time.monotonic() < deadline, "the mount namespace did not come up"
            time.sleep(0.01)
        self.enter(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "netfwd-crash-test", str(self.state)])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.holder is not None:
            self.holder.kill()  # the tmpfs goes with its mount namespace
            self.holder.wait()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)

    def enter(self, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` in the private mount namespace (where the tmpfs is)."""
        assert self.holder is not None
        return subprocess.run(["nsenter", "-t", str(self.holder.pid), "-m", f"--wd={REPO}", "--", *argv],
                              capture_output=True, text=True, timeout=120, **kwargs)

    def netfwd(self, *args: str, trace: list[str] | None = None, env: dict[str, str] | None = None):
        variables = {"NETFWD_ROOT": str(self.root), "NETFWD_STATE_DIR": str(self.state), "PYTHONPATH": str(REPO),
                     **(env or {})}
        command = ["env", *(f"{k}={v}" for k, v in variables.items()), sys.executable, "-m", "netfwd", *args,
                   "--netns", self.ns, "--backend", "nft"]
        return self.enter([*(trace or []), *command])

    def owned(self) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.ns, "nft", "list", "table", *owned.nft_table("crash").split()],
                              capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    def files(self) -> set[str]:
        done = self.enter(["find", str(self.state), "-type", "f"])
        return set(done.stdout.split())

    def journal(self) -> bool:
        """A change is under way (or was cut short): its journal exists."""
        return str(cluster_dir(self.state, "crash") / "journal.json") in self.files()

    def fill(self, pages: int) -> None:
        """Leave `pages` pages free in the state directory."""
        self.unfill()
        script = ("import os, sys; st = os.statvfs(sys.argv[1]); "
                  "open(sys.argv[1] + '/.filler', 'wb').write(b'x' * max(0, (st.f_bavail - int(sys.argv[2])) * st.f_frsize))")
        assert self.enter([sys.executable, "-c", script, str(self.state), str(pages)]).returncode == 0

    def unfill(self) -> None:
        self.enter(["rm", "-f", str(self.state / ".filler")])

    def status(self) -> dict:
        done = self.netfwd("status", "--output", "json")
        assert "Traceback" not in done.stderr and done.returncode in (0, 1), done.stderr
        report = json.loads(done.stdout)
        if report["interrupted"]:  # the people's version says it too, and what happens next
            text = self.netfwd("status")
            assert f"interrupted: change {report['interrupted']}" in text.stdout, text.stdout
        return report

    def apply(self, which: int, expect: int = 0) -> subprocess.CompletedProcess:
        done = self.netfwd("apply", self.specs[which], "--yes")
        assert done.returncode == expect, done.stdout + done.stderr
        return done


@pytest.fixture
def relay(tmp_path):
    with Relay(tmp_path) as made:
        yield made


def states(relay: Relay) -> list[str]:
    """The owned state after each spec, applied cleanly."""
    found = []
    for which in (0, 1):
        relay.apply(which)
        found.append(relay.owned())
        assert "netfwd" in found[-1]
    assert found[0] != found[1]
    return found


def recovered(relay: Relay, which: int, wanted: str) -> None:
    """The next apply finishes or undoes whatever was cut short; then records match the firewall."""
    relay.apply(which)
    assert relay.owned() == wanted
    report = relay.status()
    assert report["interrupted"] is None and report["drift"] is None, report
    assert not relay.journal()
    assert not [f for f in relay.files() if f.endswith(".tmp")], "a killed write's temp file was not swept"


def test_sigkill_at_every_step_leaves_old_or_new(relay):
    owned = states(relay)  # spec 1 is live now
    kills, step = 0, 1
    target = 0
    while True:
        old = relay.owned()
        trace = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=rename,renameat,renameat2",
                 "-e", f"inject=rename,renameat,renameat2:signal=SIGKILL:when={step}"]
        done = relay.netfwd("apply", relay.specs[target], "--yes", trace=trace)
        assert "Traceback" not in done.stderr, done.stderr
        now = relay.owned()
        assert now in (old, owned[target]), f"step {step}: the owned state is neither old nor new:\n{now}"
        if done.returncode == 0:  # no rename number `step`: every step has been hit
            break
        assert done.returncode in (-signal.SIGKILL, 128 + signal.SIGKILL), done.stdout + done.stderr
        kills += 1
        report = relay.status()
        if relay.journal():
            assert report["interrupted"], f"step {step}: a change was cut short and status does not say so"
        recovered(relay, target, owned[target])
        target, step = 1 - target, step + 1
    assert kills >= 5, f"only {kills} kill points: is strace injecting?"

    # the engine's own crash points, on both sides of the firewall transaction
    for point in ("before-write", "after-write"):
        target = 1 - target
        old = relay.owned()
        done = relay.netfwd("apply", relay.specs[target], "--yes", env={"NETFWD_CRASH_AT": point})
        assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
        assert relay.owned() == (old if point == "before-write" else owned[target])
        assert relay.status()["interrupted"], f"status does not explain the crash at {point}"
        recovered(relay, target, owned[target])


def test_full_state_directory_fails_cleanly_at_every_step(relay):
    owned = states(relay)
    relay.apply(0)
    successes, pages, failures = 0, 0, 0
    while successes < 2:  # until there is room for a whole change, twice in a row
        assert pages < 64, "never succeeds"
        relay.apply(0)  # the old state, with all the room it needs
        before = relay.files()
        relay.fill(pages)
        done = relay.netfwd("apply", relay.specs[1], "--yes")
        assert "Traceback" not in done.stderr, done.stderr
        now = relay.owned()
        assert now in owned, f"{pages} free page(s): the owned state is neither old nor new:\n{now}"
        if done.returncode == 0:
            successes += 1
            assert now == owned[1]
        else:
            successes = 0
            failures += 1
            assert done.returncode == 3, done.stdout + done.stderr
            lines = done.stderr.strip().splitlines()
            assert lines[-1].startswith("netfwd: error: ") and "No space left on device" in lines[-1], done.stderr
            assert len([line for line in lines if "error" in line]) == 1, done.stderr
            left = {f for f in relay.files() - before if f.endswith(".tmp") or "/.ruleset" in f}
            assert not left, f"temporary files left behind: {left}"
            report = relay.status()  # works on a full disk, and explains a cut-short change
            if relay.journal():
                assert report["interrupted"]
        relay.unfill()
        recovered(relay, 1, owned[1])
        pages += 1
    assert failures >= 3, "the disk was never full enough to fail"
