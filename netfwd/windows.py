"""Facts about a Windows relay read from the text its own tools print (no Windows needed here).

`netfwd doctor --windows-report` and the Windows dialects' round-trip tests share these parsers:
the output of ``netsh interface portproxy show all`` (localised titles, one section per table) and
of ``netsh interface ipv4 show excludedportrange protocol=tcp``. The parsers key on structure
(a dashed rule line, numeric columns), never on the localised words around it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from netaddr import AddrFormatError, IPAddress

TABLES = ("v4tov4", "v4tov6", "v6tov4", "v6tov6")
WILDCARD = "*"  # how netsh stores (and shows) an omitted listenaddress; not the same entry as 0.0.0.0

_DASHES = re.compile(r"^\s*-{3,}(?:\s+-{3,})+\s*$")  # "--------------- ----------  ---..."
_FAMILIES = re.compile(r"ipv([46])", re.IGNORECASE)  # "Listen on ipv4:  Connect to ipv6:" in most locales
_PORT = re.compile(r"^[0-9]{1,5}$")


def table_name(listen_version: int, connect_version: int) -> str:
    """The portproxy table (``v4tov6`` ...) for a listen and a connect address family."""
    return f"v{listen_version}tov{connect_version}"


def normalise_address(text: str) -> str:
    """Canonical spelling of an address as netsh prints or takes it: IPs compressed and lower-case,
    the wildcard ``*`` kept, host names lower-cased (portproxy accepts names for connectaddress)."""
    if text == WILDCARD:
        return text
    try:
        return str(IPAddress(text))
    except (AddrFormatError, ValueError, TypeError):
        return text.lower()


def address_version(text: str) -> int | None:
    """4 or 6 for an IP address, None for the wildcard or a host name."""
    try:
        return IPAddress(text).version
    except (AddrFormatError, ValueError, TypeError):
        return None


class PortProxyEntry(NamedTuple):
    """One row of ``netsh interface portproxy show all``: listen socket -> connect socket."""

    listen_address: str  # "*" or an address
    listen_port: int
    connect_address: str
    connect_port: int
    table: str | None  # "v4tov4" ...; None when neither the title nor the addresses tell

    @property
    def key(self) -> tuple[str, int]:
        return (self.listen_address, self.listen_port)


def parse_portproxy_show(text: str) -> list[PortProxyEntry]:
    """Every entry of ``netsh interface portproxy show all`` (or ``show v4tov4`` ...), in order.

    Each section is a title naming the two families ("Listen on ipv4: Connect to ipv6:", localised),
    a column header, a dashed line, then rows of four whitespace-separated fields. The table comes
    from the ``ipv4``/``ipv6`` words of the title when present, otherwise from the rows' addresses.
    Lines that are not four fields with numeric ports (blank lines, notes) end a section's rows.
    """
    entries: list[PortProxyEntry] = []
    title_table: str | None = None
    in_rows = False
    for raw in text.splitlines():
        line = raw.strip().lstrip("\ufeff")
        if _DASHES.match(line):
            in_rows = True
            continue
        fields = line.split()
        if in_rows and len(fields) == 4 and _PORT.match(fields[1]) and _PORT.match(fields[3]):
            entries.append(_entry(fields, title_table))
            continue
        in_rows = False
        families = _FAMILIES.findall(line)
        if len(families) == 2:
            title_table = table_name(int(families[0]), int(families[1]))
    return entries


def _entry(fields: list[str], title_table: str | None) -> PortProxyEntry:
    listen, connect = normalise_address(fields[0]), normalise_address(fields[2])
    table = title_table
    if table is None:
        versions = (address_version(listen), address_version(connect))
        if None not in versions:
            table = table_name(*versions)  # type: ignore[arg-type]
    return PortProxyEntry(listen, int(fields[1]), connect, int(fields[3]), table)


class ExcludedRange(NamedTuple):
    """A TCP port range Windows reserves (Hyper-V, WinNAT, ...): nothing else may listen inside it."""

    start: int
    end: int
    administered: bool  # marked "*": added by an administrator (`add excludedportrange`)

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port <= self.end


def parse_excluded_ranges(text: str) -> list[ExcludedRange]:
    """The rows of ``netsh interface ipv4|ipv6 show excludedportrange protocol=tcp``.

    Rows are two port numbers, optionally followed by ``*`` (administered); everything else
    (the localised title, the header, the dashed line, the footnote) is skipped.
    """
    ranges = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) in (2, 3) and _PORT.match(fields[0]) and _PORT.match(fields[1]) \
                and (len(fields) == 2 or fields[2] == "*"):
            ranges.append(ExcludedRange(int(fields[0]), int(fields[1]), len(fields) == 3))
    return ranges


def decode_output(data: bytes) -> str:
    """Text of a captured Windows command output or report file, whatever encoding wrote it.

    Windows PowerShell 5.1 writes UTF-16LE with a BOM (`Out-File`, `>`), PowerShell 7 UTF-8, and a
    console redirect the OEM/ANSI code page (GBK on Chinese systems, cp1252/cp850 in Europe).
    """
    for bom, codec in ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(codec, errors="replace")
    if len(data) >= 4 and data[1:4:2] == b"\x00\x00" and data[0:1] != b"\x00":
        return data.decode("utf-16-le", errors="replace")  # UTF-16LE without a BOM
    for codec in ("utf-8", "gbk"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            continue
    return data.decode("cp1252", errors="replace")
