"""Pure rendering of a ``/stats`` document into rich renderables (the ``lbctl stats`` and
``lbctl demo`` dashboard). Nothing here prints or reads a clock: the document carries the
per-second history the sparklines and rates are drawn from."""

from __future__ import annotations

import time

from rich.console import Group
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "up": "green", "slow_start": "cyan", "down": "red", "ejected": "magenta",
    "disabled": "dim", "draining": "yellow", "leaving": "yellow",
}
SPARKS = "▁▂▃▄▅▆▇█"
RATE_SECONDS = 5          # req/s is the mean of the last complete seconds


def sparkline(values, width: int = 15, combine=sum) -> str:
    """``values`` squeezed into ``width`` characters; ``None`` (no data) draws a space."""
    if not values:
        return ""
    size = max(1, -(-len(values) // width))
    groups = [values[i:i + size] for i in range(0, len(values), size)]
    points = []
    for group in groups:
        known = [v for v in group if v is not None]
        points.append(combine(known) if known else None)
    top = max((p for p in points if p is not None), default=0)
    out = []
    for p in points:
        if p is None:
            out.append(" ")
        elif top <= 0:
            out.append(SPARKS[0])
        else:
            out.append(SPARKS[min(len(SPARKS) - 1, int(p / top * (len(SPARKS) - 1) + 0.5))])
    return "".join(out)


def rate(history: dict | None) -> float | None:
    """Requests per second over the last complete seconds of ``history``."""
    if not history:
        return None
    done = history["requests"][-RATE_SECONDS - 1:-1]
    return sum(done) / len(done) if done else None


def error_share(b: dict) -> float:
    """Errors over the window when history is there, else over the backend's life."""
    history = b.get("history")
    if history:
        requests = sum(history["requests"])
        return sum(history["errors"]) / requests if requests else 0.0
    return b["errors"] / b["requests"] if b["requests"] else 0.0


def duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h{minutes:02d}m"
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"


def state_text(b: dict) -> Text:
    state = b["state"]
    if state == "slow_start" and b.get("slow_start_progress") is not None:
        return Text(f"slow start {b['slow_start_progress']:.0%}", style="cyan")
    return Text(state, style=STATE_STYLE.get(state, ""))


def header(stats: dict) -> Text:
    """One line: version, uptime, config, totals."""
    pools = stats["pools"]
    total = sum(p["requests"] for p in pools)
    errors = sum(p["errors"] for p in pools)
    rates = [rate(b.get("history")) for p in pools for b in p["backends"]]
    known = [r for r in rates if r is not None]
    line = Text()
    line.append(f"lbctl {stats['version']}", style="bold")
    line.append(f"  up {duration(stats['uptime'])}")
    line.append(f"  config {stats['config']}")
    loaded = stats.get("loaded_at")
    if loaded:
        line.append(f" (loaded {time.strftime('%H:%M:%S', time.localtime(loaded))})")
    line.append(f"  attempts {total}")
    if known:
        line.append(f"  {sum(known):.1f} req/s")
    line.append(f"  errors {errors}", style="red" if errors else "")
    front = stats.get("frontend")
    if front:
        classes = " ".join(f"{k} {v}" for k, v in front["responses"].items() if v)
        line.append(f"  clients {front['requests']}" + (f" ({classes})" if classes else ""))
    if not stats.get("metrics", True):
        line.append("  metrics off", style="yellow")
    return line


def pool_table(pool: dict, rates: dict[tuple[str, str], float] | None = None) -> Table:
    title = f"pool {pool['name']} ({pool['algorithm']}, {pool['mode']}"
    found = pool.get("discovery")
    if found:       # e.g. "dns failing": the last good set is in use
        title += f", {found['source']} {found['state']}"
    table = Table(title=title + ")", title_justify="left", expand=False)
    for column in ("backend", "state", "weight", "in-flight", "req/s", "p50", "p99",
                   "errors", "requests", "req/s 1m", "p99 1m"):
        table.add_column(column, justify="left" if column in ("backend", "state") or
                         column.endswith("1m") else "right", no_wrap=True)
    for b in pool["backends"]:
        history = b.get("history")
        given = (rates or {}).get((pool["name"], b["name"]))
        r = given if given is not None else rate(history)
        latency = b.get("latency") or {}
        share = error_share(b)
        table.add_row(
            b["name"], state_text(b),
            f"{b['weight']:g}" if b["weight"] == b["effective_weight"]
            else f"{b['effective_weight']:.2g}/{b['weight']:g}",
            str(b["inflight"]),
            "-" if r is None else f"{r:.1f}",
            ms(latency.get("p50")), ms(latency.get("p99")),
            Text(f"{share:.1%}", style="red" if share > 0.05 else ""),
            str(b["requests"]),
            Text(sparkline(history["requests"]) if history else "", style="green"),
            Text(sparkline(history["p99"], combine=max) if history else "", style="yellow"),
        )
    return table


def dashboard(stats: dict, rates: dict[tuple[str, str], float] | None = None) -> Group:
    """The header line and one table per pool; ``rates`` ((pool, backend) -> req/s)
    overrides the rate computed from the document's history."""
    return Group(header(stats), *(pool_table(pool, rates) for pool in stats["pools"]))
