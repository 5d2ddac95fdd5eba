"""Hypothesis strategies for hostile input: mutations of real inputs, and the values attackers try.

Pure random text rarely gets past a parser's first line; mutating a real file (an iptables-save
dump, a spec, a Windows report) with the tokens that break shells, quoting rules and number
parsers reaches the deep code paths. Shared by tests/test_fuzz.py and scripts/fuzz.
"""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

# Values that mean something to bash, cmd, PowerShell, YAML, number parsers or a terminal.
HOSTILE = [
    "$(reboot)", "`id`", "${IFS}", "a;b", "a|b", "a&b", "&&", "||", ">x", "<x", "2>&1", "\n", "\r\n", "\r",
    "\t", " ", "'", '"', "\\", "\\\\", "%PATH%", "%%", "^", "^&", "!x!", "(", ")", "{", "}", "[", "]", "#",
    "--", "-j", "-A", "*", "?", "~", ",", "=", ":", "::", "/", "//", "..", "../..", "\x00", "\x1b[31m", "\x07",
    "\x7f", "\u202e", "\u200b", "\ufeff", "\u2018", "\u2019", "\u201c", "\u2013", "\uff10", "\uff11", "\u0661",
    "\u00b2", "\u2075", "\u00b9\u00b2", "\U0001d7e2", "\u0430", "\u0441", "\u0435\u0442h0", "\u4e2d",
    "-1", "0", "65536", "99999999999999999999", "1e9", "0x10", "010", "1_000", "+5", "-0", "NaN", "inf",
    "true", "null", "~", "!!python/object:os.system", "&a", "*a", "<<: *a", "? x", "- - -", "...", "---",
    "0.0.0.0/0", "::/0", "10.0.0.1/8", "fe80::1%eth0", "fe80::1%25eth0", "::ffff:1.2.3.4", "1.2.3.4.5",
    "256.1.1.1", "01.2.3.4", "1.2.3", "[::1]:80", "10.0.0.1-10.0.0.0", "10.0.0.0/255.0.255.0", "/33",
    "/-1", "/\u00b2", "1.2.3.4/\u0662\u0664", "\u0661.\u0662.\u0663.\u0664", "x" * 300,
]
hostile_tokens = st.sampled_from(HOSTILE)
text_tokens = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)


def seeds(*names: str) -> list[str]:
    """Text of fixture files (relative to tests/fixtures), decoded as netfwd would."""
    from netfwd.windows import decode_output

    return [decode_output((FIXTURES / name).read_bytes()) for name in names]


def _words(texts: list[str]) -> list[str]:
    found: set[str] = set()
    for text in texts:
        found.update(text.split())
    return sorted(w for w in found if len(w) < 60)


@st.composite
def mutated(draw, texts: list[str], max_mutations: int = 6) -> str:
    """One of `texts`, changed by a few inserts, deletions, replacements, line duplications and
    swaps, with hostile tokens and words of the same format (so the result stays nearly valid)."""
    vocabulary = _words(texts)
    token = st.one_of(hostile_tokens, hostile_tokens, st.sampled_from(vocabulary) if vocabulary else hostile_tokens,
                      text_tokens)
    text = draw(st.sampled_from(texts))
    for _ in range(draw(st.integers(0, max_mutations))):
        op = draw(st.sampled_from(["insert", "insert", "replace", "delete", "dupline", "swaplines", "truncate",
                                   "word"]))
        at = draw(st.integers(0, max(len(text), 1))) % (len(text) + 1)
        if op == "insert":
            text = text[:at] + draw(token) + text[at:]
        elif op == "replace":
            end = at + draw(st.integers(1, 8))
            text = text[:at] + draw(token) + text[end:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 40)):]
        elif op == "truncate":
            text = text[:at]
        elif op == "word":  # replace a whole whitespace-separated word: keeps the line's shape
            words = text.split(" ")
            if words:
                index = draw(st.integers(0, len(words) - 1))
                words[index] = draw(token)
                text = " ".join(words)
        else:
            lines = text.split("\n")
            if len(lines) > 1:
                i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
                if op == "dupline":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
                text = "\n".join(lines)
    return text


# -- JSON documents (Windows report, nft -j) ---------------------------------------------------

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2 ** 70, 2 ** 70),
                         st.floats(), hostile_tokens, text_tokens)


def json_values(max_leaves: int = 12):
    return st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.one_of(hostile_tokens, text_tokens), inner, max_size=4),
                        max_leaves=max_leaves)


@st.composite
def mutated_json(draw, docs: list, max_mutations: int = 5):
    """A JSON document with some values replaced by hostile ones of any type (what a corrupted or
    hand-edited report looks like to the reader)."""
    doc = json.loads(json.dumps(draw(st.sampled_from(docs))))
    for _ in range(draw(st.integers(1, max_mutations))):
        path = []
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else range(len(node))))
            path.append(key)
            node = node[key]
        if not path:
            if isinstance(doc, dict):
                doc[draw(st.one_of(hostile_tokens, st.sampled_from(sorted(doc) or ["x"])))] = draw(json_values())
            continue
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        parent[path[-1]] = draw(json_values())
    return doc
