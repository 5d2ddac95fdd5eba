"""Read a whitelist SOURCE (a file, or `live`) into a :class:`Parsed`, detecting its format."""

from __future__ import annotations

from netfwd.errors import InputError
from netfwd.whitelist.detect import detect
from netfwd.whitelist.model import Parsed
from netfwd.inputfile import read_capped, utf8_line
from netfwd.whitelist.sources import FORMATS, Context, parse_text

MAX_BYTES = 256 * 1024 * 1024  # a 1,000,000-rule iptables dump is ~150 MB


def read_text(path: str) -> str:
    raw = read_capped(path, MAX_BYTES)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as problem:
        try:  # netsh output saved by PowerShell's `>` is UTF-16
            return raw.decode("utf-16") if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else _fail(raw, problem, path)
        except UnicodeDecodeError:
            return _fail(raw, problem, path)


def _fail(raw: bytes, problem: UnicodeDecodeError, path: str) -> str:
    raise InputError("is not valid UTF-8", file=path, line=utf8_line(raw, problem)) from None


def load(source: str, context: Context, fmt: str | None = None, netns: str | None = None) -> Parsed:
    """Parse `source` (a path, or `live`) with `fmt` or the detected format."""
    if source == "live":
        from netfwd.whitelist.sources.live import read_live

        return read_live(context, netns)
    if netns is not None:
        raise InputError("only applies to --against live", field="--netns")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"{fmt!r} is not a source format; choose from {', '.join(FORMATS)}", field="--format")
    text = read_text(source)
    if not text.strip():
        raise InputError("is empty", file=source)
    from netfwd.whitelist.verify import gc_paused

    with gc_paused():
        return parse_text(text, source, fmt or detect(text), context)
