"""Reading a user-named input file: bounded, so a huge file (or /dev/zero) is refused, never read whole."""

from __future__ import annotations

from pathlib import Path

from netfwd.errors import InputError


def read_capped(path: str | Path, limit: int, kind: str = "") -> bytes:
    """At most `limit` bytes of `path`; unreadable or larger files are one-line InputErrors.

    `kind` ("manifest", "netfwd Windows report") words the messages for the reader.
    """
    name = str(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as problem:
        what = f"cannot read the {kind}" if kind else "cannot read"
        raise InputError(f"{what}: {problem.strerror or problem}", file=name) from None
    if len(raw) > limit:
        size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit} bytes"
        why = f": not a {kind}" if kind else "; refusing to parse it"
        raise InputError(f"is larger than {size}{why}", file=name)
    return raw


def utf8_line(raw: bytes, problem: UnicodeDecodeError) -> int:
    """The line on which undecodable bytes start."""
    return raw.count(b"\n", 0, problem.start) + 1


def read_utf8(path: str | Path, limit: int, kind: str = "") -> str:
    """`read_capped`, decoded as UTF-8; undecodable bytes are an InputError naming their line."""
    raw = read_capped(path, limit, kind)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as problem:
        what = f"the {kind} is not valid UTF-8" if kind else "is not valid UTF-8"
        raise InputError(what, file=str(path), line=utf8_line(raw, problem)) from None


MAX_TEXT = 256 * 1024 * 1024  # a dump or whitelist: a 1,000,000-rule iptables dump is ~150 MB


def read_text(path: str) -> str:
    """A firewall dump or whitelist as text: UTF-8 (a BOM is dropped), or UTF-16 with its BOM
    (netsh output saved by PowerShell's `>`); at most MAX_TEXT bytes."""
    raw = read_capped(path, MAX_TEXT)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        try:
            return raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else _fail(raw, problem, path)
        except UnicodeDecodeError:
            return _fail(raw, problem, path)


def _fail(raw: bytes, problem: UnicodeDecodeError, path: str) -> str:
    raise InputError("is not valid UTF-8", file=path, line=utf8_line(raw, problem)) from None
