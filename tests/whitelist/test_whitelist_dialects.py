"""What netfwd's own dialects render is read back by `whitelist verify` with the spec's answer.

For every Linux example spec: the spec as a source, its iptables-restore payload (as
`iptables-save` would print it) and its nft ruleset must give the same coverage per forward, for
every region: the whitelist readers and the dialects agree on what a spec admits.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from netaddr import IPSet

from netfwd import xtables
from netfwd.catalog import load_catalog
from netfwd.dialects import dialects_for, nft
from netfwd.errors import InputError, UnsupportedByDialect
from netfwd.spec import load_spec
from netfwd.whitelist.detect import detect
from netfwd.whitelist.sources import Context, parse_text
from netfwd.whitelist.verify import verify

REPO = Path(__file__).resolve().parents[2]
SPECS = [REPO / "rules" / "example.yaml", REPO / "rules" / "example-multi.yaml",
         REPO / "tests" / "fixtures" / "whitelist" / "spec-relay.yaml"]
CATALOG = load_catalog()


def coverage(text: str, fmt: str, spec, protocol: str) -> dict[int, list]:
    relay = IPSet([str(a) for a in [spec.relay.address, *(f.listen.address for f in spec.forwards)] if a])
    context = Context(catalog=CATALOG, protocol=protocol, relay_addresses=relay, interface=spec.relay.interface)
    report = verify(parse_text(text, f"<{fmt}>", fmt, context), CATALOG, list(CATALOG.ids), None)
    assert not [f for f in report.all_findings() if f.code == "unevaluated" and f.origin is not None]
    return {g.port: [(r.region, r.status, r.missing) for r in g.regions] for g in report.groups}


def as_saved(payload: str, cluster: str) -> str:
    """The restore payload as `iptables-save` shows it once applied: built-in chains and the jumps."""
    out = []
    for line in payload.splitlines():
        out.append(line)
        if line.startswith("*"):
            table = line[1:]
            jumps = xtables.jumps(cluster)
            out += [f":{chain} ACCEPT [0:0]" for t, chain, _ in jumps if t == table]
            out += [f"-A {chain} -j {owned}" for t, chain, owned in jumps if t == table]
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_rendered_rulesets_admit_what_the_spec_allows(path, protocol):
    spec = load_spec(path, CATALOG)
    expected = {port: rows for port, rows in coverage(path.read_text(), "spec", spec, protocol).items()
                if any(f.listen.port == port and f.protocol == protocol for f in spec.forwards)}
    assert expected or protocol == "udp"
    assert coverage(as_saved(xtables.restore_payload(spec), spec.cluster), "iptables", spec, protocol) == expected
    assert coverage(nft.ruleset(spec), "nft", spec, protocol) == expected


def script_coverage(text: str, spec, protocol: str) -> dict[int, list]:
    context = Context(catalog=CATALOG, protocol=protocol)
    fmt = detect(text)
    assert fmt == "script"
    report = verify(parse_text(text, "<script>", fmt, context), CATALOG, list(CATALOG.ids), None)
    return {g.port: [(r.region, r.status, r.missing) for r in g.regions] for g in report.groups}


@pytest.mark.parametrize("path", [*SPECS, REPO / "rules" / "example-windows.yaml"], ids=lambda p: p.name)
def test_rendered_scripts_of_every_dialect_admit_what_the_spec_allows(path):
    """`whitelist verify --against SCRIPT` reads each dialect's own apply script: same coverage as the spec."""
    spec = load_spec(path, CATALOG)
    rendered = 0
    for dialect in dialects_for(spec.relay.os):
        try:
            text = dialect.render(spec)
        except UnsupportedByDialect:
            continue
        for protocol in {f.protocol for f in spec.forwards}:
            expected = {port: rows for port, rows in coverage(path.read_text(), "spec", spec, protocol).items()
                        if any(f.listen.port == port and f.protocol == protocol for f in spec.forwards)}
            found = script_coverage(text, spec, protocol)
            assert {p: r for p, r in found.items() if p in expected} == expected, dialect.name
        rendered += 1
    assert rendered >= 2


def test_a_remove_script_is_refused_naming_the_file():
    spec = load_spec(SPECS[0], CATALOG)
    text = dialects_for("linux")[0].render_remove(spec)
    with pytest.raises(InputError, match="remove script") as caught:
        parse_text(text, "x.remove.sh", detect(text), Context(catalog=CATALOG))
    assert caught.value.file == "x.remove.sh"
