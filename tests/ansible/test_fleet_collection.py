"""The netfwd.relay collection as users get it: it builds, installs, and ansible-doc renders every
module and the role (the docs come from the modules' DOCUMENTATION/EXAMPLES/RETURN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MODULES = ("forward", "confirm", "rollback", "probe", "facts")


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory):
    from netfwd.lab.fleet import install_collection

    scratch = tmp_path_factory.mktemp("collection")
    collections = install_collection(scratch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_HOME=str(scratch / "home"))
    return env


def ansible_doc(env, *args: str) -> dict:
    tool = Path(sys.executable).parent / "ansible-doc"
    done = subprocess.run([str(tool), "--json", *args], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_module_renders_with_options_examples_and_returns(doc_env):
    docs = ansible_doc(doc_env, *(f"netfwd.relay.{m}" for m in MODULES))
    assert set(docs) == {f"netfwd.relay.{m}" for m in MODULES}
    for name, entry in docs.items():
        assert entry["doc"]["short_description"] and entry["doc"]["options"], name
        assert "netfwd.relay." in entry["examples"] and entry["return"], name
    for name in ("forward", "confirm", "rollback", "facts"):  # a relay may hold several clusters
        assert docs[f"netfwd.relay.{name}"]["doc"]["options"]["cluster"]["type"] == "str", name
    forward = docs["netfwd.relay.forward"]
    assert {"spec", "state", "backend", "confirm_timeout", "state_dir", "root"} <= set(forward["doc"]["options"])
    assert {"changed", "plan", "backend", "forwards", "pending_confirm"} <= set(forward["return"])
    assert forward["doc"]["attributes"]["check_mode"]["support"] == "full"
    assert forward["doc"]["attributes"]["diff_mode"]["support"] == "full"
    probe = docs["netfwd.relay.probe"]
    assert {"via", "target", "server_name", "ca", "timeout", "netns", "fail_when_unreachable"} <= set(probe["doc"]["options"])
    assert {"reachable", "codes"} <= set(probe["return"])


def test_the_rollout_role_renders_its_argument_spec(doc_env):
    docs = ansible_doc(doc_env, "-t", "role", "netfwd.relay.rollout")
    options = docs["netfwd.relay.rollout"]["entry_points"]["main"]["options"]
    assert options["netfwd_spec"]["required"] is True
    assert {"netfwd_confirm_timeout", "netfwd_vantage", "netfwd_install", "netfwd_install_wheel"} <= set(options)
