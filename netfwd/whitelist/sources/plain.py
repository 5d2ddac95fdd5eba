"""A plain whitelist file: one IP, CIDR or `first-last` range per line (commas also separate).

`#` and `;` start comments. This is also the format `netfwd whitelist render --dialect list` would
produce, and what people paste from the vendor's table ("1.2.3.4, 5.6.7.8").
"""

from __future__ import annotations

import re
import socket

from netfwd.errors import InputError
from netfwd.firewall.addresses import parse_token
from netfwd.whitelist.model import Entry, Group, Origin, Parsed

_SPLIT = re.compile(r"[,\s]+")


def parse(text: str, file: str, context=None) -> Parsed:
    entries: list[Entry] = []
    add = entries.append
    pton, inet = socket.inet_pton, socket.AF_INET
    from_bytes = int.from_bytes
    new = tuple.__new__  # NamedTuple construction without its Python-level __new__: 2x faster here
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw
        if "#" in line or ";" in line:
            line = line.split("#", 1)[0].split(";", 1)[0]
        line = line.strip()
        if not line:
            continue
        tokens = _SPLIT.split(line) if ("," in line or " " in line or "\t" in line) else (line,)
        for token in tokens:
            if not token:
                continue
            if ":" not in token and "-" not in token:  # the common IPv4 cases, without the general parser
                address, slash, length = token.partition("/")
                try:
                    value = from_bytes(pton(inet, address), "big")
                except (OSError, ValueError):  # ValueError: an embedded NUL
                    value = -1  # parse_token explains what is wrong with it
                if value >= 0 and not slash:
                    add(new(Entry, (4, ((value, value),), token, new(Origin, (file, number, "")))))
                    continue
                if value >= 0 and length.isascii() and length.isdigit() and int(length) <= 32:
                    host = (1 << (32 - int(length))) - 1
                    if not value & host:
                        add(new(Entry, (4, ((value, value | host),), token, new(Origin, (file, number, "")))))
                        continue
            try:
                version, first, last = parse_token(token)
            except ValueError as problem:
                raise InputError(str(problem), file=file, line=number, field="entry") from None
            add(new(Entry, (version, ((first, last),), token, new(Origin, (file, number, "")))))
    return Parsed("list", file, (Group("list", tuple(entries)),))
