"""A local unprivileged user against netfwd, which runs as root: plants, swaps and tampered snapshots.

`nobody` (a real setuid child) plants a symlink to a victim file at every name netfwd writes - its
records, lock, log, snapshot and cache directories, and the temp names of the old writer
(`.NAME.PID.tmp`, for the next few hundred PIDs) - in a directory it can write. Every command is
refused with exit 3 naming that directory and the fix, nothing outside is written, and the
namespace's firewall is untouched. A snapshot changed after apply is refused by the commit-confirm
timer and by `netfwd rollback`, and `status` says why.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from netfwd import bootunit, owned
from netfwd.dialects.nft import NFT_CONFS
from netfwd.engine.state import cluster_dir
from netfwd.lab.state import NS_PREFIX
from tests.attacker import as_nobody, nobody
from tests.dialects.test_argv import make_stub_bin, run_script

CLUSTER = "lsec"
SYSCTL_FILE, NFT_FILE, TABLE = owned.sysctl_file(CLUSTER), owned.nft_file(CLUSTER), owned.nft_table(CLUSTER)
XT_FILE, UNIT_FILE = owned.xtables_file(CLUSTER), bootunit.unit_file(CLUSTER)

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="needs root and nft")]

REPO = Path(__file__).resolve().parent.parent
SPEC = """version: 1
cluster: lsec
forwards:
  - name: api
    listen: {{port: 16443}}
    to: {{address: 10.77.0.2, port: {port}}}
    allow: {{cidrs: [203.0.113.0/24]}}
"""
STATE_NAMES = ["lock", "state.json", "applied.txt", "journal.json", "timer.log"]
STATE_DIRS = ["snapshots", "cache", "netns"]


class Scene:
    """A root-owned 0711 base in /tmp (nobody can pass, not write), a victim file and directory,
    and a network namespace of our own for netfwd to act in."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="netfwd-lsec-", dir="/tmp"))
        os.chmod(self.base, 0o711)
        self.victim, self.victim_dir = self.base / "victim", self.base / "victim-dir"
        self.victim.write_text("precious\n")
        os.chmod(self.victim, 0o666)
        self.victim_dir.mkdir(mode=0o777)
        os.chmod(self.victim_dir, 0o777)
        self.ns = f"nf-atk-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        self.specs = []
        for port in (6443, 6444):
            path = self.base / f"spec-{port}.yaml"
            path.write_text(SPEC.format(port=port))
            self.specs.append(str(path))

    def close(self) -> None:
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        shutil.rmtree(self.base)

    def writable(self, name: str, mode: int = 0o777) -> Path:
        directory = self.base / name
        directory.mkdir(parents=True)
        os.chmod(directory, mode)
        return directory

    def plant(self, directory: Path, names: list[str], dirs: list[str] = ()) -> None:
        """As nobody: a symlink to the victim at each name (and its predicted temp names)."""
        last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
        temps = [f".{name}.{pid}.tmp" for name in names for pid in range(last + 1, last + 300)]

        def plant() -> None:
            for name in [*names, *temps]:
                os.symlink(self.victim, directory / name)
            for name in dirs:
                os.symlink(self.victim_dir, directory / name)
        as_nobody(plant)

    def netfwd(self, *args: str, state: Path, root: Path, expect: int = 0) -> subprocess.CompletedProcess:
        env = {**os.environ, "NETFWD_ROOT": str(root), "NETFWD_STATE_DIR": str(state), "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-m", "netfwd", *args, "--netns", self.ns, "--backend", "nft"],
                              capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
        assert done.returncode == expect, f"netfwd {' '.join(args)} -> {done.returncode}\n{done.stdout}{done.stderr}"
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def owned(self) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.ns, "nft", "list", "table", *TABLE.split()],
                              capture_output=True, text=True, timeout=30)
        return done.stdout if done.returncode == 0 else ""

    def untouched(self) -> None:
        assert self.victim.read_text() == "precious\n", "root wrote through a planted symlink"
        assert os.listdir(self.victim_dir) == [], "root wrote into a planted directory link"


