"""Rendering for the terminal: a report in, rich renderables out. Pure: nothing prints here.

The screen ranks the algorithms (fewest errors first, then lowest p99, then lowest mean; with
several seeds each figure carries its 95% confidence interval), breaks the errors down by
cause, draws each backend's share of the attempts and each algorithm's p99, shows a strip of
p99 and errors over time with the timeline's events marked, and ends with the verdict
(``verdict.py``) and, when the pool came from a serve config, the change that would apply the
winner.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lbctl.simulate.results import AlgorithmResult
from lbctl.simulate.run import Report
from lbctl.simulate.scenario import Event, Scenario
from lbctl.simulate.verdict import fmt_latency, name_of, ranked

EIGHTHS = " ▏▎▍▌▋▊▉█"
SPARKS = "▁▂▃▄▅▆▇█"
MAX_SPARK = 48
# Error causes as a user reads them, in the order they are shown.
CAUSE_LABELS = (("5xx", "5xx from backend"), ("connect", "502 refused"),
                ("reset", "502 reset"), ("5xx_retried", "502 (5xx, no retry left)"),
                ("timeout", "504 timeout"), ("no_backend", "503 no backend"),
                ("client_timeout", "client gave up"))


def bar(fraction: float, width: int) -> str:
    """A horizontal bar in eighths of a cell, ``fraction`` of ``width`` cells long."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (EIGHTHS[part] if part else "")).ljust(width)


def header(report: Report) -> Text:
    scenario = report.scenario
    text = Text()
    text.append("lbctl simulate", style="bold")
    text.append(f"  {scenario.title if report.source != 'compare' else 'two configs compared'}\n",
                style="dim")
    requests = report.results[0].requests if report.results else 0
    seeds = report.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else \
        f"seeds {seeds[0]}-{seeds[-1]} (means ± 95% confidence)"
    rate = f"{scenario.workload.rate:,.1f}/s"
    if scenario.workload.trace is None:
        rate += f" ({scenario.load:.0%} of capacity)"
    workers = f"; {scenario.workers} workers, each balancing on its own" \
        if scenario.workers > 1 else ""
    text.append(f"{requests:,} requests per run at {rate}, {seed_text}{workers}", style="dim")
    return text


def _ci(r: AlgorithmResult, key: str) -> str:
    value = r.interval(key)
    text = fmt_latency(value.mean)
    if value.half is not None:
        text += f" ±{fmt_latency(value.half)}"
    return text


