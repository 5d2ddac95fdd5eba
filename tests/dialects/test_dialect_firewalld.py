"""The firewalld dialect: text properties, and the scripts run against a real firewalld in the lab relay.

firewalld runs only inside the lab's relay namespace with a private D-Bus and /etc/firewalld
(`lab_fw`, see netfwd/lab/firewalld.py); the host's firewalld, if any, is never reached.
Bundled examples are covered by tests/dialects/test_golden.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from netfwd import owned
from netfwd.dialects import get_dialect
from netfwd.dialects.firewalld import forward_rule, ipset_entries, ipset_name, ipsets, masquerade_rule
from netfwd.errors import UnsupportedByDialect
from netfwd.model import Spec
from netfwd.spec import load_spec, parse_spec
from tests.linux_specs import linux_specs

REPO = Path(__file__).resolve().parents[2]
FW = get_dialect("firewalld")
FIXTURES = sorted((REPO / "tests/fixtures/specs").glob("*.yaml"))
GOLDEN = REPO / "tests/golden/fixtures"
A, B = 16443, 6443
FOREIGN_RULE = 'rule family="ipv4" source address="198.51.100.0/24" service name="ssh" accept'


def fw_specs() -> list:
    params = []
    for path in FIXTURES:
        try:
            FW.check(load_spec(path))
        except UnsupportedByDialect:
            continue
        params.append(pytest.param(path, id=path.stem))
    return params


def unordered(essences) -> list:
    """firewalld lists rich rules in no particular order: compare forwards as a multiset."""
    return sorted(essences, key=repr)


# -- text ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", fw_specs())
def test_fixture_specs_match_golden_files(path, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = load_spec(path.relative_to(REPO))
    for name, text in ((f"{spec.cluster}.firewalld.sh", FW.render(spec)),
                       (f"{spec.cluster}.firewalld.remove.sh", FW.render_remove(spec))):
        golden = GOLDEN / path.stem / name
        if os.environ.get("NETFWD_UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(text)
        assert golden.read_text() == text, f"{name} differs from {golden} (NETFWD_UPDATE_GOLDEN=1 to refresh)"


@pytest.mark.parametrize("path", fw_specs())
def test_render_then_parse_gives_back_the_forwards(path):
    spec = load_spec(path)
    assert FW.parse(FW.render(spec)) == FW.expected(spec)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
@pytest.mark.parametrize("path", fw_specs())
def test_fixture_scripts_pass_shellcheck(path, tmp_path):
    spec = load_spec(path)
    for name, text in (("apply.sh", FW.render(spec)), ("remove.sh", FW.render_remove(spec))):
        (tmp_path / name).write_text(text)
        done = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", str(tmp_path / name)],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout


@settings(max_examples=100, deadline=None)
@given(linux_specs(local=False))
def test_property_render_then_parse_is_expected(spec):
    assert FW.parse(FW.render(spec)) == FW.expected(spec)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FW.render(load_spec(REPO / "rules/example-multi.yaml")).splitlines())
                | st.text(max_size=80), max_size=60))
def test_property_parser_survives_any_text(lines):
    """Live output may be cut off or mixed with other text: the parser never raises on it."""
    for essence in FW.parse("\n".join(lines)):
        assert isinstance(essence.listen_port, int) and isinstance(essence.to_port, int)


def test_local_is_rejected_with_the_field_named():
    spec = load_spec(REPO / "tests/fixtures/specs/nft-ipv6-local.yaml")
    with pytest.raises(UnsupportedByDialect, match=r"forwards\[1\]\.local"):
        FW.render(spec)


def test_every_rule_names_the_ipset_of_its_sources_so_no_rule_bypasses_the_whitelist():
    spec = load_spec(REPO / "rules/example-multi.yaml")
    script = FW.render(spec)
    assert "--add-forward-port" not in script
    for forward in spec.forwards:
        name = ipset_name(spec.cluster, forward)
        assert f'source ipset="{name}" ' in forward_rule(forward, name) and name in script
        assert (masquerade_rule(forward, name) in script) == forward.masquerade
        assert ipsets(spec)[name] == (("inet" if forward.family == 4 else "inet6"), ipset_entries(forward))
    assert len(ipsets(spec)) == len(spec.forwards)  # four different source lists
    assert all(len(name) <= 31 for name in ipsets(spec))  # ipset's name limit
    assert script.count("\nwant_set ") == len(ipsets(spec))


def test_forwards_with_the_same_sources_share_one_ipset_named_after_its_contents():
    """One ipset per distinct (family, entries) of a cluster, whatever the forwards are called."""
    edge = load_spec(REPO / "tests/fixtures/specs/firewalld-ipv6.yaml")  # `everyone` (0.0.0.0/0) and `dns` (no allow)
    everyone, dns = edge.forwards[1], edge.forwards[2]
    assert ipset_name(edge.cluster, everyone) == ipset_name(edge.cluster, dns)
    assert len(ipsets(edge)) == 2 and FW.render(edge).count("\nwant_set ") == 2
    same = parse_spec("""version: 1
