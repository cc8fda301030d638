"""Pure rendering of a ``/stats`` document into rich tables."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "up": "green", "slow_start": "cyan", "down": "red", "ejected": "magenta",
    "disabled": "dim", "draining": "yellow",
}


def dashboard(stats: dict, rates: dict[tuple[str, str], float] | None = None) -> Group:
    """One table per pool; ``rates`` maps (pool, backend) to requests per second."""
    tables = []
    for pool in stats["pools"]:
        table = Table(title=f"pool {pool['name']} ({pool['algorithm']}, {pool['mode']})",
                      title_justify="left", expand=False)
        for column in ("backend", "state", "weight", "in-flight", "req/s", "requests",
                       "errors", "latency (ewma)"):
            table.add_column(column, justify="left" if column in ("backend", "state") else "right")
        for b in pool["backends"]:
            state = b["state"]
            if state == "slow_start" and b.get("slow_start_progress") is not None:
                state_text = Text(f"slow start {b['slow_start_progress']:.0%}", style="cyan")
            else:
                state_text = Text(state, style=STATE_STYLE.get(state, ""))
            rate = (rates or {}).get((pool["name"], b["name"]))
            error_share = b["failures"] / b["requests"] if b["requests"] else 0.0
            table.add_row(
                b["name"], state_text,
                f"{b['weight']:g}" if b["weight"] == b["effective_weight"]
                else f"{b['effective_weight']:.2g}/{b['weight']:g}",
                str(b["inflight"]),
                "-" if rate is None else f"{rate:.1f}",
                str(b["requests"]),
                f"{b['failures']} ({error_share:.0%})",
                f"{b['ewma'] * 1000:.1f} ms",
            )
        tables.append(table)
    return Group(*tables)
