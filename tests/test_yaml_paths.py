"""The fast YAML path (Rust, YAML 1.2) must read every text it accepts exactly as the reference
path (PyYAML/libyaml, YAML 1.1, with line numbers) does; otherwise it must step aside."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from netfwd.errors import InputError
from netfwd.yamlsource import _DIVERGENT, _compose, _divergent, _fast, load_text

REPO = Path(__file__).resolve().parent.parent


def reference(text):
    try:
        return _compose(text, "t.yaml")[0]
    except InputError:
        return InputError


@pytest.mark.parametrize("path", sorted((REPO / "rules").glob("example*.yaml")), ids=lambda p: p.name)
def test_bundled_examples_take_the_fast_path_and_agree(path):
    text = path.read_text()
    assert _fast(text) is not None
    assert _fast(text) == reference(text)


scalars = st.one_of(st.integers(-10**6, 10**6), st.booleans(), st.none(), st.text(max_size=12),
                    st.sampled_from(["0443", "0x1F", "4:30", "1e3", "1_000", "yes", "No", "on", "2001-01-01",
                                     "fd00:10::5", "10.0.0.1/24", "text-001", ".inf", "~", "+5", "-0"]))
documents = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                         | st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(documents, st.sampled_from([None, True, False]))
def test_fast_path_never_disagrees_on_structured_documents(document, flow):
    text = yaml.safe_dump({"root": document}, default_flow_style=flow, allow_unicode=True)
    fast = _fast(text)
    assert fast is None or fast == reference(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab01: -[]{},#'\"\n.xyeon&*!_")), max_size=40))
def test_fast_path_never_disagrees_on_text_soup(text):
    fast = _fast(text)
    assert fast is None or fast == reference(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab0123456789: -+[]{},#?\n\r\t.xXoObBeEyYnN&*!_")), max_size=60))
def test_divergence_check_on_folded_distinct_lines_equals_the_whole_text_search(text):
    assert _divergent(text) == (_DIVERGENT.search(text) is not None)


def test_errors_from_the_fast_path_still_name_the_line():
    text = "version: 1\ncluster: c\nforwards:\n  - name: a\n    listen: {port: 70000}\n    to: {address: 10.0.0.1, port: 1}\n"
    located = load_text(text, "t.yaml")
    assert located.known_lines is None  # fast path: no index built yet
    assert located.line_of("forwards[0].listen.port") == 5


@pytest.mark.parametrize("text", ["0.:", "0.: x", "~: x", "true: 1", "a:\n  1.5: 2\n"])
def test_both_paths_keep_non_string_keys_as_yaml_reads_them(text):
    """Regression: the reference path turned a float key into text ({'0.0': None}), the fast path did not."""
    assert reference(text) == yaml.load(text, Loader=yaml.SafeLoader)
    assert _fast(text) in (None, reference(text))
