"""Fuzz targets: one function per parser the CLI feeds with user input, and what it may raise.

Each target takes one generated input and runs the code path the CLI runs on it (parse, then the
checks that consume the parse). The only exception a target may let out is InputError with a
one-line message; anything else - a KeyError, a ValueError from int(), a RecursionError, a second
line in a message - is a bug. Used by tests/test_fuzz.py (bounded) and scripts/fuzz (long runs).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from hypothesis import strategies as st

from netfwd.errors import InputError
from tests.hostile.strategies import FIXTURES, REPO, hostile_tokens, mutated, mutated_json, seeds, text_tokens

WHITELIST_SEEDS = {
    "list": ["whitelist/plain-list.txt"],
    "spec": ["whitelist/spec-relay.yaml"],
    "iptables": ["whitelist/iptables-docker-relay.txt", "whitelist/iptables-dual-stack.txt",
                 "whitelist/iptables-handwritten.txt", "whitelist/iptables-negated-accept.txt",
                 "whitelist/ipset-and-iptables.txt"],
    "nft": ["whitelist/nft-relay.txt", "whitelist/nft-vmap.txt"],
    "nft-json": ["whitelist/nft-relay.json", "whitelist/nft-vmap.json"],
    "firewalld-xml": ["whitelist/firewalld-public.xml"],
    "firewalld": ["whitelist/firewalld-list-all.txt"],
    "netsh": ["whitelist/netsh-show-rule.txt"],
}


def check_error(problem: InputError) -> None:
    """A clean rejection: one line, no raw control characters (a terminal would act on them)."""
    text = str(problem)
    assert "\n" not in text and "\r" not in text, repr(text)
    assert not any(ord(c) < 32 or 0x7f <= ord(c) < 0xa0 for c in text), repr(text)


def guarded(function: Callable[[], object]) -> None:
    try:
        function()
    except InputError as problem:
        check_error(problem)


# -- targets ----------------------------------------------------------------------------------

def yaml_source(text: str) -> None:
    from netfwd.yamlsource import load_text

    guarded(lambda: load_text(text, "fuzz.yaml"))


def spec(text: str) -> None:
    from netfwd.dialects import dialects_for, render_files
    from netfwd.spec import build_spec
    from netfwd.yamlsource import load_text

    def run() -> None:
        doc = load_text(text, "fuzz.yaml")
        parsed = build_spec(doc)
        from netfwd.spec import LoadedSpec

        # what `render --dialect all` does: a dialect may refuse (InputError), never crash
        LoadedSpec(parsed, doc).check(render_files, parsed, dialects_for(parsed.relay.os))

    guarded(run)


def catalog(text: str) -> None:
    from netfwd.catalog import parse_catalog
    from netfwd.yamlsource import load_text

    def run() -> None:
        parsed = parse_catalog(load_text(text, "fuzz.yaml"))
        parsed.anomalies()
        for region in parsed.regions:
            region.networks

    guarded(run)


def whitelist(fmt: str | None) -> Callable[[str], None]:
    """`netfwd whitelist verify --against FILE [--format fmt]`: parse, then verify."""

    def target(text: str) -> None:
        from netfwd.catalog import load_catalog
        from netfwd.whitelist.detect import detect
        from netfwd.whitelist.sources import Context, parse_text
        from netfwd.whitelist.verify import verify

        catalog = load_catalog()
        context = Context(catalog=catalog, protocol="tcp", port=None)

        def run() -> None:
            parsed = parse_text(text, "fuzz.txt", fmt or detect(text), context)
            verify(parsed, catalog, ["cn-hangzhou", "cn-shanghai"], None)

        guarded(run)

    return target


def portproxy(text: str) -> None:
    from netfwd.windows import parse_excluded_ranges, parse_portproxy_show

    parse_portproxy_show(text)  # never raises: unknown lines end a section
    parse_excluded_ranges(text)


def decode(data: bytes) -> None:
    from netfwd.windows import decode_output

    assert isinstance(decode_output(data), str)


_WINDOWS_SPEC = None


def windows_report(doc: object) -> None:
    """`netfwd doctor SPEC --windows-report FILE`: load the report, run every Windows check."""
    from netfwd.doctor import doctor
    from netfwd.spec import load_spec

    global _WINDOWS_SPEC
    if _WINDOWS_SPEC is None:
        _WINDOWS_SPEC = load_spec(FIXTURES / "windows" / "reports" / "relay.yaml")
    fd, path = tempfile.mkstemp(suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(doc if isinstance(doc, str) else json.dumps(doc))
        guarded(lambda: doctor(_WINDOWS_SPEC, windows_report=path))
    finally:
        os.unlink(path)


def manifest(text: str) -> None:
    """`netfwd audit check` and `netfwd audit patch --cluster-id c1` on the same text."""
    from netfwd.audit.manifest import Settings, check, read_manifest
    from netfwd.audit.patch import patch_text

    settings = Settings(cluster_id="c1")
    guarded(lambda: check(read_manifest(text, "fuzz.yaml"), settings))
    guarded(lambda: patch_text(text, settings, "fuzz.yaml"))


def audit_policy(text: str) -> None:
    from netfwd.audit.policy import check_policy

    guarded(lambda: check_policy(text, "fuzz.yaml", (1, 28)))


def probe_targets(text: str) -> None:
    from netfwd.probe.targets import from_list_file

    fd, path = tempfile.mkstemp(suffix=".txt")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogatepass") as handle:
            handle.write(text)
        guarded(lambda: from_list_file(path))
    finally:
        os.unlink(path)


# -- inputs -----------------------------------------------------------------------------------

def _report_docs() -> list:
    return [json.loads((FIXTURES / "windows" / "reports" / name).read_text(encoding="utf-8-sig"))
            for name in sorted(os.listdir(FIXTURES / "windows" / "reports")) if name.endswith(".json")]


def _audit_seeds() -> list[str]:
    return seeds(*(f"audit/{p.name}" for p in sorted((FIXTURES / "audit").glob("*.yaml"))))


def _policy_seeds() -> list[str]:
    from netfwd.audit.policy import policy_text

    return [policy_text((1, 28)), policy_text((1, 20))]


def _spec_seeds() -> list[str]:
    rules = [(REPO / "rules" / n).read_text() for n in ("example.yaml", "example-multi.yaml", "example-windows.yaml")]
    return rules + seeds("specs/firewalld-ipv6.yaml", "specs/nft-ipv6-local.yaml")


def _catalog_seeds() -> list[str]:
    text = (REPO / "netfwd" / "data" / "regions.yaml").read_text()
    head = text[:text.find("\n", 4000)] if len(text) > 4000 else text  # small: mutations must matter
    return [head, text[:1500]]


def targets() -> dict[str, tuple[Callable, st.SearchStrategy]]:
    """name -> (target, strategy of its inputs)."""
    found: dict[str, tuple[Callable, st.SearchStrategy]] = {
        "yaml": (yaml_source, st.one_of(mutated(_spec_seeds()), st.text(max_size=200))),
        "spec": (spec, mutated(_spec_seeds())),
        "catalog": (catalog, mutated(_catalog_seeds())),
        "windows-text": (portproxy, mutated(seeds(*(f"windows/{p.name}" for p in sorted(
            (FIXTURES / "windows").glob("*.txt")))))),
        "windows-bytes": (decode, st.binary(max_size=64)),
        "windows-report": (windows_report, st.one_of(mutated_json(_report_docs()),
                                                     mutated([json.dumps(d, indent=1) for d in _report_docs()]))),
        "manifest": (manifest, mutated(_audit_seeds())),
        "audit-policy": (audit_policy, mutated(_policy_seeds())),
        "probe-targets": (probe_targets, st.lists(st.one_of(
            st.builds(lambda h, p: f"{h}:{p}", st.one_of(hostile_tokens, st.just("10.0.0.1")),
                      st.one_of(hostile_tokens, st.integers(-5, 70000).map(str))),
            hostile_tokens, text_tokens), max_size=5).map("\n".join)),
    }
    for fmt, names in WHITELIST_SEEDS.items():
        found[f"whitelist-{fmt}"] = (whitelist(fmt), mutated(seeds(*names)))
    every = [n for names in WHITELIST_SEEDS.values() for n in names]
    found["whitelist-detect"] = (whitelist(None), mutated(seeds(*every)))
    return found


__all__ = ["check_error", "targets", "WHITELIST_SEEDS", "InputError", "Path"]
