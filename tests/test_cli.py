"""The CLI surface: help everywhere, render to stdout and to files, fast start-up, no heavy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netfwd import owned
from netfwd.cli import COMMANDS, cli, main


def run(args, capsys):
    with pytest.raises(SystemExit) as done:
        main(args)
    out = capsys.readouterr()
    return done.value.code, out.out, out.err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(name, capsys):
    code, out, _ = run([name, "--help"], capsys)
    assert code == 0
    assert "Example" in out and "netfwd" in out


def test_render_one_dialect_to_stdout_is_the_script(capsys):
    code, out, _ = run(["render", "rules/example.yaml", "--dialect", "iptables-restore"], capsys)
    assert code == 0 and out.startswith("#!/usr/bin/env bash")
    assert "--to-destination 192.168.10.5:6443" in out
    code, removal, _ = run(["render", "rules/example.yaml", "--dialect", "iptables-restore", "--remove"], capsys)
    assert code == 0 and f"ipt -t nat -D PREROUTING -j {owned.chain('text-001', 'PRE')}" in removal and "-j DNAT" not in removal


def test_render_all_writes_apply_and_remove_files_per_linux_dialect(tmp_path, capsys):
    from netfwd.dialects import dialects_for

    code, out, _ = run(["render", "rules/example.yaml", "--dialect", "all", "--out", str(tmp_path)], capsys)
    assert code == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted(f"text-001.{d.name}{kind}.{d.extension}" for d in dialects_for("linux")
                      for kind in ("", ".remove"))
    assert names == expected
    assert sorted(out.split()) == sorted(str(tmp_path / n) for n in names)


def test_render_out_is_made_where_missing_and_refused_where_others_can_write(tmp_path, capsys):
    made = tmp_path / "new" / "out"
    code, _, _ = run(["render", "rules/example.yaml", "--dialect", "nft", "--out", str(made)], capsys)
    assert code == 0 and len(list(made.iterdir())) == 2 and (made.stat().st_mode & 0o777) == 0o755
    shared = tmp_path / "shared"  # others could swap the scripts there before root runs them
    shared.mkdir()
    os.chmod(shared, 0o777)
    code, _, err = run(["render", "rules/example.yaml", "--dialect", "all", "--out", str(shared / "out")], capsys)
    assert code == 3 and f"refusing {shared}: writable by" in err and err.count("\n") == 1
    assert list(shared.iterdir()) == []


def test_unknown_dialect_and_missing_out_are_bad_input(capsys):
    code, _, err = run(["render", "rules/example.yaml", "--dialect", "pf"], capsys)
    assert code == 2 and "unknown dialect 'pf'" in err
    code, _, err = run(["render", "rules/example.yaml", "--dialect", "all"], capsys)
    assert code == 2 and "--out" in err


def test_dialect_for_the_wrong_os_names_the_field(capsys, tmp_path):
    code, _, err = run(["render", "rules/example.yaml", "--dialect", "netsh"], capsys)
    assert code == 2 and "rules/example.yaml:" in err and "relay.os" in err


def test_validate_json_lists_forwards(capsys):
    code, out, _ = run(["validate", "rules/example.yaml", "--output", "json"], capsys)
    document = json.loads(out)
    assert code == 0 and document["cluster"] == "text-001"
    assert document["forwards"][0]["to_port"] == 6443


def test_regions_json_marks_the_vendor_table_anomalies(capsys):
    code, out, _ = run(["regions", "--output", "json"], capsys)
    document = json.loads(out)
    assert code == 0 and len(document["regions"]) == 16
    duplicates = {a["cidr"]: set(a["regions"]) for a in document["anomalies"] if a["code"] == "catalog-duplicate"}
    assert duplicates == {"100.104.36.0/26": {"cn-huhehaote", "us-east-1"},
                          "172.16.0.0/20": {"eu-central-1", "eu-west-1"}}
    assert any(a["code"] == "private-range" and a["cidr"] == "172.16.0.0/20" for a in document["anomalies"])


def test_schema_accepts_the_examples_and_rejects_unknown_keys(capsys):
    jsonschema = pytest.importorskip("jsonschema")
    from netfwd.yamlsource import load_file

    code, out, _ = run(["schema"], capsys)
    schema = json.loads(out)
    for example in ("rules/example.yaml",):
        jsonschema.validate(load_file(example).data, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "cluster": "c", "forwards": [], "extra": 1}, schema)


def test_help_does_not_import_heavy_modules():
    probe = ("import sys; from netfwd.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = [m for m in ('scapy', 'pyroute2', 'iptc', 'cryptography', 'netaddr', 'rich')"
             " if m in sys.modules]\nprint('HEAVY', heavy)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_python_dash_m_works():
    result = subprocess.run([sys.executable, "-m", "netfwd", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout


def test_group_lists_every_registered_command():
    assert set(cli.list_commands(None)) == set(COMMANDS)


def test_render_all_writes_every_dialect_that_accepts_and_reports_each_refusal(tmp_path, capsys):
    spec = tmp_path / "v6.yaml"
    spec.write_text("version: 1\ncluster: v6\nforwards:\n"
                    "  - {name: a, listen: {port: 16443}, to: {address: 'fd00::2', port: 6443}, local: true}\n")
    out = tmp_path / "out"
    code, written, err = run(["render", str(spec), "--dialect", "all", "--out", str(out)], capsys)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["v6.nft.remove.sh", "v6.nft.sh"]
    assert written.split() == [str(out / "v6.nft.sh"), str(out / "v6.nft.remove.sh")]
    assert err.strip().splitlines() == [
        f"netfwd: error: {spec}:4: forwards[0].to.address: IPv6 is not supported by the iptables dialect "
        "(use nft or firewalld) (no iptables files written)",
        f"netfwd: error: {spec}:4: forwards[0].to.address: IPv6 is not supported by the iptables-restore dialect "
        "(use nft or firewalld) (no iptables-restore files written)",
        f"netfwd: error: {spec}:4: forwards[0].local: the firewalld dialect cannot forward connections made on "
        "the relay itself (no firewalld files written)"]