cluster: fw-edge
relay: {os: linux}
forwards:
  - {name: other, listen: {port: 9}, to: {address: 192.168.1.1, port: 9}}
""", "same.yaml")
    assert ipset_name(same.cluster, same.forwards[0]) == ipset_name(edge.cluster, dns)  # contents, not names
    other_cluster = parse_spec("""version: 1
cluster: fw-other
relay: {os: linux}
forwards:
  - {name: dns, listen: {port: 9}, to: {address: 192.168.1.1, port: 9}}
""", "other.yaml")
    assert ipset_name(other_cluster.cluster, other_cluster.forwards[0]) != ipset_name(edge.cluster, dns)
    assert ipset_name(other_cluster.cluster, other_cluster.forwards[0]).startswith(owned.ipset_prefix("fw-other"))


def test_a_shared_masquerade_rule_is_wanted_once_and_read_back_for_both_forwards():
    """Two forwards to one target with the same sources share the masquerade rule (it names sources
    and target address only): the script wants it once, and it masquerades both."""
    spec = parse_spec("""version: 1
cluster: fw-share
relay: {os: linux}
forwards:
  - {name: a, listen: {port: 8001}, to: {address: 192.168.1.1, port: 80}, allow: {cidrs: [203.0.113.0/24]}}
  - {name: b, listen: {port: 8002}, to: {address: 192.168.1.1, port: 81}, allow: {cidrs: [203.0.113.0/24]},
     masquerade: false}
""", "share.yaml")
    script = FW.render(spec)
    rule = masquerade_rule(spec.forwards[0], ipset_name(spec.cluster, spec.forwards[0]))
    assert script.count(rule) == 1 and script.count("\nwant_set ") == 1
    assert [e.masquerade for e in FW.expected(spec)] == [True, True]
    assert FW.parse(script) == FW.expected(spec)


def test_parses_firewall_cmd_output():
    """`--list-all-zones` lines plus `--info-ipset` blocks, as firewalld 1.3 prints them."""
    spec = load_spec(REPO / "tests/fixtures/specs/firewalld-ipv6.yaml")
    name = {f.name: ipset_name(spec.cluster, f) for f in spec.forwards}
    rules = [forward_rule(f, name[f.name]) for f in spec.forwards]
    rules += [masquerade_rule(f, name[f.name]) for f in spec.forwards if f.masquerade]
    rules.append(FOREIGN_RULE)
    listing = "public (active)\n  target: default\n  rich rules: \n" + "".join(f"\t{r}\n" for r in reversed(rules))
    for set_name, (family, entries) in ipsets(spec).items():
        listing += (f"{set_name}\n  type: hash:net\n  options: family={family}\n"
                    f"  entries: {' '.join(entries)}\n")
    assert unordered(FW.parse(listing)) == unordered(FW.expected(spec))
    without_ipsets = FW.parse("\n".join(rules) + '\nrule family="ipv4" source ipset="netfwd-x masquerade\n')
    assert {e.sources for e in without_ipsets} == {(f"@{name[f.name]}",) for f in spec.forwards}


# -- a real firewalld in the lab relay ------------------------------------------------------------------

def lab_spec(lab, *, port: int = B, cidrs: list[str] | None = None, interface: bool = True) -> Spec:
    a = lab.addrs
    relay = f"{{os: linux, interface: {a.relay_outside_if}}}" if interface else "{os: linux}"
    return parse_spec(f"""
