"""Writing and reading PowerShell: single-quoted literals on the way out, a tokenizer on the way in.

A single-quoted PowerShell string is fully literal (no ``$`` expansion, no backtick escapes); the
only special characters are the quotes themselves, and PowerShell treats the typographic quotes
U+2018/U+2019/U+201A/U+201B exactly like ``'``. :func:`quote` doubles every one of them.
:func:`tokenize` and :func:`commands` read back the subset of PowerShell netfwd emits (commands
with parameters, single/double-quoted strings, bare words, ``@(...)`` arrays, comma lists, blocks,
comments) so tests can check that every emitted value is exactly one argument.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple, Union

SINGLE_QUOTES = "'\u2018\u2019\u201a\u201b"
DOUBLE_QUOTES = '"\u201c\u201d\u201e'
DASHES = "-\u2013\u2014\u2015"  # PowerShell accepts en/em dashes and the horizontal bar as '-'
# Control characters, and anything outside ASCII: Windows PowerShell 5.1 reads a BOM-less script in
# the ANSI code page, where the UTF-8 bytes 0x91/0x92 of, say, "\u0151" become cp1252's \u2018/\u2019,
# which PowerShell takes for single quotes: the string would end early.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\U0010ffff]")
_METACHARS = set("(){};,|&\n\r")
KEYWORDS = frozenset({"begin", "break", "catch", "continue", "do", "else", "elseif", "end", "exit", "filter",
                      "finally", "for", "foreach", "function", "if", "param", "process", "return", "switch",
                      "throw", "trap", "try", "until", "while"})


class UnsafeValue(ValueError):
    """A value that netfwd refuses to put into a PowerShell script."""


def quote(value: str) -> str:
    """`value` as a single-quoted PowerShell string literal (quotes doubled; non-ASCII refused, which
    also keeps out the typographic quotes PowerShell treats like ``'``)."""
    if _CONTROL.search(value):
        raise UnsafeValue(f"{value!r} contains a control or non-ASCII character")
    return "'" + value.replace("'", "''") + "'"  # the typographic quotes are non-ASCII: refused above


def wildcard_escape(value: str) -> str:
    """Escape PowerShell wildcard characters for parameters that take patterns (-Name, -DisplayName of
    the firewall cmdlets), so a value matches itself only."""
    return _WILDCARD.sub(r"`\1", value) if _WILDCARD.search(value) else value


_WILDCARD = re.compile(r"([`*?\[\]])")


def wildcard_literal(pattern: str) -> str | None:
    """The text a wildcard pattern matches when it has no unescaped wildcard (else None)."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "`" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if char in "*?[":
            return None
        out.append(char)
        i += 1
    return "".join(out)


def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """PowerShell's wildcard semantics (`*`, `?`, `[a-z]`, backtick escapes), case-insensitive."""
    out, i = [], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "`" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise PsSyntaxError(f"wildcard {pattern!r}: '[' without ']'")
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append(f"[{body}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z", re.IGNORECASE | re.DOTALL)


def array(values) -> str:
    """A PowerShell array literal of single-quoted strings: ``@('a', 'b')``."""
    return "@(" + ", ".join(quote(v) for v in values) + ")"


class Token(NamedTuple):
    kind: str  # str | word | var | op | nl
    value: str
    line: int
    expands: bool = False  # a double-quoted string or bare word with $ or a subexpression inside


class PsSyntaxError(ValueError):
    pass


def tokenize(text: str) -> list[Token]:
    """PowerShell tokens, comments dropped, line continuations joined."""
    tokens: list[Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        char = text[i]
        if char in " \t\ufeff":
            i = _BLANKS.match(text, i).end()  # type: ignore[union-attr]  # the pattern matches the empty string too
        elif char == "`" and text[i + 1:i + 2] in ("\n", "\r"):
            i += 3 if text[i + 1:i + 3] == "\r\n" else 2
            line += 1
        elif char in "\r\n":
            i += 2 if text[i:i + 2] == "\r\n" else 1
            tokens.append(Token("nl", "\n", line))
            line += 1
        elif text.startswith("<#", i):
            end = text.find("#>", i + 2)
            if end < 0:
                raise PsSyntaxError(f"line {line}: unterminated block comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif char == "#":
            i = _TO_EOL.match(text, i).end()  # type: ignore[union-attr]  # the pattern matches the empty string too
        elif char in SINGLE_QUOTES:
            simple = _SIMPLE_SINGLE.match(text, i)  # the common case: no quote or newline inside
            if simple:
                tokens.append(Token("str", simple.group(1), line))
                i = simple.end()
                continue
            value, i, line = _single(text, i, line)
            tokens.append(Token("str", value, line))
        elif char in DOUBLE_QUOTES:
            value, expands, i, line = _double(text, i, line)
            tokens.append(Token("str", value, line, expands))
        elif text.startswith(("@(", "@{"), i):
            tokens.append(Token("op", text[i:i + 2], line))
            i += 2
        elif text.startswith(("@'", '@"'), i):
            raise PsSyntaxError(f"line {line}: here-strings are not supported")
        elif char == "$":
            match = _VARIABLE.match(text, i)
            if not match:
                raise PsSyntaxError(f"line {line}: a lone '$'")
            tokens.append(Token("var", match.group(0), line, True))
            i += len(match.group(0))
        elif char in "(){};,|&[]":
            width = 2 if text.startswith(("&&", "||"), i) else 1
            tokens.append(Token("op", text[i:i + width], line))
            i += width
        else:
            plain = _PLAIN_WORD.match(text, i)  # the common case: nothing to unquote or expand
            if plain and (plain.end() == n or text[plain.end()] in _WORD_END):
                tokens.append(Token("word", plain.group(0), line))
                i = plain.end()
                continue
            value, expands, i, line = _bare(text, i, line)
            tokens.append(Token("word", value, line, expands))
    return tokens


_BLANKS = re.compile(r"[ \t\ufeff]+")
_TO_EOL = re.compile(r"[^\r\n]*")
_QUOTE_CLASS = re.escape(SINGLE_QUOTES)
_SIMPLE_SINGLE = re.compile(rf"[{_QUOTE_CLASS}]([^{_QUOTE_CLASS}\n]*)[{_QUOTE_CLASS}](?![{_QUOTE_CLASS}])")
_VARIABLE = re.compile(r"\$(?:\{[^}]*\}|[A-Za-z0-9_:?]+|\$|\^)")
_PLAIN_WORD = re.compile(r"[^\s(){};,|&\[\]`$" + re.escape(SINGLE_QUOTES + DOUBLE_QUOTES) + r"]+")
_WORD_END = frozenset(" \t\r\n(){};,|&[]")


def _single(text: str, i: int, line: int) -> tuple[str, int, int]:
    out = []
    i += 1
    while i < len(text):
        char = text[i]
        if char in SINGLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in SINGLE_QUOTES:
                out.append(char)
                i += 2
                continue
            return "".join(out), i + 1, line
        line += char == "\n"
        out.append(char)
        i += 1
    raise PsSyntaxError(f"line {line}: unterminated single-quoted string")


_BACKTICK = {"0": "\0", "a": "\a", "b": "\b", "e": "\x1b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _double(text: str, i: int, line: int) -> tuple[str, bool, int, int]:
    out, expands = [], False
    i += 1
    while i < len(text):
        char = text[i]
        if char == "`" and i + 1 < len(text):
            out.append(_BACKTICK.get(text[i + 1], text[i + 1]))
            i += 2
            continue
        if char in DOUBLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in DOUBLE_QUOTES:
                out.append(char)
                i += 2
                continue
            return "".join(out), expands, i + 1, line
        if char == "$" and i + 1 < len(text) and re.match(r"[A-Za-z_{(:?$^]", text[i + 1]):
            expands = True
        line += char == "\n"
        out.append(char)
        i += 1
    raise PsSyntaxError(f"line {line}: unterminated double-quoted string")


_PARAM_COLON = re.compile(rf"[{DASHES}][A-Za-z_][A-Za-z0-9_]*:")


def _bare(text: str, i: int, line: int) -> tuple[str, bool, int, int]:
    """A bare word in argument mode; quoted parts inside it join the same argument (a'b'c -> abc).
    ``-Name:value`` is a parameter and its value: the word ends after the colon."""
    colon = _PARAM_COLON.match(text, i)
    if colon:
        return colon.group(0), False, i + len(colon.group(0)), line
    out, expands = [], False
    while i < len(text):
        char = text[i]
        if char in " \t" or char in _METACHARS or char in "[]":
            break
        if char in SINGLE_QUOTES:
            value, i, line = _single(text, i, line)
            out.append(value)
        elif char in DOUBLE_QUOTES:
            value, inner, i, line = _double(text, i, line)
            out.append(value)
            expands |= inner
        elif char == "`" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        else:
            expands |= char == "$"
            out.append(char)
            i += 1
    return "".join(out), expands, i, line


class Param(NamedTuple):
    """A ``-Name`` parameter token."""

    name: str


class Opaque(NamedTuple):
    """An argument netfwd does not evaluate: a variable, a (sub)expression, a script block."""

    text: str


Arg = Union[str, list, Param, Opaque]


@dataclass
class PsCommand:
    name: str
    args: list[Arg] = field(default_factory=list)
    line: int = 0
    depth: int = 0  # 0: runs at script level (not inside a function, an if, a loop)
    call_operator: bool = False  # invoked with '&'

    def params(self) -> dict[str, Arg | bool]:
        """Named parameters (lower-cased, without '-'); a switch with no value maps to True."""
        bound: dict[str, Arg | bool] = {}
        args = self.args
        for index, item in enumerate(args):
            if isinstance(item, Param):
                nxt = args[index + 1] if index + 1 < len(args) else None
                bound[item.name.lower()] = True if nxt is None or isinstance(nxt, Param) else nxt
        return bound

    def positional(self) -> list[Arg]:
        out: list[Arg] = []
        skip = False
        for index, item in enumerate(self.args):
            if skip:
                skip = False
                continue
            if isinstance(item, Param):
                skip = index + 1 < len(self.args) and not isinstance(self.args[index + 1], Param)
                continue
            out.append(item)
        return out


_PARAM = re.compile(rf"^[{DASHES}][A-Za-z_][A-Za-z0-9_]*:?$")
_CLOSERS = {"(": ")", "{": "}", "@(": ")", "@{": "}", "[": "]"}


def commands(text: str) -> list[PsCommand]:
    """Every command invocation in a script, with its depth (0 = runs at script level)."""
    tokens = tokenize(text)
    found: list[PsCommand] = []
    depth, at_start, i = 0, True, 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "nl" or (tok.kind == "op" and tok.value in (";", "|", "&&", "||")):
            at_start, i = True, i + 1
        elif tok.kind == "op" and tok.value in _CLOSERS:
            depth, at_start, i = depth + 1, tok.value != "[", i + 1
        elif tok.kind == "op" and tok.value in (")", "}", "]"):
            depth, at_start, i = depth - 1, tok.value == "}", i + 1
        elif at_start and tok.kind == "word" and tok.value.lower() == "param" and i + 1 < len(tokens) \
                and tokens[i + 1].kind == "op" and tokens[i + 1].value == "(":
            i = _matching(tokens, i + 1) + 1  # a param block; a statement may follow on the same line
        elif at_start and tok.kind == "var" and i + 1 < len(tokens) and tokens[i + 1] == ("word", "=", tokens[i + 1].line,
                                                                                        False):
            i += 2  # `$x = <command>`: the right-hand side may be a command
        elif at_start and tok.kind == "op" and tok.value == "&" and i + 1 < len(tokens) \
                and tokens[i + 1].kind in ("word", "str"):
            command, i = _command(tokens, i + 1, depth, call_operator=True)
            found.append(command)
            at_start = False
        elif at_start and tok.kind == "word" and tok.value.lower() not in KEYWORDS \
                and re.match(r"^[A-Za-z_][\w.-]*$", tok.value):
            command, i = _command(tokens, i, depth)
            found.append(command)
            at_start = False
        else:
            at_start = tok.kind == "word" and tok.value.lower() in ("else", "try", "finally", "do")
            i += 1
    return found


def _command(tokens: list[Token], i: int, depth: int, call_operator: bool = False) -> tuple[PsCommand, int]:
    head = tokens[i]
    command = PsCommand(head.value, [], head.line, depth, call_operator)
    i += 1
    while i < len(tokens):
        tok = tokens[i]
        if tok.kind == "nl" or (tok.kind == "op" and tok.value in (";", "|", "&&", "||", ")", "}")):
            break
        value, i = _argument(tokens, i)
        if i < len(tokens) and tokens[i] == ("op", ",", tokens[i].line, False) and not isinstance(value, Param):
            items: list[Arg] = [value]
            while i < len(tokens) and tokens[i].kind == "op" and tokens[i].value == ",":
                item, i = _argument(tokens, i + 1)
                items.append(item)
            value = items
        command.args.append(value)
    return command, i


def _argument(tokens: list[Token], i: int) -> tuple[Arg, int]:
    tok = tokens[i]
    if tok.kind == "str":
        return (Opaque(tok.value) if tok.expands else tok.value), i + 1
    if tok.kind == "word":
        if _PARAM.match(tok.value):
            return Param(tok.value[1:].rstrip(":")), i + 1
        return (Opaque(tok.value) if tok.expands else tok.value), i + 1
    if tok.kind == "var":
        return Opaque(tok.value), i + 1
    if tok.kind == "op" and tok.value == "@(":
        items: list[Arg] = []
        i += 1
        while i < len(tokens) and not (tokens[i].kind == "op" and tokens[i].value == ")"):
            if tokens[i].kind == "nl" or (tokens[i].kind == "op" and tokens[i].value == ","):
                i += 1
                continue
            item, i = _argument(tokens, i)
            items.append(item)
        return items, i + 1
    if tok.kind == "op" and tok.value in _CLOSERS:
        end = _matching(tokens, i)
        return Opaque(" ".join(t.value for t in tokens[i:end + 1])), end + 1
    return Opaque(tok.value), i + 1


def _matching(tokens: list[Token], i: int) -> int:
    level = 0
    for j in range(i, len(tokens)):
        tok = tokens[j]
        if tok.kind == "op" and tok.value in _CLOSERS:
            level += 1
        elif tok.kind == "op" and tok.value in (")", "}", "]"):
            level -= 1
            if level == 0:
                return j
    raise PsSyntaxError(f"line {tokens[i].line}: {tokens[i].value!r} is never closed")
