"""Writing and reading Windows batch (`.cmd`) lines: quoting on the way out, a tokenizer on the way in.

cmd parses a line in phases: (1) ``%`` expansion (``%%`` -> ``%``, ``%VAR%`` -> value), (2) the
special characters ``^ & | < > ( )`` and ``"`` (caret escapes one character; quotes make everything
up to the next quote literal), then the program splits its own command line into argv (the
Microsoft C runtime rules: whitespace separates, quotes group, ``\\`` before a quote escapes it).
:func:`arg` and :func:`echo_text` produce text that survives all three phases unchanged;
:func:`tokenize` implements the same phases for the subset of batch syntax netfwd emits
(simple commands, ``&``/``&&``/``||``/``|``, redirections, parenthesised blocks, ``if``, ``for``,
``rem``, labels) so tests can check that every emitted argument is exactly one argv word.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Characters that never need quoting in a command argument (netsh key=value pairs, addresses, CIDRs).
_PLAIN = re.compile(r"^[A-Za-z0-9._:/*,=+@-]+$")
# A quote cannot be escaped inside quotes; no control characters; and nothing outside ASCII: cmd
# reads a .cmd file in the OEM code page, where in a DBCS page (GBK, Shift-JIS) a stray lead byte
# from UTF-8 text can swallow the next byte, such as the caret that escapes a '&'.
_FORBIDDEN = re.compile(r"[\"\x00-\x1f\x7f-\U0010ffff]")
_ECHO_PLAIN = re.compile(r"[A-Za-z0-9._:/*,=+@ -]*\Z")  # nothing here means anything to echo
_ECHO_SPECIAL = re.compile(r"([\^&|<>()\"])")
BUILTINS = frozenset({"call", "echo", "exit", "for", "goto", "if", "rem", "set", "setlocal", "endlocal"})


class UnsafeValue(ValueError):
    """A value that cannot be written into a batch line without changing its meaning."""


def arg(value: str) -> str:
    """`value` as one argv word of a program started from a batch file.

    Plain values pass unchanged; others are double-quoted, with ``%`` doubled (phase 1 expands
    it even inside quotes) and trailing backslashes doubled (so they do not escape the closing
    quote). A double quote or a control character cannot be made safe and is refused.
    """
    if _PLAIN.match(value):
        return value
    if not value or _FORBIDDEN.search(value):
        raise UnsafeValue(f"{value!r} cannot be quoted safely for cmd")
    body = value.replace("%", "%%")
    if body.endswith("\\"):
        body += "\\" * (len(body) - len(body.rstrip("\\")))
    return f'"{body}"'


def kv(key: str, value: str) -> str:
    """A netsh ``key=value`` argument whose value may need quoting: ``name="netfwd a b"``."""
    quoted = arg(value)
    return f"{key}={quoted}"


def echo_text(text: str) -> str:
    """`text` for ``echo``, which prints its raw rest of line: every special character caret-escaped."""
    if _ECHO_PLAIN.match(text):
        return text
    if re.search(r"[\x00-\x1f\x7f-\U0010ffff]", text):
        raise UnsafeValue(f"{text!r} cannot be echoed safely by cmd")
    return _ECHO_SPECIAL.sub(r"^\1", text.replace("%", "%%"))


_PERCENT = re.compile(r"%%|%(?:~[a-z]*)?[0-9*]|%([^%\r\n]*)%|%")


def expand_percent(line: str, env: dict[str, str] | None = None) -> str:
    """Phase 1 in a batch file: ``%%`` -> ``%``; ``%VAR%`` -> its value (undefined: nothing);
    batch arguments (``%1``, ``%~2``, ``%*``) are kept as written (they exist only inside a call);
    a lone ``%`` is dropped."""
    if "%" not in line:
        return line
    upper = {k.upper(): v for k, v in (env or {}).items()}

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "%%":
            return "%"
        if match.group(1) is not None:
            return upper.get(match.group(1).upper(), "")
        return "" if token == "%" else token

    return _PERCENT.sub(one, line)


def split_argv(command_line: str) -> list[str]:
    """Split a command line the way the Microsoft C runtime (CommandLineToArgvW) does."""
    if '"' not in command_line:  # backslashes are literal unless they precede a quote
        return _ARG_SPACES.split(command_line.strip(" \t")) if command_line.strip(" \t") else []
    args: list[str] = []
    i, n = 0, len(command_line)
    while True:
        while i < n and command_line[i] in " \t":
            i += 1
        if i >= n:
            return args
        word: list[str] = []
        quoted = False
        while i < n:
            char = command_line[i]
            if char in " \t" and not quoted:
                break
            if char == "\\":
                run = len(command_line[i:]) - len(command_line[i:].lstrip("\\"))
                if command_line[i + run:i + run + 1] == '"':
                    word.append("\\" * (run // 2))
                    if run % 2:
                        word.append('"')
                        i += run + 1
                    else:
                        i += run
                    continue
                word.append("\\" * run)
                i += run
            elif char == '"':
                if quoted and command_line[i + 1:i + 2] == '"':  # "" inside quotes: a literal quote
                    word.append('"')
                    i += 2
                else:
                    quoted = not quoted
                    i += 1
            else:
                word.append(char)
                i += 1
        args.append("".join(word))


@dataclass
class Command:
    """One simple command as cmd would run it."""

    text: str  # the command line after phases 1 and 2 (carets consumed, quotes kept)
    argv: list[str]  # what the program receives (C runtime rules)
    redirects: list[str] = field(default_factory=list)  # e.g. [">nul", "2>&1"]
    line: int = 0  # 1-based physical line where the command starts
    depth: int = 0  # nesting in parentheses / if / for bodies: 0 = runs unconditionally
    kind: str = "exec"  # exec | echo | rem | label | if | for | call | exit | set | ...
    head: str = ""  # for `if` and `for`: the condition / loop clause (the body follows as commands)
    op: str = ""  # the operator joining it to the previous command: "", "&", "&&", "||" or "|"

    @property
    def unconditional(self) -> bool:
        """Runs whatever happened before: top level, not after && or || (nor in a pipe)."""
        return self.depth == 0 and self.op in ("", "&")

    @property
    def name(self) -> str:
        return self.argv[0].lower() if self.argv else ""

    @property
    def echo(self) -> str:
        """What ``echo`` prints (the raw rest of the line after one delimiter)."""
        return self.text.lstrip(" \t@")[5:] if self.kind == "echo" else ""


class CmdSyntaxError(ValueError):
    pass


class _Lexer:
    """Phase 2 over a whole script, keeping line numbers; one instance per tokenize() call."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.line = 1
        self.parens = 0  # open ( ... ) blocks: only inside one is ')' special and a newline not the end
        self.out: list[Command] = []

    # -- helpers -------------------------------------------------------------------------
    def peek(self, k: int = 0) -> str:
        return self.s[self.i + k] if self.i + k < len(self.s) else ""

    def advance(self, k: int = 1) -> str:
        chunk = self.s[self.i:self.i + k]
        self.line += chunk.count("\n")
        self.i += k
        return chunk

    def skip_blank(self) -> None:
        """Token delimiters before a command: whitespace, and the '@' that hides its echo."""
        self.i = _DELIMITERS.match(self.s, self.i).end()  # type: ignore[union-attr]  # the pattern matches the empty string too

    def at_line_end(self) -> bool:
        s, i = self.s, self.i
        return i >= len(s) or s[i] == "\n" or (s[i] == "\r" and s[i + 1:i + 2] == "\n")

    def eat_line_end(self) -> None:
        if self.peek() == "\r":
            self.advance()
        if self.peek() == "\n":
            self.advance()

    # -- grammar -------------------------------------------------------------------------
    def script(self) -> list[Command]:
        while self.peek():
            self.sequence(depth=0, block=False)
            if not self.at_line_end():
                raise CmdSyntaxError(f"line {self.line}: unexpected {self.peek()!r}")
            self.eat_line_end()
        return self.out

    def sequence(self, depth: int, block: bool) -> None:
        """Commands joined by & && || |; inside a ( ... ) block, newlines join them too."""
        op = ""
        while True:
            first = len(self.out)
            self.command(depth)
            if op and len(self.out) > first:
                self.out[first].op = op
            if self.peek() in ("&", "|") and self.peek():
                op = self.advance()
                if self.peek() == op:
                    op += self.advance()
                continue
            op = ""
            if block and self.at_line_end() and self.peek():
                self.eat_line_end()
                continue
            return

    def command(self, depth: int) -> None:
        self.skip_blank()
        redirects = self.redirections()
        first = len(self.out)
        if self.peek() == "(":
            self.advance()
            self.parens += 1
            self.sequence(depth + 1, block=True)
            self.skip_blank()
            if self.peek() != ")":
                raise CmdSyntaxError(f"line {self.line}: '(' without ')'")
            self.advance()
            self.parens -= 1
            self.skip_blank()
            after = self.redirections()  # `( ... )>file` redirects every command of the block
            for inner in self.out[first:]:
                inner.redirects += after
            return
        if self.at_line_end() or self.peek() in ("&", "|", ")"):
            return
        if self.peek() == ":":  # a label (or a '::' comment): the rest of the line is not parsed
            self.rest_of_line(depth, "label")
            return
        word = _NAME.match(self.s, self.i)
        name = word.group(0).lower() if word else ""
        if name == "rem":
            self.rest_of_line(depth, "rem")
        elif name == "if":
            self.if_command(depth)
        elif name == "for":
            self.for_command(depth)
        else:
            self.simple(depth, redirects)

    def rest_of_line(self, depth: int, kind: str) -> None:
        start, line = self.i, self.line
        end = self.s.find("\n", start)
        self.i = len(self.s) if end < 0 else end - (self.s[end - 1] == "\r" and end - 1 >= start)
        text = self.s[start:self.i]
        self.out.append(Command(text, [text.split()[0] if kind == "rem" else text], line=line,
                                depth=depth, kind=kind))

    def redirections(self) -> list[str]:
        found: list[str] = []
        while True:
            match = _REDIRECT.match(self.s, self.i)
            if not match:
                return found
            found.append(re.sub(r"\s+", "", match.group(0)))
            self.advance(len(match.group(0)))
            self.skip_blank()

    def simple(self, depth: int, redirects: list[str]) -> None:
        line, s = self.line, self.s
        raw = ""
        while self.i < len(s):
            plain = _ORDINARY.match(s, self.i)
            if plain:
                raw += plain.group(0)
                self.i = plain.end()
                continue
            char = s[self.i]
            if char == "\n" or (char == "\r" and s[self.i + 1:self.i + 2] == "\n"):
                break
            if char == '"':  # quoted: literal up to the closing quote (or the end of the line)
                quoted = _QUOTED.match(s, self.i)
                assert quoted is not None  # s[self.i] is a quote, which the pattern starts with
                raw += quoted.group(0)
                self.i = quoted.end()
            elif char == "^":
                self.i += 1
                if self.at_line_end():
                    raise CmdSyntaxError(f"line {self.line}: a caret at the end of a line continues it")
                raw += s[self.i]
                self.i += 1
            elif char in "&|" or (char == ")" and self.parens):
                break
            elif char in "<>":
                handle = ""
                if raw[-1:].isdigit() and (len(raw) == 1 or raw[-2] in " \t"):
                    handle, raw = raw[-1], raw[:-1]
                match = _REDIRECT.match(s, self.i)
                if not match:
                    raise CmdSyntaxError(f"line {self.line}: redirection without a target")
                redirects.append(handle + re.sub(r"\s+", "", match.group(0)))
                self.i = match.end()
            else:  # ')' outside a block, a lone '\r'
                raw += char
                self.i += 1
        argv = split_argv(raw)  # `echo a >nul` prints "a ": cmd keeps the space before a redirection
        name = argv[0].lower() if argv else ""
        kind = name if name in BUILTINS else "exec"
        self.out.append(Command(raw, argv, redirects, line=line, depth=depth, kind=kind))

    def word(self) -> str:
        """One whitespace-separated word (quotes group, a caret escapes), as cmd reads an IF condition."""
        match = _IF_WORD.match(self.s, self.i)
        assert match is not None  # the pattern matches the empty string too
        self.i = match.end()
        return match.group(1)

    def if_command(self, depth: int) -> None:
        line = self.line
        words = [self.word()]
        while True:
            word = self.word()
            words.append(word)
            if word.lower() not in ("/i", "not"):
                break
        if word.lower() in ("errorlevel", "exist", "defined", "cmdextversion"):
            words.append(self.word())
        elif "==" not in word:
            words += [self.word(), self.word()]
        text = " ".join(words)
        self.out.append(Command(text, split_argv(text), line=line, depth=depth, kind="if",
                                head=" ".join(words[1:])))
        self.sequence(depth + 1, block=False)
        self.skip_blank()
        if _ELSE.match(self.s, self.i):
            self.advance(4)
            self.sequence(depth + 1, block=False)

    def for_command(self, depth: int) -> None:
        line, start = self.line, self.i
        quoted, level = False, 0
        while self.peek() and not self.at_line_end():
            char = self.peek()
            if char == '"':
                quoted = not quoted
            elif not quoted and char == "(":
                level += 1
            elif not quoted and char == ")":
                level -= 1
            elif not quoted and level == 0 and _DO.match(self.s, self.i):
                break
            elif not quoted and char == "^":
                self.advance()
            self.advance()
        clause = self.s[start:self.i]
        do = _DO.match(self.s, self.i)
        if not do:
            raise CmdSyntaxError(f"line {line}: for without do")
        self.advance(len(do.group(0)))
        self.out.append(Command(clause, split_argv(clause), line=line, depth=depth, kind="for",
                                head=clause[3:].strip()))
        self.sequence(depth + 1, block=False)


_DELIMITERS = re.compile(r"[ \t@;,=]*")
_ARG_SPACES = re.compile(r"[ \t]+")
_NAME = re.compile(r"[^\s&|<>()\"^]+")
_ELSE = re.compile(r"else\b", re.IGNORECASE)
_IF_WORD = re.compile(r'[ \t]*((?:"[^"\r\n]*"?|\^[^\r\n]|[^ \t\r\n"^])*)')
_ORDINARY = re.compile(r'[^"^&|<>)\r\n]+')
_QUOTED = re.compile(r'"[^"\r\n]*"?')
_REDIRECT = re.compile(r"[0-9]?(?:>>?|<)(?:&[0-9]|[ \t]*[^\s&|<>()]+)")
_DO = re.compile(r"[ \t]+do[ \t]", re.IGNORECASE)


def tokenize(script: str, env: dict[str, str] | None = None) -> list[Command]:
    """Every command in a batch script, in order, as cmd would see them (phases 1 and 2, then argv).

    Commands inside blocks, `if` and `for` bodies are listed too, with ``depth > 0``.
    """
    expanded = "".join(expand_percent(line, env) for line in script.splitlines(keepends=True))
    return _Lexer(expanded).script()