version: 1
cluster: lab-fw
relay: {relay}
forwards:
  - name: apiserver
    listen: {{port: {A}}}
    to: {{address: {a.onprem}, port: {port}}}
    allow: {{cidrs: [{", ".join(cidrs or [a.allowed_cidr])}]}}
  - name: open
    listen: {{port: {A + 1}}}
    to: {{address: {a.onprem}, port: {port}}}
    masquerade: true
""", "lab-fw.yaml")


def run_script(lab, text: str, root: Path, check: bool = True) -> subprocess.CompletedProcess:
    return lab.relay_exec_fw(["env", f"NETFWD_ROOT={root}", "bash", "-s"], input=text, check=check, timeout=300)


def kernel_state(lab) -> list[str]:
    """The kernel's rules: nftables here; on the centos7 relay (firewalld 0.6.3's iptables backend)
    iptables-save without counters and comments, plus every kernel ipset."""
    if lab.userland == "modern":
        return lab.relay_exec_fw(["nft", "list", "ruleset"]).stdout.splitlines()
    rules = [line.split(" [")[0] for line in lab.relay_exec_fw(["iptables-save"]).stdout.splitlines()
             if not line.startswith("#")]
    return rules + lab.relay_exec_fw(["ipset", "save"]).stdout.splitlines()


def state(lab) -> dict[str, list[str]]:
    """What firewalld holds: the runtime as the kernel sees it, and the permanent configuration."""
    result = {"runtime": kernel_state(lab),
              "permanent": sorted(lab.firewall_cmd("--permanent", "--list-all-zones").stdout.splitlines())}
    for name in lab.firewall_cmd("--permanent", "--get-ipsets").stdout.split():
        result[name] = lab.firewall_cmd("--permanent", f"--info-ipset={name}").stdout.splitlines()
    return result


def live(lab, zone: str = "public", permanent: bool = False) -> str:
    """What the parser needs: the zone's rich rules and netfwd's ipsets."""
    conf = ("--permanent",) if permanent else ()
    text = lab.firewall_cmd(*conf, f"--zone={zone}", "--list-rich-rules").stdout
    for name in lab.firewall_cmd(*conf, "--get-ipsets").stdout.split():
        text += lab.firewall_cmd(*conf, f"--info-ipset={name}").stdout
    return text


def netfwd_objects(lab) -> list[str]:
    return [line for conf in ((), ("--permanent",))
            for line in lab.firewall_cmd(*conf, "--list-all-zones").stdout.splitlines()
            + lab.firewall_cmd(*conf, "--get-ipsets").stdout.split() if "netfwd" in line]


@pytest.fixture
def fw_lab(make_lab, userland):
    """A relay running firewalld: this machine's (nftables backend), and CentOS 7's 0.6.3 (iptables backend)."""
    return make_lab(userland=userland, firewalld=True)


@pytest.mark.netns
@pytest.mark.slow
def test_apply_reapply_remove_with_real_traffic(fw_lab, tmp_path):
    lab, a = fw_lab, fw_lab.addrs
    spec = lab_spec(lab)
    lab.start_server("onprem", B, kind="whoami")
    for conf in ((), ("--permanent",)):
        lab.firewall_cmd(*conf, f"--add-rich-rule={FOREIGN_RULE}")
    before = state(lab)
    assert not lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).ok

    done = run_script(lab, FW.render(spec), tmp_path)
    assert "applied 2 forward(s) in zone public" in done.stderr
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside  # masqueraded
    assert not lab.connect("client", a.relay_outside, A, source=a.client_denied, timeout=1).ok  # not in allow
    assert lab.whoami("client", a.relay_outside, A + 1, source=a.client_denied) == a.relay_inside  # open forward
    for permanent in (False, True):
        assert unordered(FW.parse(live(lab, permanent=permanent))) == unordered(FW.expected(spec))
    assert (tmp_path / owned.sysctl_file(spec.cluster)).read_text().count("net.ipv4.ip_forward = 1") == 1
    applied = state(lab)

    done = run_script(lab, FW.render(spec), tmp_path)  # idempotent: no change, no reload
    assert "(0 change(s))" in done.stderr and "reloading" not in done.stderr
    assert state(lab) == applied

    run_script(lab, FW.render_remove(spec), tmp_path)
    assert state(lab) == before  # the foreign rich rule intact, every netfwd rule and ipset gone
    assert netfwd_objects(lab) == []
    assert not [line for line in kernel_state(lab) if "netfwd" in line]  # no kernel ipset left (0.6.3 kept them)
    assert not (tmp_path / owned.sysctl_file(spec.cluster)).exists()
    assert not lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).ok
    done = run_script(lab, FW.render_remove(spec), tmp_path)  # removing twice is fine
    assert "(0 change(s))" in done.stderr


@pytest.mark.netns
@pytest.mark.slow
def test_changes_replace_rules_and_follow_the_interface_zone(lab_fw, tmp_path):
    lab, a = lab_fw, lab_fw.addrs
    old, new = B, B + 1
    lab.start_server("onprem", new, kind="whoami")
    run_script(lab, FW.render(lab_spec(lab, port=old)), tmp_path)

    # a changed target replaces the rule in runtime and permanent alike; no reload needed
    spec = lab_spec(lab, port=new)
    lab.firewall_cmd(f"--add-rich-rule={FOREIGN_RULE}")  # runtime-only: a reload would lose it
    done = run_script(lab, FW.render(spec), tmp_path)
    assert "reloading" not in done.stderr
    for permanent in (False, True):
        text = live(lab, permanent=permanent)
        assert unordered(FW.parse(text)) == unordered(FW.expected(spec)) and f'to-port="{old}"' not in text
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside
    assert FOREIGN_RULE in lab.firewall_cmd("--list-rich-rules").stdout

    # a changed allow list moves the forward to the ipset of its new sources: a new ipset reaches the
    # runtime only through a reload, refused while the runtime-only rule is there; once it is
    # permanent too, the reload keeps it and the old ipset goes
    old_set = ipset_name(spec.cluster, spec.forwards[0])
    spec = lab_spec(lab, port=new, cidrs=[f"{a.client_denied}/32"])
    before = state(lab)
    refused = run_script(lab, FW.render(spec), tmp_path, check=False)
    assert refused.returncode == 3 and f"rich rule {FOREIGN_RULE} (runtime only)" in refused.stderr
    assert state(lab) == before
    lab.firewall_cmd("--permanent", f"--add-rich-rule={FOREIGN_RULE}")
    done = run_script(lab, FW.render(spec), tmp_path)
    assert "reloading" in done.stderr
    assert FOREIGN_RULE in lab.firewall_cmd("--list-rich-rules").stdout
    for conf in ((), ("--permanent",)):
        sets = lab.firewall_cmd(*conf, "--get-ipsets").stdout.split()
        assert ipset_name(spec.cluster, spec.forwards[0]) in sets and old_set not in sets
    assert lab.whoami("client", a.relay_outside, A, source=a.client_denied) == a.relay_inside
    assert not lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).ok
    for permanent in (False, True):
        assert unordered(FW.parse(live(lab, permanent=permanent))) == unordered(FW.expected(spec))

    # the outside interface moves to another zone: DNAT rules follow it (none stay behind), while
    # masquerade stays in the zone of the interface toward the target (it acts on traffic leaving)
    for conf in ((), ("--permanent",)):
        lab.firewall_cmd(*conf, "--zone=dmz", f"--add-interface={a.relay_outside_if}")
    run_script(lab, FW.render(spec), tmp_path)
    for permanent in (False, True):
        dmz, public = live(lab, "dmz", permanent), live(lab, "public", permanent)
        assert "forward-port" in dmz and "masquerade" not in dmz
        assert "forward-port" not in public and "masquerade" in public
        assert unordered(FW.parse(dmz + public)) == unordered(FW.expected(spec))
    assert lab.whoami("client", a.relay_outside, A, source=a.client_denied) == a.relay_inside


@pytest.mark.netns
@pytest.mark.skipif(shutil.which("firewall-cmd") is None, reason="firewalld not installed")
def test_refuses_without_a_running_firewalld(lab, tmp_path):
    """A private, empty /run/dbus: firewall-cmd finds no firewalld (and can never reach the host's)."""
    isolated = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                '[ -d /run/dbus ] && mount -t tmpfs tmpfs /run/dbus; exec env NETFWD_ROOT="$0" bash -s']
    done = lab.run("relay", [*isolated, str(tmp_path)], input=FW.render(lab_spec(lab)), check=False)
    assert done.returncode == 3
    assert "firewalld is not running" in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / "etc").exists()