@pytest.fixture
def scene():
    made = Scene()
    try:
        yield made
    finally:
        made.close()


def commands(scene: Scene) -> list[list[str]]:
    first, second = scene.specs
    return [["plan", first], ["apply", first, "--yes"], ["apply", second, "--yes", "--confirm-timeout", "5"],
            ["confirm"], ["rollback"], ["remove"], ["status"]]


def refused_everywhere(scene: Scene, state: Path, root: Path, named: Path, why: str) -> None:
    for argv in commands(scene):
        done = scene.netfwd(*argv, state=state, root=root, expect=3)
        line = done.stderr.strip()
        assert "\n" not in line and f"refusing {named}" in line and why in line and "fix:" in line, (argv, line)
        scene.untouched()
    assert scene.owned() == "", "the firewall changed although the directory was refused"


def test_state_directory_others_can_write_is_refused_by_every_command(scene):
    """The scenario of a scratch state directory with mode 0777 in which a user planted `lock -> victim`."""
    shared = scene.writable("shared")
    scene.plant(shared, STATE_NAMES, STATE_DIRS)
    root = scene.writable("root", 0o755)
    refused_everywhere(scene, shared, root, shared, "writable by group and others")
    refused_everywhere(scene, shared / "netfwd", root, shared, "writable by group and others")


def test_state_directory_owned_by_another_user_is_refused(scene):
    """In a sticky /tmp-like directory, nobody made the state directory first (mode 0755, theirs)."""
    sticky = scene.writable("sticky", 0o1777)
    state = sticky / "state"
    as_nobody(lambda: os.mkdir(state, 0o755))
    scene.plant(state, STATE_NAMES, STATE_DIRS)
    root = scene.writable("root", 0o755)
    refused_everywhere(scene, state, root, state, f"owned by uid {nobody()[0]}")


def test_root_targets_others_can_write_are_refused_before_the_firewall_changes(scene):
    root = scene.writable("root", 0o755)
    sysctl_dir = root / SYSCTL_FILE.rsplit("/", 1)[0]
    sysctl_dir.mkdir(parents=True)
    os.chmod(sysctl_dir, 0o777)
    scene.plant(sysctl_dir, [SYSCTL_FILE.rsplit("/", 1)[1]])
    state = scene.base / "state"
    done = scene.netfwd("apply", scene.specs[0], "--yes", state=state, root=root, expect=3)
    assert f"refusing {sysctl_dir}" in done.stderr and "chmod go-w" in done.stderr, done.stderr
    scene.untouched()
    assert scene.owned() == ""
    os.chmod(sysctl_dir, 0o755)  # fixed as the message says: the planted link itself is refused next
    done = scene.netfwd("apply", scene.specs[0], "--yes", state=state, root=root, expect=3)
    assert "a symlink where netfwd keeps its own file" in done.stderr, done.stderr
    done = scene.netfwd("remove", "--cluster", CLUSTER, state=state, root=root, expect=3)
    assert "a symlink where netfwd keeps its own file" in done.stderr, done.stderr
    scene.untouched()
    assert scene.owned() == ""
    (sysctl_dir / SYSCTL_FILE.rsplit("/", 1)[1]).unlink()
    scene.netfwd("apply", scene.specs[0], "--yes", state=state, root=root)
    assert (root / SYSCTL_FILE).is_file() and "6443" in scene.owned()
    scene.netfwd("remove", state=state, root=root)
    # a whole --root others can write is refused by every command
    shared_root = scene.writable("shared-root")
    scene.plant(shared_root, ["etc"])
    refused_everywhere(scene, scene.base / "state2", shared_root, shared_root, "writable by group and others")


