"""One exceptions module, so every caller and the CLI agree on what a failure means and its exit code.

Exit codes (documented in docs/cli.md):
  0  success / in sync / reachable
  1  a check found a problem (probe not reachable, doctor errors, whitelist gaps)
  2  bad input: the message names file, line and field
  3  the environment cannot do it (not root, tool missing, wrong firewall backend)
  4  `netfwd plan`: changes are pending
"""

from __future__ import annotations

import re

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_CHANGES_PENDING = 4


class NetfwdError(Exception):
    """Base of every error netfwd reports to a user (never with a traceback)."""

    exit_code = EXIT_FINDINGS


class ModelError(NetfwdError):
    """A value breaks a model rule; `field` is a dotted path such as ``forwards[0].listen.port``.

    The model does no I/O, so it knows the field but not the file or line; the spec loader
    turns it into an :class:`InputError` with both.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class InputError(NetfwdError):
    """Bad input from a file or an option, reported as one line: ``FILE:LINE: FIELD: message``."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.line, self.field, self.message = file, line, field, message
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        what = f"{self.field}: " if self.field else ""
        return visible(f"{where}{what}{self.message}")


# Control characters (a newline would forge a second report line, ESC drives the terminal), and the
# invisible or reordering format characters of Unicode (bidi overrides, zero-width spaces): shown
# escaped, so an error about a hostile name cannot be mistaken for anything else.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def visible(text: str) -> str:
    """`text` on one line with every control or invisible character spelled as an escape."""
    if not _INVISIBLE.search(text):
        return text
    return _INVISIBLE.sub(lambda m: repr(m.group())[1:-1] if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                          text)


class EnvironmentProblem(NetfwdError):
    """The host cannot do what was asked (not root, a tool missing, firewalld in the way)."""

    exit_code = EXIT_ENVIRONMENT


class UnsupportedByDialect(ModelError):
    """The spec asks for something a dialect cannot express (UDP on netsh, IPv6 on iptables, …)."""
