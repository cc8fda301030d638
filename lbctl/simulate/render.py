"""Rendering: summaries in, rich renderables and plain sentences out. Pure: nothing prints here.

The report ranks the algorithms (fewest errors first, then lowest p99, then lowest mean), draws
each backend's share of the traffic under every algorithm (one bar per backend, in pool order)
and the p99 of each algorithm as bar charts, and ends with one sentence saying which algorithm
won and why. With passive ejection on, a table counts each backend's ejections per algorithm,
and the verdict mentions them when the winner or the baseline had any.
"""

from __future__ import annotations

from typing import Sequence

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lbctl.simulate.results import AlgorithmResult
from lbctl.simulate.scenario import Scenario

EIGHTHS = " ▏▎▍▌▋▊▉█"

# Why an algorithm does well, when the shares alone do not tell.
HOW = {
    "round_robin": "strict rotation spaces each backend's requests evenly, which smooths "
                   "arrivals at every backend",
    "random": "independent random draws spread the load evenly on average",
    "weighted": "smooth weighted rotation follows the configured weights",
    "least_conn": "it sends every request to the backend with the fewest requests in flight, "
                  "so no queue builds while another backend sits idle",
    "p2c": "comparing the in-flight counts of two random backends avoids most queues at O(1) "
           "cost per pick",
    "ewma": "it steers by each backend's measured latency times its requests in flight",
    "consistent_hash": "keys stay on their backend, which keeps caches warm",
}


def ranked(results: Sequence[AlgorithmResult]) -> list[AlgorithmResult]:
    """Best first: fewest errors, then lowest p99, then lowest mean latency."""
    return sorted(results, key=lambda r: (r.errors, r.latency["p99"], r.latency["mean"]))


def fmt_latency(seconds: float) -> str:
    if seconds >= 10:
        return f"{seconds:.1f}s"
    if seconds >= 1:
        return f"{seconds:.2f}s"
    ms = seconds * 1000
    if ms >= 100:
        return f"{ms:.0f}ms"
    if ms >= 10:
        return f"{ms:.1f}ms"
    return f"{ms:.2f}ms"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighths of a cell, ``fraction`` of ``width`` cells long."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def header(scenario: Scenario, requests: int) -> Text:
    text = Text()
    text.append("lbctl simulate", style="bold")
    text.append(f"  {scenario.title}\n", style="dim")
    text.append(f"{requests:,} requests per algorithm at {scenario.workload.rate:,.1f}/s "
                f"({scenario.load:.0%} of capacity), seed {scenario.seed}", style="dim")
    return text


