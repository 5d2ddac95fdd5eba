"""`netfwd doctor --windows-report`: a Windows relay checked offline from the collector's JSON report.

The healthy report (tests/fixtures/windows/reports/healthy.json) is what the collector writes for a
relay where `relay.yaml` was applied; each test breaks one fact the way it breaks on real hosts and
expects exactly the checks that fact decides to fail.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from netfwd.doctor import doctor
from netfwd.doctor.winreport import load_report
from netfwd.doctor.windows_collector import REPORT_MARKER, collector_script
from netfwd.errors import InputError
from netfwd.spec import load_spec

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "windows" / "reports"
SPEC = HERE / "relay.yaml"
HEALTHY = json.loads((HERE / "healthy.json").read_text())


def run(tmp_path: Path, doc: dict | None = None, raw: bytes | None = None, **options):
    path = tmp_path / "report.json"
    path.write_bytes(raw if raw is not None else json.dumps(doc if doc is not None else HEALTHY).encode())
    return doctor(load_spec(SPEC), windows_report=str(path), **options)


def failing(report) -> dict[str, str]:
    return {r.name: r.status for r in report.results if r.status in ("error", "warning")}


def broken(change) -> dict:
    doc = copy.deepcopy(HEALTHY)
    change(doc)
    return doc


def test_healthy_report_passes(tmp_path):
    report = run(tmp_path)
    assert report.exit_code == 0
    assert {r.status for r in report.results} == {"ok"}
    assert [r.name for r in report.results] == ["win-iphlpsvc", "win-portproxy", "win-portproxy-persisted",
                                                "win-excluded-ports", "win-listen-address", "win-listener",
                                                "win-firewall-profiles", "win-firewall"]


def test_ip_helper_stopped_means_nothing_listens(tmp_path):
    def stop(doc):
        doc["iphlpsvc"]["state"] = "Stopped"
        doc["listeners"] = [item for item in doc["listeners"] if item["pid"] != 2412]

    report = run(tmp_path, broken(stop))
    assert failing(report) == {"win-iphlpsvc": "error", "win-listener": "error"}
    assert report.result("win-iphlpsvc").findings[0].fix == "Start-Service iphlpsvc"


def test_ip_helper_manual_start_is_a_warning(tmp_path):
    report = run(tmp_path, broken(lambda d: d["iphlpsvc"].update(start_mode="Manual")))
    assert failing(report) == {"win-iphlpsvc": "warning"} and report.exit_code == 0


def test_wildcard_and_zero_address_are_different_entries(tmp_path):
    def zero(doc):
        doc["portproxy"] = [line.replace("*               16443", "0.0.0.0         16443") for line in doc["portproxy"]]
        doc["registry"]["v4tov4"] = {"0.0.0.0/16443": "192.168.10.5/6443", "10.0.0.4/8443": "192.168.10.6/443"}

    report = run(tmp_path, broken(zero))
    assert failing(report) == {"win-portproxy": "error", "win-portproxy-persisted": "error"}
    finding = report.result("win-portproxy").findings[0]
    assert "0.0.0.0, not *" in finding.message
    assert "delete v4tov4 listenport=16443 listenaddress=0.0.0.0" in finding.fix


def test_wrong_target_and_missing_entry(tmp_path):
    def change(doc):
        doc["portproxy"] = [line.replace("192.168.10.5    6443", "192.168.10.9    6443") for line in doc["portproxy"]
                            if "8443" not in line]

    report = run(tmp_path, broken(change))
    messages = [f.message for f in report.result("win-portproxy").findings]
    assert any("proxies to 192.168.10.9:6443, not 192.168.10.5:6443" in m for m in messages)
    assert any("no port proxy listens on 10.0.0.4:8443" in m for m in messages)
    assert failing(report) == {"win-portproxy": "error"}  # the registry still has both: a reboot restores them


def test_registry_out_of_step(tmp_path):
    report = run(tmp_path, broken(lambda d: d["registry"]["v4tov4"].pop("*/16443")))
    assert failing(report) == {"win-portproxy-persisted": "error"}


def test_listen_port_inside_a_reserved_range(tmp_path):
    def reserve(doc):
        doc["excluded_ipv4"].insert(6, "     16400       16499")

    report = run(tmp_path, broken(reserve))
    assert failing(report) == {"win-excluded-ports": "error"}
    assert "16400-16499" in report.result("win-excluded-ports").findings[0].message


def test_listen_address_not_on_the_host(tmp_path):
    """The cloud public-IP trap: the relay's NIC has only its private address."""
    def move(doc):
        doc["addresses"][1]["address"] = "172.16.0.5"

    report = run(tmp_path, broken(move))
    assert failing(report) == {"win-listen-address": "error"}