def test_an_allow_list_with_regions_names_its_ipset_by_the_regions_not_their_addresses(tmp_path):
    """A catalog refresh changes a region's addresses, not the ipset's name: entries are edited in
    place (no reload). Literal CIDRs still name the set by value, so lists that hold the same CIDRs
    share it whatever order they are written in."""
    from netfwd.catalog import load_catalog

    def spec_with(regions: str, cidrs: str, catalog=None) -> Spec:
        text = ("version: 1\ncluster: fw-r\nforwards:\n  - {name: a, listen: {port: 1}, to: {address: 10.0.0.2, port: 2},"
                f" allow: {{regions: [{regions}], cidrs: [{cidrs}]}}}}\n")
        path = tmp_path / "r.yaml"
        path.write_text(text)
        return load_spec(path, catalog)

    bundled = load_catalog()
    moved = tmp_path / "regions.yaml"
    moved.write_text(Path(bundled.file).read_text().replace("47.96.166.214", "47.96.166.215"))
    old, new = spec_with("cn-hangzhou", "203.0.113.0/24"), spec_with("cn-hangzhou", "203.0.113.0/24", load_catalog(str(moved)))
    assert ipset_entries(old.forwards[0]) != ipset_entries(new.forwards[0])
    assert ipset_name("fw-r", old.forwards[0]) == ipset_name("fw-r", new.forwards[0])
    assert ipset_name("fw-r", old.forwards[0]) != ipset_name("fw-r", spec_with("cn-shanghai", "203.0.113.0/24").forwards[0])
    assert ipset_name("fw-r", old.forwards[0]) != ipset_name("fw-r", spec_with("cn-hangzhou", "198.51.100.0/24").forwards[0])
    a = parse_spec("version: 1\ncluster: fw-r\nforwards:\n  - {name: a, listen: {port: 1}, to: {address: 10.0.0.2, port: 2},"
                   " allow: {cidrs: [198.51.100.0/24, 203.0.113.0/24]}}\n", "a.yaml")
    b = parse_spec("version: 1\ncluster: fw-r\nforwards:\n  - {name: b, listen: {port: 3}, to: {address: 10.0.0.2, port: 2},"
                   " allow: {cidrs: [203.0.113.0/24, 198.51.100.0/24]}}\n", "b.yaml")
    assert ipset_name("fw-r", a.forwards[0]) == ipset_name("fw-r", b.forwards[0])


