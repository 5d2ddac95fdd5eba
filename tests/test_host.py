"""netfwd.host: the one way onto the host (namespace names, entering, exec prefix, start times)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from netfwd import host
from netfwd.errors import InputError


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "x y", "a;b", "$(id)", "-n", "a" * 65, "é", ".hidden"])
def test_one_rule_refuses_what_cannot_name_a_namespace(name):
    with pytest.raises(InputError, match="not a network namespace name"):
        host.check_netns(name)


@pytest.mark.parametrize("name", ["relay", "nf-ab12-relay", "a.b_c-1", "a" * 64])
def test_names_ip_netns_makes_are_accepted_and_prefixed(name):
    assert host.exec_prefix(name) == ["ip", "netns", "exec", name]
    assert host.exec_prefix(None) == []


def test_the_same_rule_guards_every_command_that_takes_netns(tmp_path):
    """doctor, probe and whitelist all refuse a hostile --netns the same way (exit 2, naming it)."""
    spec = tmp_path / "s.yaml"
    spec.write_text("version: 1\ncluster: c\nforwards:\n  - {name: a, listen: {port: 1}, to: {address: 10.0.0.1, port: 2}}\n")
    for argv in (["doctor", str(spec), "--netns", "../x"], ["probe", "--via", "127.0.0.1:1", "--target",
                                                            "127.0.0.1:2", "--netns", "../x"],
                 ["whitelist", "verify", "--regions", "cn-hangzhou", "--against", "live", "--netns", "../x"]):
        done = subprocess.run([sys.executable, "-m", "netfwd", *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "'../x' is not a network namespace name" in done.stderr, (argv, done.stderr)


def test_start_time_names_one_live_process_and_not_a_zombie():
    me = host.proc_start(os.getpid())
    assert isinstance(me, int) and me == host.proc_start(os.getpid())
    child = subprocess.Popen(["true"])
    while True:  # finished but not reaped: a zombie
        with open(f"/proc/{child.pid}/stat") as stat:
            if stat.read().rpartition(")")[2].split()[0] == "Z":
                break
    assert host.proc_start(child.pid) is None
    child.wait()
    assert host.proc_start(child.pid) is None


def test_child_env_puts_this_netfwd_first():
    env = host.child_env(EXTRA="1")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == host.PACKAGE_ROOT and env["EXTRA"] == "1"
    assert os.path.isfile(os.path.join(host.PACKAGE_ROOT, "netfwd", "host.py"))