def ranking_table(results: Sequence[AlgorithmResult], configured: str | None = None,
                  width: int = 80) -> Table:
    """The algorithms, best first. Narrow consoles drop p90, max and max/mean first."""
    wide = width >= 100
    seeds = results[0].seeds if results else 1
    table = Table(title="Algorithms, best first", title_justify="left", title_style="bold",
                  header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    if wide:
        table.add_column("#", justify="right")
    table.add_column("algorithm", no_wrap=True)
    if seeds > 1:
        columns = ["mean", "p50", "p99", "p999"] if wide else ["mean", "p99"]
    else:
        columns = ["mean", "p50", "p90", "p99", "p999", "max"] if wide else \
            ["mean", "p50", "p99", "p999"]
    for name in columns:
        table.add_column("p99.9" if name == "p999" else name, justify="right")
    table.add_column("errors", justify="right")
    table.add_column("retries", justify="right")
    if wide:
        table.add_column("max/mean", justify="right")
    table.add_column("fairness", justify="right")
    for rank, r in enumerate(ranked(results), 1):
        name = name_of(r) + (" (config)" if r.algorithm == configured and not r.label else "")
        row = [str(rank)] if wide else []
        row.append(Text(name, style="bold green" if rank == 1 else ""))
        row += [_ci(r, k) for k in columns]
        errors = r.interval("errors")
        err = f"{errors.mean:,.0f}" + (f" ±{errors.half:,.0f}" if errors.half is not None else "")
        row += [Text(err, style="red" if r.errors else ""), f"{r.retries:,}"]
        if wide:
            row.append(f"{r.max_mean_load:.2f}")
        row.append(f"{r.fairness:.3f}")
        table.add_row(*row)
    return table


def error_table(results: Sequence[AlgorithmResult]) -> Table | None:
    """Errors by cause, for the causes that happened."""
    causes = [(key, label) for key, label in CAUSE_LABELS
              if any(r.errors_by_cause.get(key) for r in results)]
    if not causes:
        return None
    table = Table(title="Errors by cause (what the client got)", title_justify="left",
                  title_style="bold", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("algorithm", no_wrap=True)
    for _, label in causes:
        table.add_column(label, justify="right")
    for r in ranked(results):
        table.add_row(name_of(r), *(f"{r.errors_by_cause.get(key, 0):,}" for key, _ in causes))
    return table


def sparkline(values: Sequence[float], top: float, width: int = MAX_SPARK) -> str:
    """One character per value (or per bucket of values, beyond ``width``), height ~ value."""
    if len(values) > width:
        size = len(values) / width
        values = [sum(values[int(k * size):int((k + 1) * size)]) /
                  max(int((k + 1) * size) - int(k * size), 1) for k in range(width)]
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
    top = max(b.share for r in order for b in r.backends) or 1.0
    n = max(len(r.backends) for r in order)
    title = "Share of attempts per backend"
    if n > MAX_SPARK:
        title += f" (one bar per {n / MAX_SPARK:.3g} backends)"
    table = Table(title=title, title_justify="left", title_style="bold", header_style="bold",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    first = order[0].backends
    same = all([b.name for b in r.backends] == [b.name for b in first] for r in order)
    table.add_column("algorithm", no_wrap=True)
    table.add_column((f"{first[0].name} .. {first[-1].name}" if len(first) > 1 else first[0].name)
                     if same else "backends, in pool order", no_wrap=True)
    table.add_column("least", justify="right", no_wrap=True)
    table.add_column("most", justify="right", no_wrap=True)
    for r in order:
        shares = [b.share for b in r.backends]
        lo = min(r.backends, key=lambda b: b.share)
        hi = max(r.backends, key=lambda b: b.share)
        table.add_row(name_of(r), Text(sparkline(shares, top), style="cyan"),
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
        table.add_row(name_of(r), Text(bar(r.latency["p99"] / top, width), style=style),
                      _ci(r, "p99"))
    return table


def describe_event(ev: Event) -> str:
    """``20s b3 blackhole 50%``: a timeline event in a few words."""
    who = ",".join(ev.backends) if len(ev.backends) <= 3 else \
        f"{ev.backends[0]}+{len(ev.backends) - 1}"
    what = ev.action
    if ev.action == "down":
        what = f"down ({ev.mode})"
    elif ev.action == "slow":
        what = f"slow x{ev.factor:g}"
    elif ev.action in ("refuse", "reset", "blackhole", "error") and ev.fraction < 1:
        what = f"{ev.action} {ev.fraction:.0%}"
    return f"{ev.at:g}s {who} {what}"


def _columns(values: Sequence[float | None], width: int, combine) -> list[float | None]:
    """Squeeze a series into at most ``width`` columns."""
    if len(values) <= width:
        return list(values)
    size = len(values) / width
    out = []
    for k in range(width):
        chunk = [v for v in values[int(k * size):int((k + 1) * size)] if v is not None]
        out.append(combine(chunk) if chunk else None)
    return out


def time_strip(report: Report, width: int = 80) -> Group | None:
    """p99 (log scale, common to every algorithm) and errors over time, one column per
    interval, with the timeline's events marked above."""
    all_series = report.series
    if not all_series or len(all_series[0].start) < 2:
        return None
    names = {id(s): name_of(r) for s, r in zip(all_series, report.results)}
    # name, a space, then "p99 " or "err ": the strip starts at label_width.
    name_width = min(max(len(n) for n in names.values()), 30) + 1
    label_width = name_width + 4
    room = max(min(width - label_width - 10, 100), 10)
    first = all_series[0]
    cols = min(len(first.start), room)
    step = first.step * len(first.start) / cols
    p99s = [v for s in all_series for v in s.p99 if v]
    lo, hi = (min(p99s), max(p99s)) if p99s else (0.0, 0.0)
    top_err = max((e for s in all_series for e in _columns(s.errors, cols, sum) if e), default=0)
    lines: list[Text] = []
    span = first.start[-1] + first.step
    title = Text(f"Over time: 0-{span:g}s, one column per {step:g}s; p99 on a log scale "
                 f"({fmt_latency(lo)} to {fmt_latency(hi)})", style="bold")
    lines.append(title)
    events = report.scenario.timeline
    if events:
        marks = [" "] * cols
        for ev in events:
            c = min(int(ev.at / step), cols - 1)
            marks[c] = "▼"
        lines.append(Text(" " * label_width + "".join(marks), style="magenta"))
    for s in all_series:
        p99 = _columns(s.p99, cols, max)
        chars = []
        for v in p99:
            if v is None:
                chars.append(" ")
            elif hi <= lo:
                chars.append(SPARKS[0])
            else:
                level = math.log(v / lo) / math.log(hi / lo) if lo > 0 else v / hi
                chars.append(SPARKS[min(int(level * len(SPARKS)), len(SPARKS) - 1)])
        line = Text(f"{names[id(s)][:name_width - 1]:<{name_width}}p99 ")
        line.append("".join(chars), style="cyan")
        peak = max((v for v in s.p99 if v is not None), default=0.0)
        line.append(f"  max {fmt_latency(peak)}", style="dim")
        lines.append(line)
        errors = _columns(s.errors, cols, sum)
        if any(errors):
            line = Text(" " * name_width + "err ")
            line.append("".join(
                " " if not e else SPARKS[min(int(e / top_err * len(SPARKS)), len(SPARKS) - 1)]
                for e in errors), style="red")
            line.append(f"  {sum(s.errors):,} errors", style="dim")
            lines.append(line)
    if events:
        legend = Text("▼ ", style="magenta")
        legend.append("; ".join(describe_event(ev) for ev in events), style="dim")
        lines.append(legend)
    return Group(*lines)


def ejection_table(results: Sequence[AlgorithmResult], width: int = 80) -> Table | Text:
    """Passive ejections per algorithm: the total, then one column per backend that was
    ejected under any algorithm (most ejected first; the rest summed as "others" when the
    console is too narrow)."""
    order = ranked(results)
    if not any(r.ejections for r in order):
        return Text("Passive ejection: no backend was ejected.", style="dim")
    names = [b.name for b in order[0].backends]
    totals = [sum(r.backends[i].ejections for r in order if i < len(r.backends))
              for i in range(len(names))]
    shown = sorted((i for i, t in enumerate(totals) if t), key=lambda i: (-totals[i], i))
    room = width - max(len(name_of(r)) for r in order) - 10 - 8
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
        row = [name_of(r), f"{r.ejections:,}"]
        row += [f"{r.backends[i].ejections:,}" if i < len(r.backends) else "-" for i in keep]
        if rest:
            row.append(f"{sum(r.backends[i].ejections for i in rest if i < len(r.backends)):,}")
        table.add_row(*row)
    return table


LEGEND = Text("Latency is what the client saw, errors included at the moment they came back; "
              "retries are extra attempts (serve's retry_on); fairness is Jain's index over "
              "backend utilization (1 = even).", style="dim")


def report(rep: Report, width: int = 80) -> Group:
    """The whole screen."""
    results = rep.results
    scenario: Scenario = rep.scenario
    parts: list = [header(rep), Text(""),
                   ranking_table(results, scenario.configured, width), LEGEND, Text("")]
    errors = error_table(results)
    if errors is not None:
        parts += [errors, Text("")]
    parts += [share_chart(results), p99_chart(results, width=max(min(width - 30, 50), 10)),
              Text("")]
    strip = time_strip(rep, width)
    if strip is not None:
        parts += [strip, Text("")]
    if any(v.scenario.proxy.outlier is not None for v in rep.variants):
        parts += [ejection_table(results, width), Text("")]
    parts += [Text(sentence, style="bold" if k == 0 else "") for k, sentence in
              enumerate(rep.verdict)]
    if rep.suggestion:
        parts += [Text(""), Text(rep.suggestion, style="yellow")]
    return Group(*parts)
