"""Load YAML safely and remember where every value came from, so errors can name file and line.

ruamel.yaml keeps line numbers on the round-trip types; we walk the tree once and index
``field path -> line`` (paths look like ``forwards[0].listen.port``). Duplicate keys, aliases
(the billion-laughs bomb) and oversized files are refused before anything else looks at the data.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from netfwd.errors import InputError

MAX_BYTES = 1_000_000  # a spec with 10,000 forwards is ~1 MB; anything larger is not a spec


@dataclass(frozen=True)
class Located:
    """Plain Python data (dicts, lists, scalars) plus a ``path -> line`` index."""

    data: Any
    lines: dict[str, int]
    file: str
    digest: str = ""  # sha256 of the text, for script headers and state records

    def line_of(self, field: str) -> int | None:
        """The line of `field`, or of its nearest enclosing field that has one."""
        while field:
            if field in self.lines:
                return self.lines[field]
            cut = max(field.rfind("."), field.rfind("["))
            field = field[:cut] if cut > 0 else ""
        return self.lines.get("", None)

    def error(self, field: str, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line_of(field), field=field or None)


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any, path: str, lines: dict[str, int]) -> Any:
    """Copy ruamel's round-trip tree into plain types, recording the line of every key and item."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(node, CommentedMap):
        out = {}
        for key in node:
            child = f"{path}.{key}" if path else str(key)
            try:
                lines[child] = node.lc.key(key)[0] + 1
            except (KeyError, TypeError):
                pass
            out[key] = _plain(node[key], child, lines)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for index, value in enumerate(node):
            child = f"{path}[{index}]"
            try:
                lines[child] = node.lc.item(index)[0] + 1
            except (KeyError, TypeError, IndexError):
                pass
            items.append(_plain(value, child, lines))
        return items
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    return node


def load_text(text: str, file: str) -> Located:
    """Parse YAML text; every failure becomes an :class:`InputError` naming `file` and the line."""
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError("contains a NUL byte", file=file, line=line)
    if not text.strip():
        raise InputError("is empty", file=file)
    _refuse_aliases(text, file)
    try:
        tree = _yaml().load(text)
    except MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        line = mark.line + 1 if mark else None
        what = (problem.problem or problem.context or "invalid YAML").strip()
        if "duplicate key" in what or "found duplicate key" in str(problem):
            what = "duplicate key" + _dup_key(str(problem))
        raise InputError(f"invalid YAML: {what}", file=file, line=line) from None
    except (YAMLError, ValueError, RecursionError) as problem:
        first = str(problem).strip().splitlines()[0] if str(problem).strip() else type(problem).__name__
        raise InputError(f"invalid YAML: {first}", file=file) from None
    lines: dict[str, int] = {"": getattr(getattr(tree, "lc", None), "line", 0) + 1}
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Located(_plain(tree, "", lines), lines, file, digest)


def _dup_key(message: str) -> str:
    for line in message.splitlines():
        if "found duplicate key" in line:
            return " " + line.split("found duplicate key", 1)[1].split(" with value")[0].strip()
    return ""


def _refuse_aliases(text: str, file: str) -> None:
    """Refuse anchors/aliases outright: specs never need them and they enable expansion bombs."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError
    from ruamel.yaml.tokens import AliasToken, AnchorToken

    try:
        for token in YAML(typ="safe", pure=True).scan(text):
            if isinstance(token, (AliasToken, AnchorToken)):
                raise InputError("YAML anchors and aliases are not allowed",
                                 file=file, line=token.start_mark.line + 1)
    except YAMLError:
        return  # the real parse reports syntax errors with their position


def load_file(path: str | Path) -> Located:
    """Read and parse a YAML file, refusing unreadable, huge or non-UTF-8 input with one clear line."""
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_BYTES + 1)
    except OSError as problem:
        raise InputError(f"cannot read: {problem.strerror or problem}", file=name) from None
    if len(raw) > MAX_BYTES:
        raise InputError(f"is larger than {MAX_BYTES // 1_000_000} MB; refusing to parse it", file=name)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        line = raw.count(b"\n", 0, problem.start) + 1
        raise InputError("is not valid UTF-8", file=name, line=line) from None
    return load_text(text, name)
