"""Clear errors from the lab: not root, bad names, taken names and ports, unknown nodes and options."""

from __future__ import annotations

import pytest

from netfwd.cli import main
from netfwd.errors import EnvironmentProblem, InputError
from netfwd.lab import Lab
from netfwd.lab import netns


def run_cli(capsys, *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as done:
        main(list(args))
    return done.value.code, capsys.readouterr().err


def test_not_root_is_an_environment_problem(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(EnvironmentProblem, match="needs root"):
        netns.check_environment()
    code, err = run_cli(capsys, "lab", "up")
    assert code == 3 and err.count("\n") == 1 and "needs root" in err and "Traceback" not in err


def test_missing_iproute2_is_named(monkeypatch):
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr("shutil.which", lambda tool: None)
    with pytest.raises(EnvironmentProblem, match="iproute2"):
        netns.check_environment()


def test_cli_bad_name_and_unknown_lab_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NETFWD_LAB_DIR", str(tmp_path))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    code, err = run_cli(capsys, "lab", "up", "--name", "Bad!")
    assert code == 2 and "'Bad!' is not a lab name" in err and err.count("\n") == 1
    code, err = run_cli(capsys, "lab", "down", "--name", "nope")
    assert code == 2 and "no lab named 'nope'" in err
    code, err = run_cli(capsys, "lab", "exec", "client", "--", "true")
    assert code == 2 and "no lab is up" in err
    code, err = run_cli(capsys, "lab", "demo", "--spec", str(tmp_path / "missing.yaml"))
    assert code == 2 and "missing.yaml: no such file" in err
    code, err = run_cli(capsys, "lab", "up", "--fleet", "2", "--router", "--userland", "centos7")
    assert code == 2 and "--router, --userland: only for a one-relay lab" in err and err.count("\n") == 1
    code, err = run_cli(capsys, "lab", "up", "--fleet", "2", "--firewalld-relay", "relay3")
    assert code == 2 and "--firewalld-relay: 'relay3' is not a relay of this fleet (relay1..relay2)" in err
    code, err = run_cli(capsys, "lab", "up", "--firewalld-relay", "relay1")
    assert code == 2 and "--firewalld-relay: only with --fleet" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []  # refused before anything was claimed


@pytest.mark.netns
def test_a_taken_name_is_refused_and_left_alone(lab):
    with pytest.raises(InputError, match="already exists"):
        Lab.up(name=lab.name)
    assert lab.run("relay", ["true"]).returncode == 0  # the existing lab still works


@pytest.mark.netns
def test_a_server_that_cannot_start_says_why_and_leaves_nothing(lab):
    lab.start_server("relay", 7000)
    with pytest.raises(EnvironmentProblem, match="did not start.*Address already in use"):
        lab.start_server("relay", 7000)
    assert len(lab.processes()) == 1
    with pytest.raises(ValueError, match="unknown server kind"):
        lab.start_server("relay", 7001, kind="ftp")
    with pytest.raises(TypeError, match="colour"):
        lab.start_server("relay", 7001, colour="red")
    with pytest.raises(ValueError, match="no node 'router'"):
        lab.run("router", ["true"])


@pytest.mark.netns
def test_a_failing_command_reports_its_stderr(lab):
    from netfwd.lab import LabCommandError

    with pytest.raises(LabCommandError, match="nosuchif0.* does not exist"):
        lab.run("relay", ["ip", "link", "show", "nosuchif0"])
    assert lab.run("relay", ["ip", "link", "show", "nosuchif0"], check=False).returncode != 0


def test_a_torn_record_is_reported_and_down_still_clears_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NETFWD_LAB_DIR", str(tmp_path))
    (tmp_path / "torn1.json").write_text("")  # killed between claiming the name and writing the record
    with pytest.raises(EnvironmentProblem, match="unreadable.*lab down --name torn1"):
        Lab.attach("torn1")
    code, err = run_cli(capsys, "lab", "status")
    assert code == 0 and "lab torn1" in err
    code, _ = run_cli(capsys, "lab", "down", "--name", "torn1")
    assert code == 0 and list(tmp_path.iterdir()) == []


def test_centos7_userland_without_a_checkout_is_one_line(capsys, tmp_path, monkeypatch):
    """Installed from a wheel, netfwd has no build script or vendor/ tarballs: exit 3, naming where it looked,
    before any lab exists (tests/test_installed_wheel.py runs the real installed case)."""
    monkeypatch.setenv("NETFWD_LAB_DIR", str(tmp_path / "labs"))
    monkeypatch.setattr("netfwd.lab.userland.REPO", tmp_path / "site-packages")
    code, err = run_cli(capsys, "lab", "up", "--userland", "centos7")
    assert code == 3 and err.count("\n") == 1 and "Traceback" not in err
    assert "needs a netfwd source checkout" in err and f"looked in {tmp_path / 'site-packages'}" in err
    assert "scripts/build-centos7-userland" in err and "vendor/iptables-1.4.21.tar.gz" in err
    assert not (tmp_path / "labs").exists() or list((tmp_path / "labs").iterdir()) == []
