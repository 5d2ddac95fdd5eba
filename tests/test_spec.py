"""The spec loader and model: the bundled examples load, and every malformed spec is refused cleanly."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netaddr import IPNetwork

from netfwd.cli import main
from netfwd.errors import InputError
from netfwd.spec import load_spec, parse_spec

HERE = Path(__file__).parent
BAD = sorted((HERE / "fixtures" / "bad-specs").glob("*.yaml"))
EXPECT = re.compile(r"# expect: line=(\S+) field=(\S+)")


def test_corpus_is_large_enough():
    assert len(BAD) >= 30


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_spec_is_one_clear_line_with_exit_2(path, capsys):
    first = path.read_text().splitlines()[:1]
    match = EXPECT.match(first[0]) if first else None
    with pytest.raises(SystemExit) as done:
        main(["validate", str(path)])
    assert done.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    message = lines[0]
    assert message.startswith(f"netfwd: error: {path}")
    if match:
        line, field = match.groups()
        assert f"{path}:{line}:" in message
        if field != "-":
            assert f": {field}:" in message


def test_bad_spec_through_a_real_process_has_no_traceback():
    result = subprocess.run([sys.executable, "-m", "netfwd", "validate", str(BAD[0])],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_example_resolves_regions_through_the_catalog(example_spec):
    forward = example_spec.forwards[0]
    assert forward.identity == ("*", 16443, "tcp")
    assert IPNetwork("47.96.166.214/32") in forward.sources  # cn-hangzhou public IP
    assert IPNetwork("100.104.12.64/26") in forward.sources  # cn-hangzhou private CIDR
    assert IPNetwork("203.0.113.0/24") in forward.sources
    assert example_spec.digest and len(example_spec.digest) == 64


def test_adjacent_cidrs_are_merged_minimally():
    spec = parse_spec("version: 1\ncluster: c\nforwards:\n - name: a\n   listen: {port: 1}\n"
                      "   to: {address: 10.0.0.1, port: 2}\n   allow: {cidrs: [10.1.0.0/25, 10.1.0.128/25, 10.1.0.5]}\n")
    assert spec.forwards[0].sources == (IPNetwork("10.1.0.0/24"),)


def test_changing_a_target_is_the_same_forward():
    text = "version: 1\ncluster: c\nforwards:\n - name: a\n   listen: {port: 1}\n   to: {address: %s, port: 2}\n"
    old, new = parse_spec(text % "10.0.0.1"), parse_spec(text % "10.0.0.2")
    assert old.forwards[0].identity == new.forwards[0].identity
    assert old.forwards[0] != new.forwards[0]


def test_a_newer_catalog_can_replace_the_bundled_one(tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nregions:\n  - id: xx-test-1\n    public: [198.51.100.7]\n    private: []\n")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text("version: 1\ncluster: c\nforwards:\n - name: a\n   listen: {port: 1}\n"
                         "   to: {address: 10.0.0.1, port: 2}\n   allow: {regions: [xx-test-1]}\n")
    from netfwd.catalog import parse_catalog
    from netfwd.yamlsource import load_file

    spec = load_spec(spec_file, parse_catalog(load_file(catalog)))
    assert spec.forwards[0].sources == (IPNetwork("198.51.100.7/32"),)
    with pytest.raises(InputError, match="unknown region 'xx-test-1'"):
        load_spec(spec_file)  # the bundled catalog does not know it


def test_oversized_file_is_refused_before_parsing(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 8_100_000 + "\n")
    with pytest.raises(InputError, match="larger than"):
        load_spec(big)


def test_non_utf8_names_the_line(tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"version: 1\ncluster: caf\xe9\n")
    with pytest.raises(InputError) as problem:
        load_spec(bad)
    assert problem.value.line == 2 and "UTF-8" in str(problem.value)


_ADDRESS_SOUP = st.text(alphabet=st.sampled_from(list("0123456789./:abf %")), max_size=20) | st.builds(
    lambda a, b, c, d, p: f"{a}.{b}.{c}.{d}" + ("" if p is None else f"/{p}"),
    *[st.integers(0, 300)] * 4, st.none() | st.integers(0, 40) | st.just("08"))


def _netaddr_verdict(cls, text):
    try:
        value = cls(text)
    except Exception:
        return None
    return (str(value), value.version, value.value, getattr(value, "prefixlen", None))


@settings(max_examples=400, deadline=None)
@given(_ADDRESS_SOUP)
def test_model_addresses_parse_exactly_as_netaddr(text):
    from netaddr import IPAddress

    from netfwd.model import Address, Network

    assert _netaddr_verdict(Address, text) == _netaddr_verdict(IPAddress, text)
    assert _netaddr_verdict(Network, text) == _netaddr_verdict(IPNetwork, text)


MANAGED = """version: 1
cluster: c
relay: {{os: {os}, management_ports: [2222]}}
forwards:
  - name: a
    listen: {listen}
    to: {{address: 10.0.0.2, port: 6443}}
