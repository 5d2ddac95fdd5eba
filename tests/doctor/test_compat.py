"""What cannot work on an old relay refuses before changing anything, naming what it found and the minimum;
and `netfwd doctor` reports the relay's versions against docs/compat.md's support matrix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from netfwd import owned
from netfwd.dialects import get_dialect
from netfwd.dialects.nft import requirements_problem
from netfwd.spec import load_spec

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("nft", "kernel", "problem"), [
    ("nftables v1.0.6 (Lester Gooch #5)", "6.1.0-18-amd64", None),
    ("nftables v0.9.1 (Headless Horseman)", "5.2.0", None),
    ("nftables v0.9.0 (Fearless Fosdick)", "5.4.0", "nft 0.9.0 is too old: the nft dialect needs nftables >= 0.9.1"),
    ("nftables v0.8.3 (Topsy)", "3.10.0-1160.el7.x86_64", "nft 0.8.3 is too old"),
    ("nftables v1.0.4 (Lester Gooch #3)", "4.18.0-425.el8.x86_64", "kernel 4.18.0-425.el8.x86_64 is too old: "
                                                                   "inet-family NAT needs Linux >= 5.2"),
])
def test_nft_minimums_name_what_was_found(nft, kernel, problem):
    found = requirements_problem(nft, kernel)
    assert found == problem if problem is None else found.startswith(problem)


@pytest.mark.netns
def test_nft_script_refuses_before_any_change_on_centos7(make_lab, centos7_userland, tmp_path):
    lab = make_lab(userland="centos7")
    script = get_dialect("nft").render(load_spec(REPO / "rules/example.yaml"))
    done = lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "bash", "-s"], input=script, check=False)
    assert done.returncode == 3 and "nft not found: install nftables >= 0.9.1" in done.stderr
    assert not (tmp_path / owned.sysctl_file("text-001")).exists()  # rules/example.yaml's cluster
    # an nft that is there but too old (CentOS 7's package is 0.8; none to run here: a stand-in that says so)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "nft").write_text("#!/bin/sh\necho 'nftables v0.8.3 (Topsy)'\n")
    (fake / "nft").chmod(0o755)
    done = lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", f"PATH={fake}:/usr/sbin:/usr/bin", "bash", "-s"],
                   input=script, check=False)
    assert done.returncode == 3, done.stderr
    assert "nft 0.8.3 is too old: the nft dialect needs nftables >= 0.9.1" in done.stderr
    assert not (tmp_path / owned.sysctl_file("text-001")).exists()  # rules/example.yaml's cluster


@pytest.mark.netns
def test_nft_backend_refuses_on_centos7(make_lab, centos7_userland, tmp_path):
    lab = make_lab(userland="centos7")
    (tmp_path / "root").mkdir()
    done = subprocess.run(lab.exec_argv("relay", [
        "env", "-C", str(REPO), f"NETFWD_ROOT={tmp_path / 'root'}", f"NETFWD_STATE_DIR={tmp_path / 'state'}",
        sys.executable, "-m", "netfwd", "apply", "rules/example.yaml", "--backend", "nft", "--yes"]),
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "nft not found: install nftables >= 0.9.1" in done.stderr
    assert not (tmp_path / "root" / owned.sysctl_file("text-001")).exists()  # rules/example.yaml's cluster


def test_matrix_of_a_centos7_relay():
    from netfwd.compat import Versions, evaluate

    support = evaluate(Versions("1.4.21", "legacy", None, "0.6.3", "3.10.0-1160.el7.x86_64"))
    assert support.usable == ("iptables", "iptables-restore", "iptables-legacy", "libiptc", "firewalld")
    assert dict(support.refused)["nft"].startswith("nft is not installed (needs nftables >= 0.9.1)")
    assert support.untested == ()
    old = evaluate(Versions("1.4.3", "legacy", "0.8.3", "0.4.4", "2.6.32"))
    assert old.usable == ("firewalld",) and "has no -C" in dict(old.refused)["iptables, iptables-restore"]
    assert old.untested == ("firewalld 0.4.4",)


@pytest.mark.netns
def test_doctor_reports_the_centos7_relay_against_the_matrix(make_lab, centos7_userland):
    lab = make_lab(userland="centos7", firewalld=True)
    done = lab.relay_exec_fw(["env", "-C", str(REPO), sys.executable, "-m", "netfwd", "doctor",
                              "--only", "compat", "--output", "json"], check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["checks"][0]
    assert result["name"] == "compat" and result["status"] == "ok"
    assert result["summary"].startswith("iptables 1.4.21 (legacy), no nft, firewalld 0.6.3, Linux ")
    assert "can run iptables, iptables-restore, iptables-legacy, libiptc, firewalld" in result["summary"]
