"""Figures, the table rows they make, the project's bars, and the printed
table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

MiB = 1024 * 1024


@dataclass
class Figure:
    """One measured number (or why there is none)."""

    value: float | None
    unit: str  # "/s", "ms", "MiB", "s"
    server_cpu: float | None = None  # fraction of one core
    gen_cpu: float | None = None
    error: str | None = None
    text: str | None = None  # shown instead of the formatted value
    #: The server's CPU by thread, in fractions of one core: its reactor's
    #: in user space and in the kernel, and its other threads'.
    threads: tuple[float, float, float] | None = None
    #: The share of the machine's CPU time that its host took meanwhile.
    stolen: float | None = None

    @classmethod
    def failed(cls, unit: str, error: str) -> Figure:
        return cls(None, unit, error=error)

    @classmethod
    def missing(cls, unit: str, text: str = "n/a") -> Figure:
        return cls(None, unit, text=text)

    def shown(self) -> str:
        if self.text is not None:
            return self.text
        if self.value is None:
            return "error" if self.error else "-"
        return number(self.value, self.unit)

    def cpu(self) -> str:
        if self.server_cpu is None or self.gen_cpu is None:
            return ""
        return f"{self.server_cpu * 100:.0f}/{self.gen_cpu * 100:.0f}"


def shown_stolen(figure: Figure) -> str:
    """What the host took of the machine's CPU during a figure's phase, as
    the progress lines show it: nothing below 1%."""
    stolen = figure.stolen
    return f", host took {stolen:.0%}" if stolen is not None and stolen >= 0.01 else ""


def number(value: float, unit: str) -> str:
    if unit == "/s":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M/s"
        if value >= 1e4:
            return f"{value / 1e3:.1f}k/s"
        return f"{value:,.0f}/s"
    if unit == "ms":
        return f"{value:.2f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value / MiB:,.0f} MiB"
    return f"{value:g}{unit}"


def median(figures: list[Figure]) -> Figure:
    """The median round; failed rounds are left out (and reported apart)."""
    good = [figure for figure in figures if figure.value is not None]
    if not good:
        return figures[0] if figures else Figure(None, "")
    ordered = sorted(good, key=lambda figure: figure.value or 0.0)
    middle = ordered[(len(ordered) - 1) // 2]
    if len(ordered) % 2 == 0:
        value = statistics.median(figure.value or 0.0 for figure in ordered)
        return Figure(
            value,
            middle.unit,
            middle.server_cpu,
            middle.gen_cpu,
            threads=middle.threads,
            stolen=middle.stolen,
        )
    return middle


def ratio(erq: Figure, other: Figure | None) -> float | None:
    if other is None or erq.value is None or not other.value:
        return None
    return erq.value / other.value


@dataclass
class Row:
    """One line of the table."""

    workload: str
    erq: Figure
    memcached: Figure | None = None
    ratio: float | None = None
    ratio_note: str = ""
    bar: str = ""
    holds: bool | None = None
    notes: list[str] = field(default_factory=list)


def at_least(row: Row, minimum: float) -> Row:
    """The bar: erq reaches ``minimum`` times its baseline."""
    row.bar = f">= {minimum:g}x"
    row.holds = None if row.ratio is None else row.ratio >= minimum
    return row


def at_most(row: Row, maximum: float, unit: str) -> Row:
    """The bar: erq's own figure stays at or under ``maximum``."""
    row.bar = f"<= {maximum:g} {unit}"
    value = row.erq.value
    row.holds = None if value is None else value <= maximum
    return row


HEADERS = (
    "workload",
    "erq",
    "memcached",
    "ratio",
    "bar",
    "holds",
    "cpu% erq",
    "cpu% mc",
)


def table(rows: list[Row]) -> str:
    """The one table, with erq's and memcached's server/generator CPU."""
    lines = [HEADERS]
    for row in rows:
        if row.ratio is None:
            shown_ratio = ""
        else:
            # Truncated, not rounded: 0.597 must not read as a 0.6 bar met.
            places = 2 if row.ratio >= 0.1 else 3
            scale = 10**places
            shown_ratio = f"{math.floor(row.ratio * scale) / scale:.{places}f}x"
            if row.ratio_note:
                shown_ratio += " " + row.ratio_note
        holds = {True: "yes", False: "NO", None: "n/a" if row.bar else ""}[row.holds]
        lines.append(
            (
                row.workload,
                row.erq.shown(),
                row.memcached.shown() if row.memcached is not None else "-",
                shown_ratio,
                row.bar,
                holds,
                row.erq.cpu(),
                row.memcached.cpu() if row.memcached is not None else "",
            )
        )
    widths = [
        max(len(line[column]) for line in lines) for column in range(len(HEADERS))
    ]
    out = []
    for number_, line in enumerate(lines):
        cells = [
            cell.ljust(width) if column == 0 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
        if number_ == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)