@pytest.mark.netns
@pytest.mark.slow
def test_a_catalog_refresh_edits_the_regions_ipset_in_place_without_a_reload(lab_fw, tmp_path):
    """The region's addresses move (a newer catalog): the next apply edits the shared ipset's
    entries at runtime and in the permanent configuration, so another admin's runtime-only rule
    survives and the new address gets through while the old one no longer does."""
    from netfwd.catalog import load_catalog

    lab, a = lab_fw, lab_fw.addrs
    lab.start_server("onprem", B, kind="whoami")
    catalogs = []
    for index, client in enumerate((a.client_allowed, a.client_denied)):
        path = tmp_path / f"regions-{index}.yaml"
        path.write_text(f"version: 1\nsource_updated: 2026-0{index + 1}-01\nregions:\n"
                        f"  - {{id: lab-region, name: Lab, public: [{client}], private: []}}\n")
        catalogs.append(load_catalog(str(path)))
    spec_file = tmp_path / "lab-fw.yaml"
    spec_file.write_text(f"version: 1\ncluster: lab-fw\nrelay: {{os: linux, interface: {a.relay_outside_if}}}\n"
                         f"forwards:\n  - name: apiserver\n    listen: {{port: {A}}}\n"
                         f"    to: {{address: {a.onprem}, port: {B}}}\n    allow: {{regions: [lab-region]}}\n")
    before, after = (load_spec(spec_file, catalog) for catalog in catalogs)
    run_script(lab, FW.render(before), tmp_path)
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside
    lab.firewall_cmd(f"--add-rich-rule={FOREIGN_RULE}")  # runtime-only: a reload would lose it
    done = run_script(lab, FW.render(after), tmp_path)
    assert "reloading" not in done.stderr
    assert FOREIGN_RULE in lab.firewall_cmd("--list-rich-rules").stdout
    name = ipset_name(after.cluster, after.forwards[0])
    assert name == ipset_name(before.cluster, before.forwards[0])
    for conf in ((), ("--permanent",)):
        assert lab.firewall_cmd(*conf, f"--info-ipset={name}").stdout.count(a.client_denied) == 1
        assert a.client_allowed not in lab.firewall_cmd(*conf, f"--info-ipset={name}").stdout
    assert lab.whoami("client", a.relay_outside, A, source=a.client_denied) == a.relay_inside
    assert not lab.connect("client", a.relay_outside, A, source=a.client_allowed, timeout=1).ok
    run_script(lab, FW.render_remove(after), tmp_path, check=False)
    lab.firewall_cmd(f"--remove-rich-rule={FOREIGN_RULE}")


