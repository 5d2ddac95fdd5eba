"""`netfwd doctor --cluster` in the lab: the probe's evidence split into the three apiserver checks.

Doctor runs in the client namespace (the probe dials from where doctor runs) against the
API-server stand-in behind the relay; only the lab's addresses are ever dialled.
"""

from __future__ import annotations

import json
import sys

import pytest

from netfwd.dialects import get_dialect
from netfwd.spec import parse_spec

pytestmark = pytest.mark.netns
CHECKS = "apiserver-reachable,apiserver-version,apiserver-sans"


def statuses(lab, spec_file) -> dict[str, str]:
    done = lab.run("client", [sys.executable, "-m", "netfwd", "doctor", str(spec_file), "--cluster", "--only",
                              CHECKS, "--ca", str(lab.ca_file), "--timeout", "1", "-o", "json"], check=False)
    data = json.loads(done.stdout)
    assert done.returncode == data["exit_code"]
    return {c["name"]: c["status"] for c in data["checks"]}


def test_apiserver_checks_through_the_relay(lab, tmp_path):
    a = lab.addrs
    text = f"""version: 1
cluster: lab-doctor
relay: {{os: linux, interface: {a.relay_outside_if}, address: {a.relay_outside}}}
forwards:
  - name: apiserver
    listen: {{port: 16443}}
    to: {{address: {a.onprem}, port: 6443}}
"""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(text)
    script = get_dialect("iptables-restore").render(parse_spec(text, "spec.yaml"))
    lab.run("relay", ["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_PERSIST=no", "bash", "-s"], input=script)

    pid = lab.start_server("onprem", 6443, kind="apiserver")  # kubeadm-like SANs: not the relay
    assert statuses(lab, spec_file) == {"apiserver-reachable": "ok", "apiserver-version": "ok",
                                        "apiserver-sans": "error"}
    lab.stop_server(pid)

    pid = lab.start_server("onprem", 6443, kind="apiserver", extra_sans=[a.relay_outside], git_version="v1.15.3")
    assert statuses(lab, spec_file) == {"apiserver-reachable": "ok", "apiserver-version": "error",
                                        "apiserver-sans": "ok"}
    lab.stop_server(pid)

    pid = lab.start_server("onprem", 6443, kind="apiserver", extra_sans=[a.relay_outside])
    assert set(statuses(lab, spec_file).values()) == {"ok"}
    lab.stop_server(pid)

    got = statuses(lab, spec_file)  # nothing listens on-prem any more
    assert got["apiserver-reachable"] == "error" and got["apiserver-sans"] == "warning"
