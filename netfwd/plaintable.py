"""Print a rich table of many plain-text rows in the time it takes to write them.

rich lays out and renders every cell through its renderable machinery (~0.3 ms a cell): a
10,000-forward `netfwd validate` spent ~7 s printing its table. When the output carries no styles
(not a colour terminal) and every cell is printable ASCII, the layout is decided by a handful of
rows: rich sizes a column by its widest line and its longest word. So rich lays out a *proxy* table
of just those rows (plus title and header), and the remaining rows are drawn with the same column
widths and box characters; a cell that does not fit is wrapped by rich itself. The result is
byte-for-byte what rich prints for the whole table (tests/test_plaintable.py holds them equal).
"""

from __future__ import annotations

from typing import Sequence

SMALL = 40  # below this many rows rich's own rendering is fast enough


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], console=None) -> None:
    """Print `rows` under `columns` as rich's default table (heavy head, cells folded when too wide)."""
    from rich.console import Console

    console = console or Console()
    plain = console.color_system is None and len(rows) > SMALL \
        and all(cell.isascii() and cell.isprintable() for row in rows for cell in row)
    if not plain:
        console.print(_rich_table(title, columns, rows))
        return
    console.file.write(plain_text(title, columns, rows, console))
    console.file.flush()


def _rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # "[fd00::5]:6443" is not rich markup
    return table


def _proxy_rows(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[Sequence[str]]:
    """The rows that decide rich's column widths: per column, the widest cell and the longest word."""
    chosen: dict[int, None] = {}
    for index in range(len(columns)):
        widest = max(range(len(rows)), key=lambda r: len(rows[r][index]))
        wordiest = max(range(len(rows)), key=lambda r: max(map(len, rows[r][index].split()), default=0))
        chosen[widest] = chosen[wordiest] = None
    return [rows[r] for r in sorted(chosen)]


def plain_text(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], console) -> str:
    """What rich prints for the table without styles, computed from a proxy table of a few rows."""
    from rich.text import Text

    with console.capture() as capture:
        console.print(_rich_table(title, columns, _proxy_rows(columns, rows)))
    lines = capture.get().split("\n")
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    head_end = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    widths = [len(part) for part in lines[top][1:-1].split("┳")]
    if min(widths) < 3:  # squeezed below one character a cell: leave such layouts to rich
        with console.capture() as capture:
            console.print(_rich_table(title, columns, rows))
        return capture.get()
    out = lines[:head_end + 1]
    folded: dict[tuple[str, int], list[str]] = {}  # columns repeat the same long cells
    for row in rows:
        cells = []
        for cell, width in zip(row, widths):
            inner = width - 2
            if len(cell) <= inner:
                cells.append([cell.ljust(inner)])
                continue
            lines_of = folded.get((cell, inner))
            if lines_of is None:
                wrapped = Text(cell).wrap(console, inner, justify="left", overflow="fold")
                lines_of = folded[cell, inner] = [line.plain.ljust(inner) for line in wrapped]
            cells.append(lines_of)
        for depth in range(max(map(len, cells))):
            out.append("│" + "│".join(f" {c[depth] if depth < len(c) else ' ' * (w - 2)} "
                                      for c, w in zip(cells, widths)) + "│")
    out.append("└" + "┴".join("─" * w for w in widths) + "┘")
    return "\n".join(out) + "\n"
