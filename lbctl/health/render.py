"""The ``lbctl check`` report as a table for people. Pure: the command decides where it goes.

(The machine-readable outputs, status line, JSON and Prometheus text, are in ``report.py``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.table import Table

    from lbctl.health.report import Report


def render_table(report: Report, *, ascii_only: bool = False) -> Table:
    """One row per backend: pool, backend, result, status, latency, error; a pool's
    discovery lookup is a row of its own before the backends it found."""
    from rich import box
    from rich.table import Table
    table = Table(box=box.ASCII if ascii_only else box.SIMPLE_HEAD, show_edge=not ascii_only)
    for column, justify in (("pool", "left"), ("backend", "left"), ("result", "left"),
                            ("status", "right"), ("latency", "right"), ("error", "left")):
        table.add_column(column, justify=justify)
    for pool in report.pools:
        found = pool.discovery
        if found is not None:       # the lookup is a row of its own, before what it found
            result = {"failed": "[red]LOOKUP FAILED[/]", "empty": "[yellow]none found[/]"}.get(
                found.kind, f"[green]{found.found} found[/]")
            table.add_row(pool.name, f"({found.source} {found.target})", result, "", "",
                          found.reason)
        for b in pool.backends:
            result = "up" if b.up else "DOWN"
            if b.up != b.result.ok:      # a state file is holding the verdict for now
                result += " (probe ok)" if b.result.ok else " (probe failed)"
            style = "green" if b.up and b.result.ok else ("yellow" if b.up or b.result.ok else "red")
            latency = "" if b.latency is None else f"{b.latency * 1000:.1f}ms"
            table.add_row(pool.name, b.name, f"[{style}]{result}[/]",
                          "" if b.result.status is None else str(b.result.status),
                          latency, b.result.error or "")
    return table