def test_lab_directory_others_can_write_is_refused(scene):
    shared = scene.writable("labs")
    scene.plant(shared, ["lsec.json"], ["lsec"])
    env = {**os.environ, "NETFWD_LAB_DIR": str(shared), "PYTHONPATH": str(REPO)}
    try:
        for argv in (["up", "--name", "lsec", "--no-apiserver"], ["down", "--name", "lsec"], ["status"]):
            done = subprocess.run([sys.executable, "-m", "netfwd", "lab", *argv], capture_output=True, text=True,
                                  timeout=120, env=env, cwd=REPO)
            assert done.returncode == 3, (argv, done.stdout, done.stderr)
            assert f"refusing {shared}" in done.stderr and "Traceback" not in done.stderr, done.stderr
            scene.untouched()
    finally:
        namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        made = [line.split()[0] for line in namespaces.splitlines() if line.startswith(f"{NS_PREFIX}lsec-")]
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False)
        assert not made, f"lab up built {made} in a refused lab directory"


def test_tampered_snapshot_is_refused_by_the_timer_and_by_rollback(scene):
    root, state = scene.writable("root", 0o755), scene.base / "var" / "netfwd"
    first, second = scene.specs
    old = os.umask(0)
    try:
        scene.netfwd("apply", first, "--yes", state=state, root=root)
    finally:
        os.umask(old)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    records = cluster_dir(state, CLUSTER)  # the cluster's own records
    assert stat.S_IMODE(records.stat().st_mode) == 0o700
    assert stat.S_IMODE((records / "state.json").stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc").stat().st_mode) == 0o755
    assert (root / NFT_FILE).exists()
    scene.netfwd("apply", second, "--yes", "--confirm-timeout", "2", state=state, root=root)
    assert "6444" in scene.owned()
    record = json.loads((records / "state.json").read_text())
    snapshot = records / record["rollback"]["snapshot"]
    honest = snapshot.read_text()
    assert "10.77.0.2" in honest and "6443" in honest
    snapshot.write_text(honest.replace("203.0.113.0/24", "0.0.0.0/0"))  # open the whitelist to everyone

    report = json.loads(scene.netfwd("status", "--output", "json", state=state, root=root).stdout)
    assert "refusing to restore" in report["rollback"]["problem"]
    text = scene.netfwd("status", state=state, root=root).stdout
    assert "NOT RESTORABLE" in text, text

    log = records / "timer.log"
    deadline = time.monotonic() + 30
    while "FAILED" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, "the timer did not act"
        time.sleep(0.2)
    assert "refusing to restore" in log.read_text()
    assert "6444" in scene.owned() and "0.0.0.0/0" not in scene.owned()

    done = scene.netfwd("rollback", state=state, root=root, expect=3)
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"netfwd: error: refusing to restore {snapshot}"), done.stderr
    assert "6444" in scene.owned() and "0.0.0.0/0" not in scene.owned()
    scene.netfwd("confirm", state=state, root=root)  # keeping the change is still possible
    assert "pending" not in scene.netfwd("status", state=state, root=root).stdout

    snapshot.write_text(honest)  # the genuine snapshot is restored as before
    scene.netfwd("rollback", state=state, root=root)
    assert "6443" in scene.owned() and "6444" not in scene.owned()
    scene.netfwd("remove", state=state, root=root)
    assert scene.owned() == ""


# -- the rendered scripts ---------------------------------------------------------------------------

SCRIPT_FILES = {  # what the scripts write under $ROOT, and the fixed temp names they once used
    "sysctl": [SYSCTL_FILE, f"{SYSCTL_FILE}.tmp"],
    "iptables": [XT_FILE, UNIT_FILE],
    "nft": [NFT_FILE, UNIT_FILE, *NFT_CONFS, *(f"{conf}.netfwd" for conf in NFT_CONFS)],
}
WRITES = {"iptables": ["sysctl", "iptables"], "iptables-restore": ["sysctl", "iptables"],
          "nft": ["sysctl", "nft"], "firewalld": ["sysctl"]}


