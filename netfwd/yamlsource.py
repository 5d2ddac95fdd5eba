"""Load YAML safely and remember where every value came from, so errors can name file and line.

The reference parse composes the YAML with libyaml and walks the node tree once, indexing
``field path -> line`` (paths look like ``forwards[0].listen.port``). Duplicate keys, aliases
(the billion-laughs bomb) and oversized files are refused before anything else looks at the data.
Large plain specs take a fast path (a Rust parser) whose result is identical; the line index is
then built only if an error has to be reported.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netfwd.errors import InputError

MAX_BYTES = 8_000_000  # a 10,000-forward spec is ~1.2 MB; anything this large is not a spec
# How integers must be written: YAML 1.1 reads `port: 0443` as octal 291 and `4:30` as 270, silently.
_DECIMAL = re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Located:
    """Plain Python data (dicts, lists, scalars) plus a ``path -> line`` index.

    The index is built on first use when the data came from the fast path (see `load_text`): a
    valid spec never needs it, an error message always does.
    """

    data: Any
    known_lines: dict[str, int] | None
    file: str
    digest: str = ""  # sha256 of the text, for script headers and state records
    text: str = field(default="", repr=False)

    @property
    def lines(self) -> dict[str, int]:
        if self.known_lines is None:
            object.__setattr__(self, "known_lines", _compose(self.text, self.file)[1])
        return self.known_lines  # type: ignore[return-value]

    def line_of(self, field: str) -> int | None:
        """The line of `field`, or of its nearest enclosing field that has one."""
        lines = self.lines
        while field:
            if field in lines:
                return lines[field]
            cut = max(field.rfind("."), field.rfind("["))
            field = field[:cut] if cut > 0 else ""
        return lines.get("", None)

    def error(self, field: str, message: str) -> InputError:
        return InputError(message, file=self.file, line=self.line_of(field), field=field or None)


# Where the fast parser (YAML 1.2, Rust) and the reference one (PyYAML/libyaml, YAML 1.1) could
# read the same text differently, or where the text may hold anchors/aliases/tags: take the
# reference path. Specs that are plain block/flow YAML of names, addresses and ports never match.
_DIVERGENT = re.compile(
    r"[&*!]"                                    # anchors, aliases, tags
    r"|(?:^|(?<=[\s\[,{:]))[-+]?0[0-9xXoObB_]"    # 0443, 0x1F, 0o17, 0b1: octal/hex/binary forms
    r"|[0-9]_"                                  # 1_000
    r"|(?:^|(?<=[\s\[,{:]))[-+]?[0-9]+(?::[0-9]+)+(?![\w.:])"  # 4:30 (base 60)
    r"|(?<![\w.])[0-9.]+[eE]"                    # 1e3: a float only in YAML 1.2
    r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}"          # 2001-01-01: a date only in YAML 1.1
    r"|(?:^|[:\-\[,{?])[ \t]*(?:y|n|yes|no|on|off)[ \t]*(?:$|[,\]}#])",  # YAML 1.1 booleans
    re.IGNORECASE | re.MULTILINE,
)


_LOADER = None


def _loader_class():
    """libyaml's safe loader (when present), with tag resolution memoised: resolving every scalar
    through PyYAML's regex table dominates the load time of large specs."""
    global _LOADER
    if _LOADER is None:
        import yaml

        base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        cache: dict = {}

        class Loader(base):  # type: ignore[misc, valid-type]
            def resolve(self, kind, value, implicit):
                if kind is not yaml.ScalarNode:
                    return super().resolve(kind, value, implicit)
                key = (value, implicit)
                tag = cache.get(key)
                if tag is None:
                    tag = super().resolve(kind, value, implicit)
                    if len(cache) < 100_000:
                        cache[key] = tag
                return tag

        _LOADER = Loader
    return _LOADER


