"""A tiny Markdown table printer shared by the benchmarks."""

from __future__ import annotations

__all__ = ["format_table", "print_table"]


def format_table(title: str, headers: list[str], rows: list[list[str]]) -> str:
    """Render a Markdown table under a ``###`` title; columns are padded to line up."""
    widths = [len(h) for h in headers]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, expected {len(headers)}: {row}")
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([f"### {title}", "", line(headers), rule, *map(line, rows), ""])


def print_table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    print(format_table(title, headers, rows), flush=True)
