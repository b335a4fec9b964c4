"""Markdown tables of typed results: one table renderer (`markdown_table`, columns as data) and the one
comparison table every report prints (`comparison_table`: M1's report, `lbt m2 eval`, `lbt m3`,
``eval/bench_m3.py``).

Example:
    >>> from lbt_dspy.stats import paired_difference
    >>> from lbt_dspy.results import PairedComparison
    >>> c = PairedComparison.of("tuned", "base", paired_difference([1, 1, 0, 1], [0, 1, 0, 1], resamples=200))
    >>> print(comparison_table([c], "comparison (4 problems)"), end="")
    | comparison (4 problems) | difference (accuracy points) [95% paired CI] | wins / losses / ties | paired problems | reading |
    |---|---|---|---|---|
    | tuned − base | +25.0 pts [+0.0, +75.0] | 1 / 0 / 3 | 4 | not resolved: the interval contains 0 |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from .results import PairedComparison


@dataclass(frozen=True)
class Column:
    """One column of a markdown table.

    Args:
        header: The header cell.
        cell: The cell of a row.

    Example:
        >>> cols = [Column("a", lambda r: str(r[0])), Column("b", lambda r: str(r[1]))]
        >>> print(markdown_table([(1, 2)], cols), end="")
        | a | b |
        |---|---|
        | 1 | 2 |
    """

    header: str
    cell: Callable[[Any], str]


def markdown_table(rows: Iterable, columns: Sequence[Column]) -> str:
    """A markdown table: a header line, a separator, one line per row (newline-terminated)."""
    lines = ["| " + " | ".join(c.header for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(c.cell(r) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def comparison_rows(comparisons: Iterable[PairedComparison]) -> list[list[PairedComparison]]:
    """Consecutive comparisons of the same a, b (and group) as one row: e.g. accuracy and F1 of one pair."""
    rows: list[list[PairedComparison]] = []
    for c in comparisons:
        if rows and (rows[-1][0].group, rows[-1][0].a, rows[-1][0].b) == (c.group, c.a, c.b):
            rows[-1].append(c)
        else:
            rows.append([c])
    return rows


def reading(row: Sequence[PairedComparison], names: Sequence[str]) -> str:
    """Whether 0 is outside the interval: with one difference column, 'resolved: the interval excludes 0' or
    'not resolved: the interval contains 0'; with several, which ones are resolved."""
    if len(names) == 1:
        return ("resolved: the interval excludes 0" if row[0].excludes_zero()
                else "not resolved: the interval contains 0")
    resolved = [name for name, c in zip(names, row) if c.excludes_zero()]
    if resolved:
        return f"resolved ({', '.join(resolved)}): the interval excludes 0"
    return "not resolved: " + ("both intervals contain 0" if len(names) == 2 else "every interval contains 0")


def comparison_table(comparisons: Iterable[PairedComparison], label: str, *,
                     differences: Sequence[tuple[str, str]] = (("accuracy", "difference (accuracy points)"),),
                     group: str | None = None, wins: str = "wins / losses / ties", paired: bool = True) -> str:
    """The paired comparisons as a markdown table: a − b, each difference with its 95% paired interval,
    wins / losses / ties, the number of paired problems, and the reading.

    Args:
        comparisons: The comparisons; consecutive ones of the same a, b and group share a row and fill the
            difference columns in order (e.g. accuracy then F1).
        label: The comparison column's header, e.g. ``"comparison (181 problems)"``.
        differences: (name, header) of each difference column; " [95% paired CI]" is added to the header,
            the name is what the reading cites when there are several.
        group: The header of a first column holding each comparison's group (e.g. ``"task"``); None: no column.
        wins: The wins column's header (its cells: the first difference's wins / losses / ties).
        paired: Whether to show the paired problems column (the first difference's n).
    """
    names = [name for name, _ in differences]
    columns = [Column(group, lambda r: str(r[0].group))] if group else []
    columns.append(Column(label, lambda r: f"{r[0].a} − {r[0].b}"))
    columns += [Column(f"{header} [95% paired CI]", lambda r, i=i: r[i].text if i < len(r) else "-")
                for i, (_, header) in enumerate(differences)]
    columns.append(Column(wins, lambda r: f"{r[0].wins} / {r[0].losses} / {r[0].ties}"))
    if paired:
        columns.append(Column("paired problems", lambda r: str(r[0].n)))
    columns.append(Column("reading", lambda r: reading(r, names)))
    return markdown_table(comparison_rows(comparisons), columns)
