"""Write a measured table into the README between its `<!-- NAME:start -->` and `<!-- NAME:end -->` markers."""

from __future__ import annotations

import pathlib

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def replace_block(name: str, table: str) -> bool:
    """Put `table` between the markers of block `name`; False (README unchanged) if they are missing."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = README.read_text()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    README.write_text(head + start + "\n" + table + end + rest.split(end, 1)[1])
    return True
