"""Run a netsh-dialect batch script against :class:`~netfwd.dialects.winbase.WindowsState`.

No Windows runs here, so the `.cmd` scripts are read back by executing the subset of batch they use
over the tokens :mod:`netfwd.dialects.cmdsyntax` produces: ``set``, ``echo`` (to stderr or a file),
``if`` (``defined``, ``errorlevel``, string ``==``), ``for /f`` over a command's output, ``findstr``
on a file or a pipe, ``del``, ``exit /b``; netsh changes go to the state. Read-only commands print
what :meth:`WindowsState.command_output` says Windows prints (the registry's firewall switches,
``netstat``, ``portproxy show``); other commands (``sc``, ``net``) succeed and print nothing.
Variables the script sets once before use (temporary file names) are given to phase 1 up front.
"""

from __future__ import annotations

import dataclasses
import re

from netfwd.dialects import cmdsyntax as cmd
from netfwd.dialects.winbase import ScriptError, ScriptExit, WindowsState

# %VAR% values for phase 1 (cmdsyntax expands a whole script at once): the scripts set these names
# to temporary file paths before any line uses them.
MODEL_ENV = {"TEMP": "C:\\Temp", "RANDOM": "1", "NETFWD_SHOWN": "C:\\Temp\\shown.txt",
             "NETFWD_LISTENING": "C:\\Temp\\listening.txt"}
_FOR = re.compile(r"""/f\s+"([^"]*)"\s+%([A-Za-z])\s+in\s+\('(.*)'\)\s*$""", re.IGNORECASE)
_COMPARE = re.compile(r'^(/i\s+)?(not\s+)?"([^"]*)"=="([^"]*)"$', re.IGNORECASE)
_ARG = re.compile(r"%%|%(~?)([0-9])")


class _Done(Exception):
    """`exit /b 0`: the script ends successfully."""


class Run:
    """One execution of a batch script: variables, errorlevel, files written, stderr lines."""

    def __init__(self, state: WindowsState, args: tuple[str, ...] = ()) -> None:
        self.state, self.args = state, args
        self.env: dict[str, str] = {}
        self.errorlevel = 0
        self.files: dict[str, list[str]] = {}
        self.stderr: list[str] = []
        self._index: tuple[list[str], int, set[str], set[str]] | None = None

    def run(self, text: str) -> None:
        """Execute to the first top-level `exit`; raises ScriptExit on a non-zero exit code."""
        commands = cmd.tokenize(self.with_arguments(text), MODEL_ENV)
        try:
            self.block(commands, 0, len(commands), 0)
        except _Done:
            pass

    # -- structure -----------------------------------------------------------------------------
    def block(self, commands: list[cmd.Command], lo: int, hi: int, level: int) -> None:
        """Commands lo..hi, all at depth >= level; deeper runs are bodies and ( ) groups."""
        i = lo
        while i < hi:
            command = commands[i]
            end = _extent(commands, i, hi)
            if command.depth > level:  # a ( ) group
                if self.joined(command.op):
                    self.block(commands, i, end, level + 1)
            elif self.joined(command.op):
                if command.kind == "if":
                    if self.condition(command.head):
                        self.block(commands, i + 1, end, level + 1)
                elif command.kind == "for":
                    self.loop(command, commands[i + 1:end], level + 1)
                else:
                    self.simple(command)
                    end = i + 1  # a following deeper run is a group joined by its own operator
            i = end

    def joined(self, op: str) -> bool:
        """Whether a command joined by `op` runs after the previous one (a pipe: as its reader)."""
        return op in ("", "&", "|") or (op == "&&") == (self.errorlevel == 0)

    def condition(self, head: str) -> bool:
        head = head.strip()
        negate = head.lower().startswith("not ")
        rest = head[4:].strip() if negate else head
        words = rest.split(None, 1)
        if words and words[0].lower() == "defined":
            result = words[1].strip().upper() in self.env
        elif words and words[0].lower() == "errorlevel":
            result = self.errorlevel >= int(words[1])
        else:
            match = _COMPARE.match(head)
            if not match:
                raise ScriptError(f"if {head!r}: a condition the model does not know")
            a, b = match.group(3), match.group(4)
            equal = a.lower() == b.lower() if match.group(1) else a == b
            return equal != bool(match.group(2))
        return result != negate

    def loop(self, command: cmd.Command, body: list[cmd.Command], level: int) -> None:
        match = _FOR.match(command.head)
        if not match:
            raise ScriptError(f"line {command.line}: for {command.head!r}: only `for /f` over a command is modelled")
        options, letter, source = match.groups()
        tokens = _tokens(options)
        lines = self.pipeline(_uncaret(source))
        for line in lines:
            fields = line.split()
            if not fields or tokens[0] > len(fields):
                continue  # for /f skips empty lines and lines without the first requested token
            values = {chr(ord(letter) + n): (fields[t - 1] if t <= len(fields) else "") for n, t in enumerate(tokens)}
            substituted = [_substitute(c, values) for c in body]
            self.block(substituted, 0, len(substituted), level)

    # -- commands --------------------------------------------------------------------------------
    def simple(self, command: cmd.Command) -> None:
        argv = command.argv
        name = argv[0].lower() if argv else ""
        self.errorlevel = 0
        if command.kind == "exit":
            code = int(argv[2]) if len(argv) > 2 and argv[1].lower() == "/b" else 0
            if code:
                raise ScriptExit(code, self.stderr)
            raise _Done
        if command.kind == "echo":
            self.echo(command)
        elif command.kind == "set":
            name_value = " ".join(argv[1:])
            key, _, value = name_value.partition("=")
            if value:
                self.env[key.upper()] = value
            else:
                self.env.pop(key.upper(), None)
        elif name in ("netsh", "netsh.exe"):
            lowered = [a.lower() for a in argv[1:5]]
            if lowered == ["advfirewall", "firewall", "show", "rule"]:
                wanted = dict(a.split("=", 1) for a in argv[5:] if "=" in a).get("name", "")
                self.errorlevel = 0 if any(r.display_name.lower() == wanted.lower() for r in self.state.rules) else 1
            else:
                self.state.netsh(argv[1:])
        elif name == "findstr" and command.op != "|":
            patterns, options, files = _findstr_arguments(argv)
            lines = self.files.get(files[0].lower(), []) if files else []
            self.errorlevel = 0 if self.search(lines, patterns, options) else 1
        elif name == "del":
            self.files.pop(argv[-1].lower(), None)

    def search(self, lines: list[str], patterns: list[str], options: set[str]) -> bool:
        """findstr over a file; whole-line and leading-word literal searches use an index of the
        file (a script checks every forward against one listing: linear, not quadratic)."""
        literal = {"/l", "/i"} <= options and ("/x" in options or ("/b" in options and all(
            p.endswith(" ") for p in patterns)))
        if not literal:
            return _findstr(lines, patterns, options)
        if self._index is None or self._index[0] is not lines or self._index[1] != len(lines):
            whole = {line.lower() for line in lines}
            heads = {line.lower()[:i + 1] for line in lines for i, c in enumerate(line) if c == " "}
            self._index = (lines, len(lines), whole, heads)
        found = self._index[2] if "/x" in options else self._index[3]
        return any(p.lower() in found for p in patterns)

    def echo(self, command: cmd.Command) -> None:
        text = command.echo
        targets = [r for r in command.redirects if r.startswith((">", "1>")) and not r.endswith(("nul", "&2"))]
        if ">&2" in command.redirects or "1>&2" in command.redirects:
            self.stderr.append(text.strip())
        elif targets:
            path = targets[-1].lstrip("1>").strip('"').lower()
            self.files.setdefault(path, []).append(text)

    def pipeline(self, source: str) -> list[str]:
        """The lines a `for /f` reads from a command line: the first command's output, through findstr."""
        stages = [cmd.split_argv(_drop_redirects(stage)) for stage in source.split("|")]
        output = self.state.command_output(stages[0])
        lines = [] if output is None else output.splitlines()
        for stage in stages[1:]:
            if not stage or stage[0].lower() != "findstr":
                raise ScriptError(f"{source!r}: only findstr is modelled after a pipe")
            patterns, options, _ = _findstr_arguments(stage)
            lines = [line for line in lines if _findstr([line], patterns, options)]
        return lines

    def with_arguments(self, text: str) -> str:
        """Phase 1 for the script's parameters (%1, %~1): replaced by its arguments, `%%1` left alone.
        Subroutines (`call :label`) are not run, so every parameter is the script's own."""
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "%%":
                return "%%"
            index = int(match.group(2)) - 1
            value = self.args[index] if 0 <= index < len(self.args) else ""
            return (value.strip('"') if match.group(1) else value).replace("%", "%%")

        return _ARG.sub(one, text)