def ranking_table(results: Sequence[AlgorithmResult], configured: str | None = None,
                  width: int = 80) -> Table:
    """The algorithms, best first. Narrow consoles drop p90, max and max/mean first."""
    wide = width >= 100
    table = Table(title="Algorithms, best first", title_justify="left", title_style="bold",
                  header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    if wide:
        table.add_column("#", justify="right")
    table.add_column("algorithm", no_wrap=True)
    columns = ["mean", "p50", "p90", "p99", "p999", "max"] if wide else \
        ["mean", "p50", "p99", "p999"]
    for name in columns:
        table.add_column("p99.9" if name == "p999" else name, justify="right")
    table.add_column("errors", justify="right")
    table.add_column("retries", justify="right")
    if wide:
        table.add_column("max/mean", justify="right")
    table.add_column("fairness", justify="right")
    order = ranked(results)
    for rank, r in enumerate(order, 1):
        lat = r.latency
        name = r.algorithm + (" (config)" if r.algorithm == configured else "")
        row = [str(rank)] if wide else []
        row.append(Text(name, style="bold green" if rank == 1 else ""))
        row += [fmt_latency(lat[k]) for k in columns]
        row += [Text(f"{r.errors:,}", style="red" if r.errors else ""), f"{r.retries:,}"]
        if wide:
            row.append(f"{r.max_mean_load:.2f}")
        row.append(f"{r.fairness:.3f}")
        table.add_row(*row)
    return table


SPARKS = "▁▂▃▄▅▆▇█"
MAX_SPARK = 48


def sparkline(values: Sequence[float], top: float) -> str:
    """One character per value (or per bucket of values, beyond MAX_SPARK), height ~ value."""
    if len(values) > MAX_SPARK:
        size = len(values) / MAX_SPARK
        values = [sum(values[int(k * size):int((k + 1) * size)]) /
                  max(int((k + 1) * size) - int(k * size), 1) for k in range(MAX_SPARK)]
        top = max(values) or 1.0
    out = []
    for v in values:
        level = round(v / top * len(SPARKS)) if top else 0
        out.append(" " if level <= 0 else SPARKS[min(level, len(SPARKS)) - 1])
    return "".join(out)


def share_chart(results: Sequence[AlgorithmResult]) -> Table:
    """Each backend's share of the attempts under each algorithm: one bar per backend, in pool
    order, then the least and the most loaded backend by name."""
    order = ranked(results)
    n = len(order[0].backends)
    top = max(b.share for r in order for b in r.backends) or 1.0
    title = "Share of requests per backend"
    if n > MAX_SPARK:
        title += f" (one bar per {n / MAX_SPARK:.3g} backends)"
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("algorithm", no_wrap=True)
    table.add_column(f"{order[0].backends[0].name} .. {order[0].backends[-1].name}"
                     if n > 1 else order[0].backends[0].name, no_wrap=True)
    table.add_column("least", justify="right", no_wrap=True)
    table.add_column("most", justify="right", no_wrap=True)
    for r in order:
        shares = [b.share for b in r.backends]
        lo = min(r.backends, key=lambda b: b.share)
        hi = max(r.backends, key=lambda b: b.share)
        table.add_row(r.algorithm, Text(sparkline(shares, top), style="cyan"),
                      f"{lo.name} {lo.share:.1%}", f"{hi.name} {hi.share:.1%}")
    return table


def p99_chart(results: Sequence[AlgorithmResult], width: int = 40) -> Table:
    order = ranked(results)
    top = max(r.latency["p99"] for r in order) or 1.0
    table = Table(title="p99 latency", title_justify="left", title_style="bold",
                  show_header=False, box=None, pad_edge=False)

    table.add_column("algorithm")
    table.add_column("bar", no_wrap=True)
    table.add_column("p99", justify="right")
    for rank, r in enumerate(order):
        style = "green" if rank == 0 else ("red" if rank == len(order) - 1 else "yellow")
        table.add_row(r.algorithm, Text(bar(r.latency["p99"] / top, width), style=style),
                      fmt_latency(r.latency["p99"]))
    return table


def ejection_table(results: Sequence[AlgorithmResult], width: int = 80) -> Table | Text:
    """Passive ejections per algorithm: the total, then one column per backend that was
    ejected under any algorithm (most ejected first; the rest summed as "others" when the
    console is too narrow)."""
    order = ranked(results)
    if not any(r.ejections for r in order):
        return Text("Passive ejection: no backend was ejected.", style="dim")
    names = [b.name for b in order[0].backends]
    totals = [sum(r.backends[i].ejections for r in order) for i in range(len(names))]
    shown = sorted((i for i, t in enumerate(totals) if t), key=lambda i: (-totals[i], i))
    room = width - max(len(r.algorithm) for r in order) - 10 - 8
    keep = []
    for i in shown:
        cost = max(len(names[i]), 3) + 2
        if room - cost < (8 if len(keep) + 1 < len(shown) else 0):
            break
        room -= cost
        keep.append(i)
    table = Table(title="Passive ejections", title_justify="left",
                  title_style="bold", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("algorithm", no_wrap=True)
    table.add_column("total", justify="right")
    for i in keep:
        table.add_column(names[i], justify="right", no_wrap=True)
    rest = [i for i in shown if i not in keep]
    if rest:
        table.add_column("others", justify="right")
    for r in order:
        row = [r.algorithm, f"{r.ejections:,}"]
        row += [f"{r.backends[i].ejections:,}" for i in keep]
        if rest:
            row.append(f"{sum(r.backends[i].ejections for i in rest):,}")
        table.add_row(*row)
    return table


def _ejections(r: AlgorithmResult) -> str:
    """ "b3 4 times" or "b3 and 2 others 7 times": who passive ejection took out, how often."""
    out = [b for b in r.backends if b.ejections]
    most = max(out, key=lambda b: b.ejections)
    who = most.name if len(out) == 1 else \
        f"{most.name} and {len(out) - 1} other{'s' if len(out) > 2 else ''}"
    return f"{who} {r.ejections:,} time{'s' if r.ejections != 1 else ''}"


def verdict(results: Sequence[AlgorithmResult], scenario: Scenario) -> str:
    """One sentence: who won, and why."""
    order = ranked(results)
    best = order[0]
    if len(order) == 1:
        out = (f"{best.algorithm}: p99 {fmt_latency(best.latency['p99'])}, mean "
               f"{fmt_latency(best.latency['mean'])}, {best.errors:,} errors")
        if best.ejections:
            out += f"; passive ejection took out {_ejections(best)}"
        return out + "."
    # Compare with what the user would otherwise run: the config's algorithm, else the
    # default (round_robin), else the last.
    names = [r.algorithm for r in order]
    baseline = scenario.configured if scenario.configured in names[1:] else \
        "round_robin" if "round_robin" in names[1:] else names[-1]
    worst = order[names.index(baseline)]
    label = {scenario.configured: " (your config)", "round_robin": " (the default)"}
    x, y = fmt_latency(best.latency["p99"]), fmt_latency(worst.latency["p99"])
    against = f"{worst.algorithm}{label.get(worst.algorithm, '')}"
    if worst.errors != best.errors:
        lead = (f"{best.algorithm} won with p99 {x} and {best.errors:,} errors, against {y} "
                f"and {worst.errors:,} errors for {against}")
    else:
        lead = f"{best.algorithm} won with p99 {x} against {y} for {against}"

    # The backend whose share differs most between the winner and the loser tells the story.
    diffs = [(abs(bw.share - bl.share), i)
             for i, (bw, bl) in enumerate(zip(best.backends, worst.backends))]
    diff, i = max(diffs)
    # The slowest backend is the better story when its share moved nearly as much.
    capacities = [b.capacity for b in scenario.backends]
    low = min(capacities)
    if capacities.count(low) == 1:
        k = capacities.index(low)
        if diffs[k][0] >= 0.5 * diff:
            diff, i = diffs[k]
    sw, sl = best.backends[i].share, worst.backends[i].share
    if diff >= 0.01 and diff >= 0.25 * max(sw, sl):
        spec = scenario.backends[i]
        slowest = spec.capacity == min(capacities) and capacities.count(spec.capacity) == 1
        what = spec.name
        if slowest:
            what = f"the slowest backend, {spec.name},"
        elif spec.capacity == max(capacities) and capacities.count(spec.capacity) == 1:
            what = f"the fastest backend, {spec.name},"
        elif any(spec.name in ev.backends for ev in scenario.timeline):
            what = f"{spec.name}, troubled by the timeline,"
        why = (f"it sent {what} {sw:.1%} of the requests where {worst.algorithm} sent "
               f"{sl:.1%}")
        if slowest and sl > sw:
            capacity_share = spec.capacity / sum(capacities)
            why += f", though it can serve only {capacity_share:.1%} of the load"
    else:
        why = HOW.get(best.algorithm, "its picks kept the queues shortest")
    if best.ejections or worst.ejections:
        # Relevant only when passive ejection acted on the two runs the sentence compares.
        if _ejections(best) == _ejections(worst) if best.ejections and worst.ejections \
                else False:
            why += f"; passive ejection took out {_ejections(best)} under both"
        elif best.ejections and worst.ejections:
            why += (f"; passive ejection took out {_ejections(best)} under {best.algorithm} "
                    f"and {_ejections(worst)} under {worst.algorithm}")
        else:
            r = best if best.ejections else worst
            why += f"; passive ejection took out {_ejections(r)} under {r.algorithm} only"
    return f"{lead}: {why}."


LEGEND = Text("Latency is what the client saw, errors included at the moment they came back; "
              "retries are extra attempts after a timeout or a 5xx; fairness is Jain's index "
              "over backend utilization (1 = even).", style="dim")


def report(scenario: Scenario, results: Sequence[AlgorithmResult], width: int = 80) -> Group:
    """The whole screen: header, ranking, share chart, p99 chart, verdict."""
    return Group(header(scenario, results[0].requests if results else 0), Text(""),
                 ranking_table(results, scenario.configured, width), LEGEND, Text(""),
                 share_chart(results),
                 p99_chart(results, width=max(min(width - 30, 50), 10)), Text(""),
                 *((ejection_table(results, width), Text(""))
                   if scenario.proxy.outlier is not None else ()),
                 Text(verdict(results, scenario), style="bold"))
