"""The one plain-text table printer of every command (`fluid`, `solve`/`show`/`check`, `simulate`,
`compare`, `demo`, `run`).

Alignment rule: the first column (the row's name) is left-aligned, every other column is
right-aligned so that numbers line up on their last digit; columns are two spaces apart and a
dashed rule sits under the header.
"""

from __future__ import annotations


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """`header` and `rows` (lists of already formatted cells, one per column) as aligned text."""
    ncols = len(header)
    for i, row in enumerate(rows):
        if len(row) != ncols:
            raise ValueError(f"table row {i} has {len(row)} cells, the header {ncols}")
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(ncols)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])