def test_port_taken_by_another_process(tmp_path):
    def take(doc):
        doc["listeners"][0]["pid"] = 999

    report = run(tmp_path, broken(take))
    assert failing(report) == {"win-listener": "error"}
    assert "PID 999" in report.result("win-listener").findings[0].message


def test_firewall_rule_missing_too_wide_or_host_dependent(tmp_path):
    report = run(tmp_path, broken(lambda d: d["firewall"].pop(0)))
    assert failing(report) == {"win-firewall": "error"}
    assert "New-NetFirewallRule" in report.result("win-firewall").findings[0].fix

    report = run(tmp_path, broken(lambda d: d["firewall"][0].update(remote_address="Any")))
    assert failing(report) == {"win-firewall": "warning"}  # works, but admits more than the whitelist

    report = run(tmp_path, broken(lambda d: d["firewall"][0].update(remote_address="LocalSubnet")))
    finding = report.result("win-firewall").findings[0]
    assert finding.severity == "error" and "LocalSubnet" in finding.message

    report = run(tmp_path, broken(lambda d: d["firewall"].insert(0, {
        "name": "block", "display_name": "block one", "action": "Block", "protocol": "TCP",
        "local_port": ["16000-17000"], "remote_address": ["47.96.166.214"]})))
    assert "47.96.166.214/32" in report.result("win-firewall").findings[0].message  # block beats allow


def test_missing_section_is_skipped_with_the_collectors_reason(tmp_path):
    def drop(doc):
        del doc["firewall"]
        doc["errors"] = ["firewall: Access is denied."]

    report = run(tmp_path, broken(drop))
    result = report.result("win-firewall")
    assert result.status == "skipped" and "Access is denied" in result.summary


def test_report_encodings_and_unrolled_lists(tmp_path):
    """PowerShell 5.1 writes UTF-16 with a BOM when redirected, and unrolls one-element lists."""
    doc = broken(lambda d: d.update(firewall=d["firewall"][0], listeners=d["listeners"][:2]))
    raw = b"\xff\xfe" + json.dumps(doc).encode("utf-16-le")
    report = run(tmp_path, raw=raw)
    assert failing(report) == {"win-firewall": "error"}  # the one rule left is read; metrics has none now
    assert [f.message.split(":")[0] for f in report.result("win-firewall").findings] == ["forward metrics"]


def test_localised_netsh_output(tmp_path):
    zh = (Path(__file__).resolve().parents[1] / "fixtures" / "windows" / "portproxy-show-all.zh-cn.gbk.txt")
    if not zh.exists():
        pytest.skip("localised fixture not present")
    from netfwd.windows import decode_output

    lines = decode_output(zh.read_bytes()).splitlines()
    report = load_report_from(tmp_path, broken(lambda d: d.update(portproxy=lines)))
    assert report.portproxy  # parsed by structure, not by the localised words


def load_report_from(tmp_path: Path, doc: dict):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    return load_report(path)


@pytest.mark.parametrize("content, what", [
    (b"not json", "invalid JSON"),
    (b'{"hello": 1}', REPORT_MARKER),
    (b'{"netfwd_windows_report": 1, "listeners": [{"port": "x"}]}', "malformed report section"),
])
def test_bad_reports_are_input_errors(tmp_path, content, what):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as problem:
        load_report(path)
    assert what in str(problem.value) and str(path) in str(problem.value)