def _extent(commands: list[cmd.Command], i: int, hi: int) -> int:
    """End of the statement starting at i: it and every following command nested deeper."""
    depth, j = commands[i].depth, i + 1
    while j < hi and commands[j].depth > depth:
        j += 1
    return j


def _tokens(options: str) -> list[int]:
    spec = dict(o.split("=", 1) for o in options.split() if "=" in o).get("tokens", "1")
    out: list[int] = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        out += list(range(int(low), int(high or low) + 1))
    return out


def _substitute(command: cmd.Command, values: dict[str, str]) -> cmd.Command:
    def sub(text: str) -> str:
        for letter, value in values.items():
            text = text.replace(f"%{letter}", value)
        return text

    return dataclasses.replace(command, text=sub(command.text), argv=[sub(a) for a in command.argv],
                               head=sub(command.head), redirects=[sub(r) for r in command.redirects])


def _uncaret(text: str) -> str:
    """Phase 2 on a `for /f` command: a caret outside quotes escapes the next character."""
    out, quoted, i = [], False, 0
    while i < len(text):
        char = text[i]
        if char == '"':
            quoted = not quoted
        elif char == "^" and not quoted and i + 1 < len(text):
            i += 1
            char = text[i]
        out.append(char)
        i += 1
    return "".join(out)


def _drop_redirects(stage: str) -> str:
    return re.sub(r"\s[0-9]?>\S*", " ", stage)


def _findstr_arguments(argv: list[str]) -> tuple[list[str], set[str], list[str]]:
    patterns, options, files = [], set(), []
    for word in argv[1:]:
        if word.lower().startswith("/c:"):
            patterns.append(word[3:])
        elif word.startswith("/"):
            options.add(word.lower())
        else:
            files.append(word)
    if not ({"/l", "/r"} & options):
        raise ScriptError(f"findstr {argv[1:]!r}: say /l or /r (the default depends on the search string)")
    return patterns, options, files


def _findstr(lines: list[str], patterns: list[str], options: set[str]) -> bool:
    """Whether any line matches any pattern, as findstr /l or /r with /i, /b, /e, /x."""
    flags = re.IGNORECASE if "/i" in options else 0
    compiled = []
    for pattern in patterns:
        body = re.escape(pattern) if "/l" in options else pattern
        if "/x" in options:
            body = f"^(?:{body})$"
        elif "/b" in options:
            body = f"^(?:{body})"
        elif "/e" in options:
            body = f"(?:{body})$"
        compiled.append(re.compile(body, flags))
    return any(p.search(line) for line in lines for p in compiled)
