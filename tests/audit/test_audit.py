"""`netfwd audit policy|check|patch` on the vendor guide's manifest, a stock kubeadm manifest and a
hand-edited one: the patch parses, passes the check, only adds lines, and a second patch changes nothing."""

from __future__ import annotations

import difflib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from netfwd.audit.manifest import Settings, check, read_manifest
from netfwd.audit.patch import patch_text
from netfwd.audit.policy import api_version, check_policy, parse_version, policy_text, served
from netfwd.errors import InputError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
CLUSTER = "c0a1b2c3d4e5f60718293a4b5c6d7e8f9"
SETTINGS = Settings(cluster_id=CLUSTER)
BEFORE = ("vendor-guide-before.yaml", "kubeadm-stock.yaml", "commented-indented.yaml")


def failing(text: str, settings: Settings = SETTINGS) -> list[str]:
    return [item.name for item in check(read_manifest(text), settings) if not item.ok]


def only_insertions(old: str, new: str) -> list[str]:
    """The lines `new` adds to `old`; fails if anything was changed, moved or removed."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    added = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        assert tag in ("equal", "insert"), f"{tag}: {a[i1:i2]} -> {b[j1:j2]}"
        if tag == "insert":
            added += b[j1:j2]
    return added


# -- policy -----------------------------------------------------------------------------------------

def test_policy_api_version_follows_the_cluster():
    assert api_version(None) == "audit.k8s.io/v1"
    assert api_version((1, 28)) == api_version((1, 12)) == "audit.k8s.io/v1"
    assert api_version((1, 11)) == api_version((1, 8)) == "audit.k8s.io/v1beta1"
    with pytest.raises(InputError):
        api_version((1, 7))
    assert parse_version("v1.20.4-aliyun.1") == (1, 20) and parse_version("1.24") == (1, 24)
    for bad in ("banana", "2.1", "v1", ""):
        with pytest.raises(InputError):
            parse_version(bad)
    assert not served("audit.k8s.io/v1beta1", (1, 24)) and served("audit.k8s.io/v1beta1", (1, 23))


def test_policy_is_the_guides_with_a_served_api_version():
    doc = yaml.safe_load(policy_text((1, 28)))
    assert doc["apiVersion"] == "audit.k8s.io/v1" and doc["kind"] == "Policy"
    assert doc["omitStages"] == ["RequestReceived"]
    assert len(doc["rules"]) == 12 and doc["rules"][-1] == {"level": "Metadata"}
    assert doc["rules"][0] == {"level": "None", "users": ["system:kube-proxy"], "verbs": ["watch"],
                               "resources": [{"group": "", "resources": ["endpoints", "services"]}]}
    assert len(doc["rules"][-2]["resources"]) == 14  # the guide's API groups
    assert yaml.safe_load(policy_text((1, 10)))["apiVersion"] == "audit.k8s.io/v1beta1"
    guide = policy_text((1, 10)).replace("audit.k8s.io/v1beta1", "audit.k8s.io/v1beta1", 1)
    assert [i.ok for i in check_policy(guide, "p.yaml", (1, 28))] == [False, True]  # v1beta1 on 1.28: refused
    assert all(i.ok for i in check_policy(policy_text((1, 28)), "p.yaml", (1, 28)))


# -- check ------------------------------------------------------------------------------------------

def test_the_guides_manifest_is_complete():
    text = (FIXTURES / "vendor-guide.yaml").read_text()
    assert failing(text) == []
    assert failing(text, Settings()) == []  # the cluster id is found in the env entries


def test_stock_kubeadm_misses_every_piece():
    names = failing((FIXTURES / "kubeadm-stock.yaml").read_text())
    assert names == ["flag --audit-log-path", "flag --audit-log-maxage", "flag --audit-log-maxbackup",
                     "flag --audit-log-maxsize", "flag --audit-policy-file", "mount log directory",
                     "mount audit policy", f"env aliyun_logs_audit-{CLUSTER}", f"env aliyun_logs_audit-{CLUSTER}_tags",
                     f"env aliyun_logs_audit-{CLUSTER}_product", f"env aliyun_logs_audit-{CLUSTER}_jsonfile"]
    assert failing((FIXTURES / "kubeadm-stock.yaml").read_text(), Settings())[-1] == "env log agent"


@pytest.mark.parametrize("edit, broken", [
    (("value: \"true\"", "value: true"), f"env aliyun_logs_audit-{CLUSTER}_jsonfile"),  # a bool: pod refused
    (("--audit-log-maxage=30", "--audit-log-maxage=thirty"), "flag --audit-log-maxage"),
    (("      name: audit-policy\n      readOnly: true", "      name: audit-policy"), "mount audit policy"),
    (("      path: /var/log/kubernetes\n      type: DirectoryOrCreate\n    name: k8s-audit",
      "      medium: Memory\n    name: k8s-audit"), "mount log directory"),
    (("--audit-log-path=/var/log/kubernetes/kubernetes.audit", "--audit-log-path=/var/log/audit/k.log"),
     "mount log directory"),
])
def test_each_broken_piece_is_a_finding(edit, broken):
    text = (FIXTURES / "vendor-guide.yaml").read_text()
    old, new = edit
    assert old in text
    changed = text.replace(old, new, 1).replace("    - hostPath:\n      medium", "    - emptyDir:\n      medium")
    if "medium: Memory" in changed:
        changed = changed.replace("  - hostPath:\n      medium: Memory", "  - emptyDir:\n      medium: Memory")
    assert broken in failing(changed)


def test_bad_manifests_are_input_errors():
    for text, what in (("kind: Deployment\n", "not Pod"), (": [\n", "not valid YAML"),
                       ("kind: Pod\nspec: {containers: [{name: etcd, command: [etcd]}]}\n", "no kube-apiserver"),
                       ("kind: Pod\n---\nkind: Pod\n", "one YAML document")):
        with pytest.raises(InputError) as problem:
            read_manifest(text, "m.yaml")
        assert what in str(problem.value) and "m.yaml" in str(problem.value)


# -- patch ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", BEFORE)
def test_patch_adds_only_what_is_missing_and_is_idempotent(name):
    original = (FIXTURES / name).read_text()
    result = patch_text(original, SETTINGS, name)
    assert result.changed and result.remaining == []
    yaml.safe_load(result.text)  # parses
    assert failing(result.text) == []  # passes the check
    added = only_insertions(original, result.text)  # every other line, comment and the order kept
    flags = 5 - sum("--audit-log-maxage" in line for line in original.splitlines())
    env_key = 0 if "env:" in original else 1
    assert len(added) == flags + env_key + 4 * 2 + 5 + 2 * 4  # flags, env, mounts, volumes
    again = patch_text(result.text, SETTINGS, name)
    assert not again.changed and again.text == result.text


def test_patched_guide_manifest_means_what_the_guide_shows():
    result = patch_text((FIXTURES / "vendor-guide-before.yaml").read_text(), SETTINGS)
    patched = yaml.safe_load(result.text)
    guide = yaml.safe_load((FIXTURES / "vendor-guide.yaml").read_text())
    for doc in (patched, guide):
        container = doc["spec"]["containers"][0]
        container["command"] = sorted(container["command"])
    assert patched == guide


def test_patch_keeps_existing_values_and_an_already_complete_manifest():
    text = (FIXTURES / "commented-indented.yaml").read_text()
    result = patch_text(text, SETTINGS)
    assert "--audit-log-maxage=7   # our own retention: must be kept" in result.text
    assert "--audit-log-maxage=30" not in result.text
    guide = (FIXTURES / "vendor-guide.yaml").read_text()
    assert patch_text(guide, SETTINGS).text == guide
    other = patch_text(guide, Settings(cluster_id="second-cluster"))  # a second cluster id: its entries only
    added = "".join(only_insertions(guide, other.text))
    assert len(added.splitlines()) == 8 and added.count("name: aliyun_logs_audit-second-cluster") == 4


def test_patch_crlf_and_custom_paths():
    original = (FIXTURES / "kubeadm-stock.yaml").read_text().replace("\n", "\r\n")
    settings = Settings(cluster_id=CLUSTER, log_path="/data/audit logs/k.log", policy_file="/etc/k8s/policy.yaml")
    result = patch_text(original, settings)
    assert "\n" not in result.text.replace("\r\n", "")
    only_insertions(original, result.text)
    doc = yaml.safe_load(result.text)
    assert "--audit-log-path=/data/audit logs/k.log" in doc["spec"]["containers"][0]["command"]
    assert {"mountPath": "/data/audit logs", "name": "k8s-audit"} in doc["spec"]["containers"][0]["volumeMounts"]
    assert failing(result.text, settings) == []


def test_patch_adds_missing_lists_as_new_keys():
    text = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: kube-apiserver\nspec:\n  containers:\n"
            "  - name: kube-apiserver\n    image: k8s/apiserver:1.28\n    command:\n    - kube-apiserver\n"
            "    - --secure-port=6443  # the port\n  hostNetwork: true\n  securityContext:\n    seccompProfile:\n"
            "      type: RuntimeDefault\n")
    result = patch_text(text, SETTINGS)
    only_insertions(text, result.text)
    assert failing(result.text) == [] and not patch_text(result.text, SETTINGS).changed
    keys = [line.strip() for line in result.text.splitlines() if line.strip().endswith(":") and "-" not in line]
    assert keys.index("env:") < keys.index("volumeMounts:") < keys.index("volumes:")
    assert result.text.endswith("    name: audit-policy\n")  # volumes: after the pod spec's last key


def test_patch_refuses_what_it_cannot_do_without_rewriting():
    flow = (FIXTURES / "kubeadm-stock.yaml").read_text().replace(
        "  - command:\n    - kube-apiserver\n    - --advertise-address=192.168.10.5\n",
        "  - command: [kube-apiserver, --advertise-address=192.168.10.5]\n    args:\n    - --x=1\n")
    assert patch_text(flow, SETTINGS).changed  # flags go to args, which is a block list
    no_lists = "kind: Pod\nspec:\n  containers:\n  - name: kube-apiserver\n    command: [kube-apiserver]\n"
    with pytest.raises(InputError) as problem:
        patch_text(no_lists, SETTINGS, "m.yaml")
    assert "flow-style" in str(problem.value)
    with pytest.raises(InputError):
        patch_text(no_lists, Settings(), "m.yaml")  # no cluster id


# -- CLI --------------------------------------------------------------------------------------------

def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "netfwd", "audit", *args], capture_output=True, text=True, cwd=cwd)


def test_cli_policy_check_patch(tmp_path):
    done = cli("policy", "--k8s-version", "v1.28.3")
    assert done.returncode == 0 and done.stdout.startswith("apiVersion: audit.k8s.io/v1 ")
    done = cli("policy", "--k8s-version", "1.10")
    assert "v1beta1" in done.stdout and "1.16" in done.stderr
    assert cli("policy", "--k8s-version", "1.5").returncode == 2

    manifest = tmp_path / "kube-apiserver.yaml"
    original = (FIXTURES / "kubeadm-stock.yaml").read_text()
    manifest.write_text(original)
    os.chmod(manifest, 0o600)
    done = cli("check", str(manifest), "--cluster-id", CLUSTER, "-o", "json")
    assert done.returncode == 1 and json.loads(done.stdout)["counts"]["error"] == 11
    done = cli("patch", str(manifest), "--cluster-id", CLUSTER)  # stdout, file untouched
    assert done.returncode == 0 and manifest.read_text() == original and "added env" in done.stderr
    assert done.stdout == patch_text(original, SETTINGS).text

    done = cli("patch", str(manifest), "--cluster-id", CLUSTER, "--in-place")
    assert done.returncode == 0, done.stderr
    backups = list(tmp_path.glob(".kube-apiserver.yaml.netfwd-*.bak"))  # a dot file: the kubelet ignores it
    assert len(backups) == 1 and backups[0].read_text() == original
    assert (manifest.stat().st_mode & 0o777) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["kube-apiserver.yaml"]
    assert cli("check", str(manifest), "--cluster-id", CLUSTER).returncode == 0
    done = cli("patch", str(manifest), "--cluster-id", CLUSTER, "--in-place")
    assert done.returncode == 0 and "nothing changed" in done.stderr
    assert len(list(tmp_path.glob(".kube-apiserver.yaml.netfwd-*.bak"))) == 1  # no backup of a no-op

    shared = tmp_path / "shared"  # a directory others may write: root does not rewrite a manifest there
    shared.mkdir()
    os.chmod(shared, 0o777)
    (shared / "kube-apiserver.yaml").write_text(original)
    done = cli("patch", str(shared / "kube-apiserver.yaml"), "--cluster-id", CLUSTER, "--in-place")
    assert done.returncode == 3 and f"refusing {shared}: writable by" in done.stderr, done.stderr
    assert [p.name for p in shared.iterdir()] == ["kube-apiserver.yaml"]
    assert (shared / "kube-apiserver.yaml").read_text() == original
    done = cli("patch", str(manifest), "--cluster-id", CLUSTER, "--in-place", "--backup", str(shared / "m.bak"))
    assert done.returncode == 3 and f"refusing {shared}" in done.stderr and not (shared / "m.bak").exists()

    junit = cli("check", str(FIXTURES / "vendor-guide.yaml"), "-o", "junit")
    assert junit.returncode == 0 and "<testsuites" in junit.stdout


@pytest.mark.parametrize("args, what", [
    (["patch", "MANIFEST", "--cluster-id", "bad id!"], "--cluster-id"),
    (["patch", "MANIFEST"], "--cluster-id"),
    (["check", "NOFILE"], "NOFILE"),
    (["check", "MANIFEST", "--log-path", "relative/x.log"], "--log-path"),
])
def test_cli_bad_input(tmp_path, args, what):
    manifest = tmp_path / "m.yaml"
    manifest.write_text((FIXTURES / "kubeadm-stock.yaml").read_text())
    argv = [str(manifest) if a == "MANIFEST" else (str(tmp_path / "nofile.yaml") if a == "NOFILE" else a)
            for a in args]
    done = cli(*argv)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert what.lower().replace("nofile", "nofile.yaml") in done.stderr.lower()


def test_doctor_runs_the_audit_checks(tmp_path):
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text(policy_text((1, 10)))  # v1beta1
    done = subprocess.run([sys.executable, "-m", "netfwd", "doctor", "--only", "audit-manifest,audit-policy",
                           "--manifest", str(FIXTURES / "kubeadm-stock.yaml"), "--audit-policy", str(policy),
                           "--k8s-version", "1.28", "-o", "json"], capture_output=True, text=True)
    data = json.loads(done.stdout)
    assert done.returncode == 1
    assert {c["name"]: c["status"] for c in data["checks"]} == {"audit-manifest": "error", "audit-policy": "error"}