def test_cli_exit_codes(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps(HEALTHY))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(broken(lambda d: d["iphlpsvc"].update(state="Stopped"))))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "netfwd", "doctor", *args], capture_output=True, text=True)

    assert cli(str(SPEC), "--windows-report", str(good)).returncode == 0
    done = cli(str(SPEC), "--windows-report", str(bad), "-o", "json")
    assert done.returncode == 1 and json.loads(done.stdout)["verdict"] == "fail"
    assert cli(str(SPEC), "--windows-report", str(bad), "--ignore", "win-iphlpsvc,win-listener").returncode == 0
    done = cli(str(SPEC))  # a Windows spec without a report
    assert done.returncode == 2 and "--windows-report" in done.stderr and "Traceback" not in done.stderr
    done = cli(str(SPEC), "--windows-report", str(tmp_path / "missing.json"))
    assert done.returncode == 2 and "missing.json" in done.stderr


def test_collector_script_is_ascii_crlf_readonly_and_emitted_by_render():
    text = collector_script()
    assert text.isascii() and "\r\n" in text and "\n" not in text.replace("\r\n", "")
    for section in ("portproxy", "registry", "iphlpsvc", "excluded_ipv4", "excluded_ipv6", "firewall",
                    "addresses", "listeners", REPORT_MARKER):
        assert f"'{section}'" in text or f"{section} =" in text
    lowered = text.lower()
    for verb in ("set-service", "start-service", "new-netfirewallrule", "remove-", "portproxy add",
                 "portproxy delete", "set-item", "new-item"):
        assert verb not in lowered  # it only reads
    from netfwd.dialects import pssyntax

    names = {c.name.lower() for c in pssyntax.commands(text)}
    assert {"set-strictmode", "add-netfwdsection", "convertto-json"} <= names
    done = subprocess.run([sys.executable, "-m", "netfwd", "render", str(SPEC), "--dialect", "powershell",
                           "--collector"], capture_output=True)
    assert done.returncode == 0 and done.stdout.decode() == text


def test_a_firewall_profile_that_is_off_is_an_error(tmp_path):
    """With a profile off Windows admits every source: the allow rule is then no whitelist."""
    report = run(tmp_path, broken(lambda d: d["profiles"][2].update(enabled="False")))
    assert failing(report) == {"win-firewall-profiles": "error"}
    finding = report.result("win-firewall-profiles").findings[0]
    assert "Public" in finding.message and "Domain" not in finding.message
    assert "Set-NetFirewallProfile" in finding.fix
    report = run(tmp_path, broken(lambda d: d.pop("profiles")))
    assert report.result("win-firewall-profiles").status == "skipped"


def test_allow_rules_are_checked_for_their_service_scope(tmp_path):
    """netfwd's rules apply to the IP Helper service only; an unscoped rule admits the whitelist to any
    program on the port (warning); a rule scoped to another service does not admit portproxy at all."""
    report = run(tmp_path, broken(lambda d: d["firewall"][0].update(service="Any")))
    assert failing(report) == {"win-firewall": "warning"}
    finding = report.result("win-firewall").findings[0]
    assert "netfwd text-001 apiserver" in finding.message and "iphlpsvc" in finding.message
    report = run(tmp_path, broken(lambda d: d["firewall"][0].pop("service")))  # a report without the field
    assert failing(report) == {"win-firewall": "warning"}
    report = run(tmp_path, broken(lambda d: d["firewall"][0].update(service="TermService")))
    assert failing(report) == {"win-firewall": "error"}
    assert "-Service iphlpsvc" in report.result("win-firewall").findings[0].fix


def test_collector_reads_enforced_profiles_and_each_rules_service():
    from netfwd.dialects import pssyntax

    sections = {c.args[0]: c.args[1].text for c in pssyntax.commands(collector_script())
                if c.name == "Add-NetfwdSection"}  # name -> the script block that collects it
    (profiles,) = [c for c in pssyntax.commands(sections["profiles"].strip("{}"))
                   if c.name == "Get-NetFirewallProfile"]
    assert profiles.params() == {"policystore": "ActiveStore"}  # enforced: group policy merged in
    (services,) = [c for c in pssyntax.commands(sections["firewall"].strip("{}"))
                   if c.name == "Get-NetFirewallServiceFilter"]
    assert services.params() == {"all": True}
    assert "service = [string] $services[[string] $rule.InstanceID]" in collector_script()