@pytest.fixture(scope="module")
def example_spec():
    from netfwd.spec import open_spec

    return open_spec(str(REPO / "rules" / "example.yaml")).spec


@pytest.fixture(scope="module")
def stub_bin(tmp_path_factory) -> Path:
    """tests/dialects/test_argv.py's PATH of recording stubs."""
    return make_stub_bin(tmp_path_factory.mktemp("stub-bin"))


@pytest.mark.parametrize("dialect_name", ["iptables", "iptables-restore", "nft", "firewalld"])
def test_rendered_scripts_refuse_directories_others_can_write(dialect_name, example_spec, scene, stub_bin, tmp_path):
    """Each apply and remove script, run by bash (firewall tools stubbed, in an empty network
    namespace) with NETFWD_ROOT where nobody planted links at every file it writes: exit 3 before
    any command runs, nothing written through the links; then the same with the links alone."""
    from netfwd.dialects import get_dialect

    dialect = get_dialect(dialect_name)
    scripts = {"apply": dialect.render(example_spec), "remove": dialect.render_remove(example_spec)}
    ours = {SYSCTL_FILE: owned.sysctl_file(example_spec.cluster), NFT_FILE: owned.nft_file(example_spec.cluster),
            XT_FILE: owned.xtables_file(example_spec.cluster), UNIT_FILE: bootunit.unit_file(example_spec.cluster)}
    files = [ours.get(path, path) for kind in WRITES[dialect_name] for path in SCRIPT_FILES[kind]]
    shared = scene.writable("shared-root")  # a whole ROOT anyone can write
    scene.plant(shared, ["etc"])
    root = scene.writable("root", 0o755)  # a trusted ROOT whose target directories anyone can write
    folders = sorted({str(Path(path).parent) for path in files})
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        os.chmod(root / folder, 0o777 if folder != "etc" else 0o755)
    for folder in folders:
        names = [Path(path).name for path in files if str(Path(path).parent) == folder]
        if folder == "etc":  # a trusted directory: only root could have planted these, earlier
            for name in names:
                os.symlink(scene.victim, root / folder / name)
        else:
            scene.plant(root / folder, names)
    for what, text in scripts.items():
        for case, where in (("shared root", shared), ("shared target directories", root)):
            run = run_script(text, stub_bin, tmp_path / what, firewalld=dialect_name == "firewalld",
                             NETFWD_ROOT=str(where))
            assert run.status == 3, (what, case, run.stderr)
            assert "netfwd: refusing" in run.stderr and "fix:" in run.stderr, (what, case, run.stderr)
            assert run.calls == [], f"{what} ({case}) ran {run.calls[0]['argv']} before refusing"
            scene.untouched()
    for folder in folders:
        os.chmod(root / folder, 0o755)  # fixed as told: the links themselves are refused next
    for what, text in scripts.items():
        run = run_script(text, stub_bin, tmp_path / what, firewalld=dialect_name == "firewalld",
                         NETFWD_ROOT=str(root))
        assert run.status == 3 and "a symlink or not a regular file" in run.stderr, (what, run.stderr)
        assert run.calls == []
        scene.untouched()
    for path in files:  # links gone: the same scripts run
        (root / path).unlink()
    for what, text in scripts.items():
        run = run_script(text, stub_bin, tmp_path / what, firewalld=dialect_name == "firewalld",
                         NETFWD_ROOT=str(root))
        assert run.status == 0, (what, run.stderr)
    scene.untouched()


def test_scripts_and_engine_persist_the_same_iptables_files(tmp_path):
    from netfwd.backends import Context
    from netfwd.backends.iptables import make
    from netfwd.dialects.iptables import boot_files

    backend = make(Context(root=tmp_path, workdir=tmp_path, cluster=CLUSTER))
    assert tuple(str(p.relative_to(tmp_path)) for p in backend.persisted_files()) == boot_files(CLUSTER)