class _Walker:
    """Copy a composed YAML node tree into plain types, recording the line of every key and item.

    Composing (not constructing) keeps the marks; walking it ourselves lets us refuse duplicate keys
    and aliases (shared nodes: the expansion-bomb vector) before any value is built.
    """

    def __init__(self, loader, file: str) -> None:
        self.loader, self.file = loader, file
        self.lines: dict[str, int] = {}
        self.seen: set[int] = set()

    def walk(self, node, path: str):
        import yaml

        if id(node) in self.seen:
            raise InputError("YAML anchors and aliases are not allowed", file=self.file,
                             line=node.start_mark.line + 1)
        self.seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict = {}
            for key_node, value_node in node.value:
                key = self.scalar(key_node, path)
                child = f"{path}.{key}" if path else str(key)
                if key in out:
                    raise InputError(f"duplicate key {key!r}", file=self.file, line=key_node.start_mark.line + 1,
                                     field=child)
                self.lines[child] = key_node.start_mark.line + 1
                out[key] = self.walk(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for index, item in enumerate(node.value):
                child = f"{path}[{index}]"
                self.lines[child] = item.start_mark.line + 1
                items.append(self.walk(item, child))
            return items
        try:
            value = self.loader.construct_object(node)
        except ValueError as problem:  # an int of more than 4300 digits, a bad !!binary, ...
            raise InputError(f"invalid value: {str(problem).split(':')[0]}", file=self.file,
                             line=node.start_mark.line + 1, field=path or None) from None
        if node.tag == "tag:yaml.org,2002:int" and not _DECIMAL.match(node.value):
            raise InputError(f"{node.value!r} is not a decimal integer (YAML 1.1 reads it as {value}: octal, hex, "
                             "base 60 or with '_'); write it in decimal", file=self.file,
                             line=node.start_mark.line + 1, field=path or None)
        return value

    def scalar(self, node, path: str):
        import yaml

        if not isinstance(node, yaml.ScalarNode):
            raise InputError("mapping keys must be plain scalars", file=self.file,
                             line=node.start_mark.line + 1, field=path or None)
        # Keys stay as YAML reads them (0.5, null, true): the fast parser keeps them so too, and
        # both paths must hand the validator identical data.
        return self.loader.construct_object(node)


def _compose(text: str, file: str) -> tuple[Any, dict[str, int]]:
    """The reference parse (PyYAML on libyaml): data plus the line of every field; precise errors."""
    import yaml

    loader = _loader_class()(text)
    try:
        root = loader.get_single_node()
        if root is None:
            raise InputError("holds no YAML document (only comments?)", file=file)
        walker = _Walker(loader, file)
        data = walker.walk(root, "")
    except yaml.MarkedYAMLError as problem:
        mark = problem.problem_mark or problem.context_mark
        what = (problem.problem or problem.context or "invalid YAML").strip()
        raise InputError(f"invalid YAML: {what}", file=file, line=mark.line + 1 if mark else None) from None
    except (yaml.YAMLError, ValueError, RecursionError) as problem:
        first = (str(problem).strip().splitlines() or [type(problem).__name__])[0]
        raise InputError(f"invalid YAML: {first}", file=file) from None
    finally:
        loader.dispose()
    walker.lines[""] = root.start_mark.line + 1
    return data, walker.lines


# `_DIVERGENT` matches within one line and treats the digits 1-9 alike (only 0 and digit-ness
# matter), so it can search the distinct lines with those digits folded into one: a 10,000-forward
# spec has a few hundred such lines, and the search drops from ~0.25 s to a few ms.
_FOLD_DIGITS = str.maketrans("23456789", "11111111")


def _divergent(text: str) -> bool:
    return _DIVERGENT.search("\n".join(set(text.translate(_FOLD_DIGITS).split("\n")))) is not None


def _fast(text: str) -> Any:
    """Data from the Rust YAML parser (~10x faster on large specs), or None to take the reference path."""
    if _divergent(text):
        return None
    try:
        import ryaml
    except ImportError:
        return None
    try:
        data = ryaml.loads(text)
    except Exception:  # any complaint: let the reference parser word it, with its line
        return None
    return data if isinstance(data, dict) else None


def load_text(text: str, file: str) -> Located:
    """Parse YAML text; every failure becomes an :class:`InputError` naming `file` and the line."""
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise InputError("contains a NUL byte", file=file, line=line)
    if not text.strip():
        raise InputError("is empty", file=file)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    data = _fast(text)
    if data is not None:
        return Located(data, None, file, digest, text)
    data, lines = _compose(text, file)
    return Located(data, lines, file, digest, text)


def load_file(path: str | Path) -> Located:
    """Read and parse a YAML file, refusing unreadable, huge or non-UTF-8 input with one clear line."""
    from netfwd.inputfile import read_utf8

    return load_text(read_utf8(path, MAX_BYTES), str(path))