@pytest.mark.netns
@pytest.mark.slow
def test_bundled_and_fixture_specs_apply_to_a_real_firewalld(lab_fw, tmp_path):
    """firewalld accepts every rule form netfwd writes (IPv6, UDP, listen addresses, whole-space ipsets),
    and two clusters' specs live side by side: each apply leaves the other cluster's forwards, each
    remove script takes away only its own cluster's."""
    lab = lab_fw
    specs = [load_spec(REPO / "rules/example-multi.yaml"), load_spec(REPO / "tests/fixtures/specs/firewalld-ipv6.yaml")]
    assert specs[0].cluster != specs[1].cluster
    both = unordered(FW.expected(specs[0]) + FW.expected(specs[1]))
    for index, spec in enumerate(specs):
        run_script(lab, FW.render(spec), tmp_path)
        wanted = both if index else unordered(FW.expected(spec))
        for permanent in (False, True):
            assert unordered(FW.parse(live(lab, permanent=permanent))) == wanted, spec.cluster
    run_script(lab, FW.render(specs[0]), tmp_path)  # re-applying one cluster keeps the other
    assert unordered(FW.parse(live(lab))) == both
    run_script(lab, FW.render_remove(specs[0]), tmp_path)
    for permanent in (False, True):
        assert unordered(FW.parse(live(lab, permanent=permanent))) == unordered(FW.expected(specs[1]))
    run_script(lab, FW.render_remove(specs[1]), tmp_path)
    assert netfwd_objects(lab) == []


