"""A plain whitelist file: one IP, CIDR or `first-last` range per line (commas also separate).

`#` and `;` start comments. This is also the format `netfwd whitelist render --dialect list` would
produce, and what people paste from the vendor's table ("1.2.3.4, 5.6.7.8").
"""

from __future__ import annotations

import re

from netfwd.errors import InputError
from netfwd.whitelist.addresses import parse_token
from netfwd.whitelist.model import Entry, Group, Origin, Parsed

_SPLIT = re.compile(r"[,\s]+")


def parse(text: str, file: str, context=None) -> Parsed:
    entries: list[Entry] = []
    single = Entry.single
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        for token in _SPLIT.split(line) if ("," in line or " " in line or "\t" in line) else (line,):
            if not token:
                continue
            try:
                version, first, last = parse_token(token)
            except ValueError as problem:
                raise InputError(str(problem), file=file, line=number, field="entry") from None
            entries.append(single(version, first, last, token, Origin(file, number)))
    return Parsed("list", file, (Group("list", tuple(entries)),))
