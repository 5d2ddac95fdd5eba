"""Read a whitelist SOURCE (a file, or `live`) into a :class:`Parsed`, detecting its format."""

from __future__ import annotations

from netfwd.errors import InputError
from netfwd.whitelist.detect import detect
from netfwd.whitelist.model import Parsed
from netfwd.inputfile import read_text
from netfwd.whitelist.sources import FORMATS, Context, parse_text

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