@pytest.mark.netns
@pytest.mark.slow
def test_changed_target_on_firewalld_063(make_lab, centos7_userland, tmp_path):
    """firewalld 0.6.3 fails to remove at runtime a forward-port rule it loaded itself: the script
    says so and reloads (the permanent configuration is already right), and the change is complete."""
    lab = make_lab(userland="centos7", firewalld=True)
    a, old, new = lab.addrs, B, B + 1
    lab.start_server("onprem", new, kind="whoami")
    run_script(lab, FW.render(lab_spec(lab, port=old)), tmp_path)
    spec = lab_spec(lab, port=new)
    done = run_script(lab, FW.render(spec), tmp_path)
    assert "cannot remove loaded forward-port rules at runtime: reloading instead" in done.stderr
    for permanent in (False, True):
        text = live(lab, permanent=permanent)
        assert unordered(FW.parse(text)) == unordered(FW.expected(spec)) and f'to-port="{old}"' not in text
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside


@pytest.mark.netns
def test_a_refused_change_leaves_the_sysctls_and_says_how_far_it_got(lab_fw, tmp_path):
    """firewalld refuses an entry midway (an ipset of netfwd's name but the wrong type): exit non-zero,
    no sysctl file written, and the script says how many firewalld changes it made."""
    lab = lab_fw
    spec = lab_spec(lab)
    lab.firewall_cmd("--permanent", f"--new-ipset={ipset_name(spec.cluster, spec.forwards[0])}", "--type=hash:mac")
    done = run_script(lab, FW.render(spec), tmp_path, check=False)
    assert done.returncode != 0
    assert "failed (exit" in done.stderr and "firewalld change(s), sysctls untouched" in done.stderr
    assert "applied" not in done.stderr
    assert not (tmp_path / owned.sysctl_file(spec.cluster)).exists()


@pytest.mark.netns
def test_other_admins_runtime_only_rules_survive_or_the_reload_is_refused(lab_fw, tmp_path):
    """An admin's runtime-only service and rich rule survive a change that needs no reload; a change
    that needs one (remove: ipsets go) exits 3 naming them and changes nothing, unless
    NETFWD_ALLOW_RUNTIME_LOSS=1."""
    lab, a = lab_fw, lab_fw.addrs
    lab.start_server("onprem", B + 1, kind="whoami")
    run_script(lab, FW.render(lab_spec(lab)), tmp_path)  # nothing else differs yet: the reload is fine
    zone = lab.firewall_cmd("--get-default-zone").stdout.strip()
    lab.firewall_cmd("--add-service=http")
    lab.firewall_cmd(f"--add-rich-rule={FOREIGN_RULE}")

    spec = lab_spec(lab, port=B + 1)  # a changed target: runtime and permanent edited in step
    done = run_script(lab, FW.render(spec), tmp_path)
    assert "reloading" not in done.stderr
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside
    assert FOREIGN_RULE in lab.firewall_cmd("--list-rich-rules").stdout
    assert "http" in lab.firewall_cmd("--list-services").stdout.split()

    before = state(lab)
    done = run_script(lab, FW.render_remove(spec), tmp_path, check=False)
    assert done.returncode == 3, done.stderr
    assert f"{zone}: services http (runtime only)" in done.stderr
    assert f"{zone}: rich rule {FOREIGN_RULE} (runtime only)" in done.stderr
    assert state(lab) == before
    assert lab.whoami("client", a.relay_outside, A, source=a.client_allowed) == a.relay_inside

    lab.relay_exec_fw(["env", f"NETFWD_ROOT={tmp_path}", "NETFWD_ALLOW_RUNTIME_LOSS=1", "bash", "-s"],
                      input=FW.render_remove(spec), timeout=300)
    assert "netfwd-" not in lab.firewall_cmd("--get-ipsets").stdout
    assert FOREIGN_RULE not in lab.firewall_cmd("--list-rich-rules").stdout  # the reload it was allowed
