"""Tables for people: the one renderer of the commands' column output.

Owns: lining up rows of text cells in columns (two spaces apart, left- or
right-aligned, trailing blanks trimmed). Never does: decide what a cell says;
each command formats its own cells and adds its own summary lines.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def table(rows: Sequence[Sequence[str]], *, right: Collection[int] = (),
          min_widths: Sequence[int] = (), indent: str = "") -> list[str]:
    """The lines of ``rows`` (the first is the header) in columns.

    ``right`` names the columns aligned to the right (numbers); ``min_widths``
    keeps columns at least that wide, so a table redrawn every round does not
    jump when its contents change.
    """
    if not rows:
        return []
    count = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(count)]
    for i, least in enumerate(min_widths[:count]):
        widths[i] = max(widths[i], least)
    return [indent + "  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                               ).rstrip()
            for row in rows]
