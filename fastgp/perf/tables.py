"""Markdown tables of result rows, shared by the benchmark's and the training run's reports."""

from __future__ import annotations


def table_lines(columns: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table: a header of ``columns``, then one line per row of ready cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]
