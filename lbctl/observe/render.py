"""Pure rendering of a ``/stats`` document into rich renderables (the ``lbctl stats`` and
``lbctl demo`` dashboard). Nothing here prints or reads a clock: the document carries the
per-second history the sparklines and rates are drawn from."""

from __future__ import annotations

import time

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.table import Table
from rich.text import Text

STATE_STYLE = {
    "up": "green", "slow_start": "cyan", "down": "red", "ejected": "magenta",
    "disabled": "dim", "draining": "yellow", "leaving": "yellow",
}
SPARKS = "▁▂▃▄▅▆▇█"
RATE_SECONDS = 5          # req/s is the mean of the last complete seconds


def sparkline(values, width: int = 15, combine=sum) -> str:
    """``values`` squeezed into ``width`` characters; ``None`` (no data) draws a space.
    Groups are counted from the newest value, so a short group is the oldest one."""
    if not values:
        return ""
    size = max(1, -(-len(values) // width))
    first = len(values) % size or size
    groups = [values[:first]] + [values[i:i + size] for i in range(first, len(values), size)]
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


def mean(values) -> float:
    return sum(values) / len(values)


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
    """A latency in at most 6 characters: ``4.0ms``, ``250ms``, ``1.25s``, ``12.0s``."""
    if value is None:
        return "-"
    if value < 0.01:
        return f"{value * 1000:.1f}ms"
    if value < 1:
        return f"{value * 1000:.0f}ms"
    return f"{value:.2f}s" if value < 10 else f"{value:.1f}s"


def count(n: int) -> str:
    """A counter in at most 6 characters: exact below a million, then ``12.3M``, ``4.56G``."""
    if n < 1_000_000:
        return str(n)
    if n < 1_000_000_000:
        return f"{n / 1e6:.1f}M" if n < 100_000_000 else f"{n / 1e6:.0f}M"
    return f"{n / 1e9:.2f}G"


def number(x: float) -> str:
    """A weight: ``3``, ``0.5``, ``0.12`` (never exponent notation)."""
    if x == int(x):
        return str(int(x))
    return f"{x:.2f}".rstrip("0").rstrip(".")


def per_second(r: float | None) -> str:
    if r is None:
        return "-"
    return f"{r:.1f}" if r < 1000 else f"{r:.0f}"


def state_text(b: dict) -> Text:
    state = b["state"]
    if state == "slow_start" and b.get("slow_start_progress") is not None:
        return Text(f"slow start {b['slow_start_progress']:.0%}", style="cyan")
    return Text(state, style=STATE_STYLE.get(state, ""))


def header_chunks(stats: dict) -> tuple[list[Text], list[Text]]:
    """The totals (numbers a reader scans for first), then where they come from."""
    pools = stats["pools"]
    total = sum(p["requests"] for p in pools)
    errors = sum(p["errors"] for p in pools)
    rates = [rate(b.get("history")) for p in pools for b in p["backends"]]
    known = [r for r in rates if r is not None]
    totals = [Text(f"lbctl {stats['version']}", style="bold"),
              Text(f"up {duration(stats['uptime'])}")]
    if known:
        totals.append(Text(f"{sum(known):.1f} req/s"))
    totals.append(Text(f"attempts {total}"))
    totals.append(Text(f"errors {errors}", style="red" if errors else ""))
    front = stats.get("frontend")
    if front:
        classes = " ".join(f"{k} {v}" for k, v in front["responses"].items() if v)
        totals.append(Text(f"clients {front['requests']}" + (f" ({classes})" if classes else "")))
    if not stats.get("metrics", True):
        totals.append(Text("metrics off", style="yellow"))
    source = [Text(f"config {stats['config']}", style="dim")]
    loaded = stats.get("loaded_at")
    if loaded:
        source.append(Text(f"loaded {time.strftime('%H:%M:%S', time.localtime(loaded))}",
                           style="dim"))
    if stats.get("pid") is not None:
        source.append(Text(f"pid {stats['pid']}", style="dim"))
    workers = stats.get("workers")
    if workers:
        serving = sum(1 for w in workers if w.get("state") == "serving")
        text = f"{len(workers)} workers" + (f" ({serving} serving)" if serving < len(workers)
                                            else "")
        source.append(Text(text, style="dim" if serving == len(workers) else "yellow"))
    return totals, source


class Header:
    """The header lines: chunks packed two spaces apart, a line broken only between chunks
    (a chunk wider than the screen wraps on its own), so no figure is split from its label."""

    def __init__(self, stats: dict, status: Text | None = None) -> None:
        self.stats, self.status = stats, status

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if self.status is not None:
            yield self.status
        for chunks in header_chunks(self.stats):
            line = Text()
            for chunk in chunks:
                if line and line.cell_len + 2 + chunk.cell_len > options.max_width:
                    yield line
                    line = Text()
                if line:
                    line.append("  ")
                line.append_text(chunk)
            if line:
                yield line


NUMBER_HEADS = ("weight", "in-flight", "req/s", "p50", "p99", "errors", "requests")
SPARK_HEADS = ("req/s 1m", "p99 1m")
SPARK_MAX = 15            # characters; 60 s of history at 4 s per character
# Below ~70 columns, once the sparklines are gone: the least read numbers give way, whole,
# in this order (a cut number would mislead: "20m" for "20ms").
DROP_FIRST = ("requests", "p50", "in-flight", "weight")
NAME_KEPT = 16            # a backend name keeps this much before a number column goes


def _row(pool: dict, b: dict, rates: dict | None) -> list:
    given = (rates or {}).get((pool["name"], b["name"]))
    r = given if given is not None else rate(b.get("history"))
    latency = b.get("latency") or {}
    share = error_share(b)
    weight = number(b["weight"]) if b["weight"] == b["effective_weight"] \
        else f"{number(b['effective_weight'])}/{number(b['weight'])}"
    # Text, not str: a str cell is read as rich markup, and a name may hold "[red]".
    return [Text(str(b["name"])), state_text(b), weight, str(b["inflight"]), per_second(r),
            ms(latency.get("p50")), ms(latency.get("p99")),
            Text(f"{share:.1%}", style="red" if share > 0.05 else ""), count(b["requests"])]


def _spark_widths(spare: int, gap: int) -> tuple[int, ...]:
    """Widths of the sparkline columns that fit in ``spare`` characters: both, one, or none.
    They are the first to give way, so every number keeps its full width."""
    heads = [len(h) for h in SPARK_HEADS]
    both = spare - 2 * gap
    if both >= sum(heads):
        first = min(SPARK_MAX, max(heads[0], both // 2))
        return first, min(SPARK_MAX, max(heads[1], both - first))
    if spare - gap >= heads[0]:
        return (min(SPARK_MAX, spare - gap),)
    return ()


def _shrink(widths: list[int], floors: tuple[int, int], excess: int) -> int:
    """Take up to ``excess`` columns from the two text columns, down to ``floors``."""
    taken = 0
    for i, floor in enumerate(floors):
        cut = max(0, min(excess - taken, widths[i] - floor))
        widths[i] -= cut
        taken += cut
    return taken


def pool_table(pool: dict, width: int = 160,
               rates: dict[tuple[str, str], float] | None = None) -> Table:
    """The pool's backends laid out for ``width`` columns: numbers at full width first, then
    the sparklines in what is left (narrower, then one, then none). Narrower than the
    numbers need (under about 75 columns), the columns close up, the state wraps, then the
    least read numbers go whole; a number is never cut."""
    rows = [_row(pool, b, rates) for b in pool["backends"]]
    heads = ("backend", "state") + NUMBER_HEADS
    widths = [max([len(h)] + [Text(c).cell_len if isinstance(c, str) else c.cell_len
                              for c in column])
              for h, column in zip(heads, zip(*rows) if rows else [()] * len(heads))]
    gap = 2
    fixed = sum(widths) + gap * (len(widths) - 1)
    if fixed > width:
        gap = 1
        fixed = sum(widths) + gap * (len(widths) - 1)
    # Still too wide: the names wrap down to NAME_KEPT, the state down to "draining", then the
    # least read numbers go, whole; only then do the names wrap further.
    floors = (max(len(heads[0]), NAME_KEPT), len("draining"))
    fixed -= _shrink(widths, floors, fixed - width)
    keep = list(range(len(heads)))
    for head in DROP_FIRST:
        if fixed <= width:
            break
        i = heads.index(head)
        keep.remove(i)
        fixed -= widths[i] + gap
    fixed -= _shrink(widths, (4, 4), fixed - width)
    heads = tuple(heads[i] for i in keep)
    widths = [widths[i] for i in keep]
    rows = [[cells[i] for i in keep] for cells in rows]
    histories = [b.get("history") for b in pool["backends"]]
    # Sparklines only once every number is there.
    sparks = _spark_widths(width - fixed, gap) if any(histories) and len(keep) == len(
        NUMBER_HEADS) + 2 else ()

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, gap - 1, 0, 0), expand=False)
    for i, head in enumerate(heads):
        text = head in ("backend", "state")
        table.add_column(head, justify="left" if text else "right", width=widths[i],
                         no_wrap=not text, overflow="fold")
    for head, w in zip(SPARK_HEADS, sparks):
        table.add_column(head, justify="left", width=w, no_wrap=True, overflow="crop")
    for cells, history in zip(rows, histories):
        lines = []
        if sparks:
            lines.append(Text(sparkline(history["requests"], sparks[0], combine=mean)
                              if history else "", style="green"))
        if len(sparks) > 1:
            lines.append(Text(sparkline(history["p99"], sparks[1], combine=max)
                              if history else "", style="yellow"))
        table.add_row(*cells, *lines)
    return table


def pool_title(pool: dict) -> Text:
    title = Text()
    title.append(f"pool {pool['name']}", style="bold")
    title.append(f" ({pool['algorithm']}, {pool['mode']})")
    found = pool.get("discovery")
    if found:       # "dns failing": the last good set is in use
        title.append(f"  {found['source']} {found['state']}",
                     style="yellow" if found["state"] in ("failing", "empty") else "")
    if "eligible" in pool:
        title.append(f"  {pool['eligible']}/{len(pool['backends'])} eligible")
    known = [r for r in (rate(b.get("history")) for b in pool["backends"]) if r is not None]
    if known:
        title.append(f"  {sum(known):.1f} req/s")
    return title


class PoolView:
    """A pool's title and table, laid out when drawn, for the width it is drawn at."""

    def __init__(self, pool: dict, rates: dict[tuple[str, str], float] | None) -> None:
        self.pool, self.rates = pool, rates

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield pool_title(self.pool)
        yield pool_table(self.pool, options.max_width, self.rates)


def unreadable(stats: object) -> str | None:
    """Why ``dashboard`` could not draw ``stats``, or None. The drawing is lazy (rich lays
    a table out when it prints it), so a field that is missing or of another kind (the
    document of another program, or of another lbctl version) would otherwise surface as a
    traceback mid-print; this lays every part out once, beforehand."""
    try:
        if not isinstance(stats, dict) or not isinstance(stats.get("pools"), list):
            return "no list of pools"
        header_chunks(stats)
        for pool in stats["pools"]:
            pool_title(pool)
            pool_table(pool)
    except (KeyError, IndexError) as exc:
        return f"no field {exc}"
    except (TypeError, ValueError, AttributeError, ZeroDivisionError, OverflowError) as exc:
        return f"a field of an unexpected kind ({exc})"
    return None


def dashboard(stats: dict, rates: dict[tuple[str, str], float] | None = None,
              status: Text | None = None) -> Group:
    """The header lines and one table per pool; ``rates`` ((pool, backend) -> req/s)
    overrides the rate computed from the document's history."""
    return Group(Header(stats, status), *(PoolView(pool, rates) for pool in stats["pools"]))