"""


@pytest.mark.parametrize("os_name", ["linux", "windows"])
@pytest.mark.parametrize("port", [22, 3389, 5985, 5986, 2222])
def test_management_ports_are_refused_unless_taken_over(port, os_name):
    with pytest.raises(InputError) as refused:
        parse_spec(MANAGED.format(os=os_name, listen=f"{{port: {port}}}"), file="m.yaml")
    assert refused.value.line == 6 and refused.value.field == "forwards[0].listen.port"
    assert f"{port} is a management port of the relay" in refused.value.message
    spec = parse_spec(MANAGED.format(os=os_name, listen=f"{{port: {port}, takeover: true}}"), file="m.yaml")
    assert spec.forwards[0].listen.port == port and spec.forwards[0].listen.takeover
    assert parse_spec(MANAGED.format(os=os_name, listen="{port: 2223}")).relay.management_ports == (2222,)


@pytest.mark.parametrize("relay,field", [("management_ports: [0]", "relay.management_ports[0]"),
                                         ("management_ports: 22", "relay.management_ports"),
                                         ("management_ports: ['22']", "relay.management_ports[0]")])
def test_management_ports_must_be_a_list_of_ports(relay, field):
    text = MANAGED.format(os="linux", listen="{port: 2223}").replace("management_ports: [2222]", relay)
    with pytest.raises(InputError) as refused:
        parse_spec(text)
    assert refused.value.field == field


PRIVATE_REGION = """version: 1
cluster: c
forwards:
  - name: a
    listen: {port: 16443}
    to: {address: 10.0.0.2, port: 6443}
    allow:
      regions: [cn-hangzhou, eu-central-1]
  - name: b
    listen: {port: 16444}
    to: {address: 10.0.0.2, port: 6443}
    allow: {regions: [eu-central-1]}
"""


@pytest.mark.parametrize("command", [["validate"], ["render", "--dialect", "nft"]])
def test_private_space_catalog_entries_are_warned_not_refused(command, tmp_path, capsys):
    spec = tmp_path / "private.yaml"
    spec.write_text(PRIVATE_REGION)
    with pytest.raises(SystemExit) as done:
        main([command[0], str(spec), *command[1:]])
    assert done.value.code in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"netfwd: warning: {spec}:8: forwards[0].allow.regions[1]: region eu-central-1's catalog entry "
                   "172.16.0.0/20 is private address space (RFC 1918): the whitelist admits every host in it, "
                   "on-prem ones included (1 more forward(s) use it)"]
    spec.write_text(PRIVATE_REGION.replace("eu-central-1", "cn-shanghai"))
    with pytest.raises(SystemExit) as done:
        main([command[0], str(spec), *command[1:]])
    assert done.value.code in (0, None) and capsys.readouterr().err == ""


EXAMPLE = Path(__file__).resolve().parent.parent / "rules" / "example.yaml"


def test_script_headers_name_the_region_catalog(tmp_path):
    """Which catalog a whitelist was resolved with: its date and the hash of its exact bytes."""
    from netfwd.catalog import load_catalog
    from netfwd.dialects import get_dialect

    bundled = load_catalog()
    header = get_dialect("nft").render(load_spec(EXAMPLE)).splitlines()[3]
    assert header == f"# region catalog: source updated {bundled.source_updated} sha256:{bundled.digest}"
    assert bundled.digest == hashlib.sha256(Path(bundled.file).read_bytes()).hexdigest()
    newer = tmp_path / "regions.yaml"
    newer.write_text(Path(bundled.file).read_text().replace("source_updated: 2024-08-06", "source_updated: 2026-01-02"))
    spec = load_spec(EXAMPLE, load_catalog(str(newer)))
    header = get_dialect("netsh" if spec.relay.os == "windows" else "iptables").render(spec).splitlines()[3]
    assert "source updated 2026-01-02 sha256:" in header and bundled.digest not in header
    plain = parse_spec("version: 1\ncluster: c\nforwards:\n  - {name: a, listen: {port: 1}, to: {address: 10.0.0.2, port: 2}}\n")
    assert "region catalog: not used (no allow.regions)" in get_dialect("nft").render(plain)
