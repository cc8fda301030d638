"""The HTML report: one self-contained file, inline SVG, no script, nothing fetched.

``html_report(report)`` returns a page that opens offline in any browser and can be mailed or
attached to a ticket: the verdict with its confidence (and the suggested config change), the
ranking table, the latency CDF per algorithm on a log scale, p99 and errors over time with
the timeline's events marked, each backend's share of the attempts, and the errors by cause.
A Content-Security-Policy in the page itself forbids loading anything. Every value written
into the page is escaped.

Charts are drawn here, in a few small functions over one ``Plot`` (linear or log axes, ticks,
a legend); each data series is one ``<polyline>`` or a set of ``<rect>`` bars carrying
``class="series"``, so a test can count what was drawn.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

from lbctl import __version__
from lbctl.simulate.render import CAUSE_LABELS, describe_event
from lbctl.simulate.results import AlgorithmResult
from lbctl.simulate.run import Report
from lbctl.simulate.verdict import fmt_latency, name_of, ranked

# Colour-blind-safe palette (Okabe-Ito), then greys.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000", "#777777", "#AAAAAA")
WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #222;
       max-width: 980px; margin: 24px auto; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.meta { color: #666; } .verdict { background: #f3f7fb; border-left: 4px solid #0072B2;
  padding: 8px 14px; } .verdict p { margin: 6px 0; } .lead { font-weight: 600; }
pre.suggest { background: #fff8e6; border-left: 4px solid #E69F00; padding: 8px 14px; }
table { border-collapse: collapse; margin: 8px 0; } th, td { padding: 3px 10px;
  text-align: right; border-bottom: 1px solid #e4e4e4; } th:first-child, td:first-child
  { text-align: left; } tr.best td:first-child { font-weight: 700; color: #00734d; }
svg { display: block; max-width: 100%; height: auto; } svg text { font-size: 11px;
  fill: #444; } .grid { stroke: #eee; } .axis { stroke: #999; }
.event { stroke: #CC79A7; stroke-dasharray: 4 3; } .event-label { fill: #a0457f; }
.legend { font-size: 12px; } .note { color: #666; font-size: 12px; }
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def colour(k: int) -> str:
    return COLOURS[k % len(COLOURS)]


@dataclass
class Plot:
    """One chart's frame: data ranges mapped onto the SVG box, linear or log."""
    x0: float
    x1: float
    y0: float
    y1: float
    xlog: bool = False
    ylog: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT

    def _t(self, v: float, lo: float, hi: float, log: bool) -> float:
        if log:
            v, lo, hi = (math.log10(max(x, 1e-12)) for x in (v, lo, hi))
        return 0.0 if hi == lo else (v - lo) / (hi - lo)

    def x(self, v: float) -> float:
        return self.left + self._t(v, self.x0, self.x1, self.xlog) * \
            (self.width - self.left - RIGHT)

    def y(self, v: float) -> float:
        return self.height - BOTTOM - self._t(v, self.y0, self.y1, self.ylog) * \
            (self.height - TOP - BOTTOM)


def ticks(lo: float, hi: float, log: bool, count: int = 6) -> list[float]:
    if log:
        out, p = [], math.floor(math.log10(max(lo, 1e-12)))
        while 10 ** p <= hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10 ** p
                if lo <= v <= hi:
                    out.append(v)
            p += 1
        return out or [lo, hi]
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step + 1e-9) + 1)]


def frame(plot: Plot, xlabel: str, ylabel: str, xfmt, yfmt) -> list[str]:
    """Grid, axes, tick labels and axis titles."""
    out = []
    for v in ticks(plot.y0, plot.y1, plot.ylog):
        y = plot.y(v)
        out.append(f'<line class="grid" x1="{plot.left}" x2="{plot.width - RIGHT}" y1="{y:.1f}" '
                   f'y2="{y:.1f}"/><text x="{plot.left - 6}" y="{y + 4:.1f}" '
                   f'text-anchor="end">{esc(yfmt(v))}</text>')
    for v in ticks(plot.x0, plot.x1, plot.xlog):
        x = plot.x(v)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" '
                   f'y2="{plot.height - BOTTOM}"/><text x="{x:.1f}" '
                   f'y="{plot.height - BOTTOM + 16}" text-anchor="middle">{esc(xfmt(v))}</text>')
    out.append(f'<line class="axis" x1="{plot.left}" x2="{plot.width - RIGHT}" '
               f'y1="{plot.height - BOTTOM}" y2="{plot.height - BOTTOM}"/>'
               f'<line class="axis" x1="{plot.left}" x2="{plot.left}" y1="{TOP}" '
               f'y2="{plot.height - BOTTOM}"/>')
    out.append(f'<text x="{(plot.left + plot.width - RIGHT) / 2:.0f}" y="{plot.height - 6}" '
               f'text-anchor="middle">{esc(xlabel)}</text>')
    out.append(f'<text transform="translate(14 {(TOP + plot.height - BOTTOM) / 2:.0f}) '
               f'rotate(-90)" text-anchor="middle">{esc(ylabel)}</text>')
    return out


def svg(name: str, title: str, body: Sequence[str], height: int = HEIGHT) -> str:
    return (f'<svg data-chart="{esc(name)}" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-label="{esc(title)}" '
            f'xmlns="http://www.w3.org/2000/svg"><title>{esc(title)}</title>'
            + "".join(body) + "</svg>")


def legend(names: Sequence[str]) -> str:
    items = "".join(f'<span style="margin-right:14px"><span style="display:inline-block;'
                    f'width:12px;height:3px;background:{colour(k)};vertical-align:middle">'
                    f'</span> {esc(n)}</span>' for k, n in enumerate(names))
    return f'<div class="legend">{items}</div>'


def polyline(plot: Plot, points: Sequence[tuple[float, float]], k: int, label: str) -> str:
    coords = " ".join(f"{plot.x(x):.1f},{plot.y(y):.1f}" for x, y in points)
    return (f'<polyline class="series" data-series="{esc(label)}" fill="none" '
            f'stroke="{colour(k)}" stroke-width="1.8" points="{coords}">'
            f'<title>{esc(label)}</title></polyline>')


def cdf_chart(report: Report) -> str:
    curves = [(name_of(r), c) for r, c in zip(report.results, report.cdfs) if c]
    values = [v for _, c in curves for v, _ in c if v > 0]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    lo = 10 ** math.floor(math.log10(lo))
    hi = 10 ** math.ceil(math.log10(hi)) if hi > lo else lo * 10
    plot = Plot(lo, hi, 0.0, 1.0, xlog=True)
    body = frame(plot, "latency (log scale)", "fraction of requests", fmt_latency,
                 lambda v: f"{v:.0%}")
    for k, (label, points) in enumerate(curves):
        pts = [(max(v, lo), p) for v, p in points]
        body.append(polyline(plot, pts, k, label))
    return svg("cdf", "Latency CDF per algorithm", body)


def _events(plot: Plot, report: Report) -> list[str]:
    out = []
    placed: list[tuple[float, int]] = []          # (x, row) of labels already written
    for ev in report.scenario.timeline:
        if plot.x0 <= ev.at <= plot.x1:
            x = plot.x(ev.at)
            # Labels of events close together go on separate rows.
            row = 0
            while any(abs(x - px) < 130 and pr == row for px, pr in placed):
                row += 1
            placed.append((x, row))
            out.append(f'<line class="event" data-event="{esc(describe_event(ev))}" '
                       f'x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{plot.height - BOTTOM}">'
                       f'<title>{esc(describe_event(ev))}</title></line>'
                       f'<text class="event-label" x="{x + 3:.1f}" y="{TOP + 10 + 13 * row}">'
                       f'{esc(describe_event(ev))}</text>')
    return out


def over_time_chart(report: Report, what: str) -> str:
    """p99 (log scale) or errors per interval, one line per algorithm."""
    all_series = report.series
    if not all_series:
        return ""
    span = max(s.start[-1] + s.step for s in all_series)
    if what == "p99":
        values = [v for s in all_series for v in s.p99 if v]
        if not values:
            return ""
        lo = 10 ** math.floor(math.log10(min(values)))
        hi = max(values) * 1.1
        plot = Plot(0.0, span, lo, hi, ylog=True)
        body = frame(plot, "virtual time (s)", "p99 latency (log scale)", lambda v: f"{v:g}s",
                     fmt_latency)
    else:
        top = max((max(s.errors) for s in all_series), default=0)
        plot = Plot(0.0, span, 0.0, max(top, 1) * 1.1)
        body = frame(plot, "virtual time (s)", f"errors per {all_series[0].step:g}s",
                     lambda v: f"{v:g}s", lambda v: f"{v:g}")
    body += _events(plot, report)
    for k, (s, r) in enumerate(zip(all_series, report.results)):
        if what == "p99":
            pts = [(t + s.step / 2, v) for t, v in zip(s.start, s.p99) if v]
        else:
            pts = [(t + s.step / 2, e) for t, e in zip(s.start, s.errors)]
        if pts:
            body.append(polyline(plot, pts, k, name_of(r)))
    title = "p99 latency over time" if what == "p99" else "Errors over time"
    return svg(f"{what}-time", title, body)


def share_chart(results: Sequence[AlgorithmResult]) -> str:
    """Grouped bars: for each backend, one bar per algorithm."""
    names: list[str] = []
    for r in results:
        for b in r.backends:
            if b.name not in names:
                names.append(b.name)
    if not names:
        return ""
    top = max(b.share for r in results for b in r.backends) or 1.0
    plot = Plot(0.0, float(len(names)), 0.0, top * 1.1)
    body = frame(plot, "backend", "share of attempts", lambda v: "", lambda v: f"{v:.0%}")
    group = (plot.x(1) - plot.x(0)) * 0.8
    bar_width = group / max(len(results), 1)
    for i, name in enumerate(names):
        if len(names) <= 24:
            body.append(f'<text x="{plot.x(i + 0.5):.1f}" y="{HEIGHT - BOTTOM + 14}" '
                        f'text-anchor="middle">{esc(name[:10])}</text>')
    for k, r in enumerate(results):
        shares = {b.name: b.share for b in r.backends}
        rects = []
        for i, name in enumerate(names):
            if name not in shares:
                continue
            x = plot.x(i) + (plot.x(1) - plot.x(0)) * 0.1 + k * bar_width
            y = plot.y(shares[name])
            rects.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(bar_width - 0.5, 0.5):.1f}" '
                         f'height="{plot.y(0) - y:.1f}"><title>{esc(name_of(r))}: {esc(name)} '
                         f'{shares[name]:.1%}</title></rect>')
        body.append(f'<g class="series" data-series="{esc(name_of(r))}" fill="{colour(k)}">'
                    + "".join(rects) + "</g>")
    return svg("share", "Share of attempts per backend", body)


def error_chart(results: Sequence[AlgorithmResult]) -> str:
    """Stacked horizontal bars: each algorithm's errors by cause (or a note: none)."""
    causes = [(key, label) for key, label in CAUSE_LABELS
              if any(r.errors_by_cause.get(key) for r in results)]
    order = ranked(results)
    height = TOP + BOTTOM + 26 * len(order) + 30
    if not causes:
        body = [f'<text class="series" data-series="none" x="{LEFT}" y="{TOP + 20}">'
                f'No errors under any algorithm.</text>']
        return svg("errors", "Errors by cause", body, height=TOP + 40)
    top = max(r.errors for r in order) or 1
    name_w = 12 + 7 * min(max(len(name_of(r)) for r in order), 24)
    plot = Plot(0.0, top * 1.05, 0.0, 1.0, height=height, left=name_w)
    body = frame(plot, "requests that got an error", "", lambda v: f"{v:,.0f}", lambda v: "")
    for row, r in enumerate(order):
        y = TOP + 8 + row * 26
        body.append(f'<text x="{name_w - 6}" y="{y + 13}" text-anchor="end">'
                    f'{esc(name_of(r)[:24])}</text>')
        x = plot.x(0)
        for k, (key, label) in enumerate(causes):
            n = r.errors_by_cause.get(key, 0)
            if not n:
                continue
            w = plot.x(n) - plot.x(0)
            body.append(f'<rect class="series" data-series="{esc(label)}" x="{x:.1f}" y="{y}" '
                        f'width="{max(w, 1):.1f}" height="18" fill="{colour(k + 3)}">'
                        f'<title>{esc(name_of(r))}: {n:,} {esc(label)}</title></rect>')
            x += w
    return svg("errors", "Errors by cause", body, height=height) + _cause_legend(causes)


def _cause_legend(causes) -> str:
    items = "".join(f'<span style="margin-right:14px"><span style="display:inline-block;'
                    f'width:12px;height:10px;background:{colour(k + 3)}"></span> '
                    f'{esc(label)}</span>' for k, (_, label) in enumerate(causes))
    return f'<div class="legend">{items}</div>'


def ranking(report: Report) -> str:
    results = report.results
    seeds = len(report.seeds)
    rows = []
    best = ranked(results)[0]

    def cell(r: AlgorithmResult, key: str) -> str:
        v = r.interval(key)
        text = fmt_latency(v.mean)
        return text + (f" ± {fmt_latency(v.half)}" if v.half is not None else "")
    for r in ranked(results):
        e = r.interval("errors")
        errors = f"{e.mean:,.0f}" + (f" ± {e.half:,.0f}" if e.half is not None else "")
        rows.append(f'<tr class="{"best" if r is best else ""}"><td>{esc(name_of(r))}</td>'
                    + "".join(f"<td>{esc(cell(r, k))}</td>" for k in ("mean", "p50", "p99",
                                                                       "p999"))
                    + f"<td>{esc(errors)}</td><td>{r.retries:,}</td>"
                      f"<td>{r.fairness:.3f}</td></tr>")
    note = f"means over {seeds} seeds ± 95% confidence" if seeds > 1 else "one seed"
    return ('<table><thead><tr><th>algorithm</th><th>mean</th><th>p50</th><th>p99</th>'
            '<th>p99.9</th><th>errors</th><th>retries</th><th>fairness</th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table><p class="note">{esc(note)}</p>')


def html_report(report: Report) -> str:
    sc = report.scenario
    names = [name_of(r) for r in report.results]
    seeds = report.seeds
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"
    requests = report.results[0].requests if report.results else 0
    verdict = "".join(f'<p class="{"lead" if k == 0 else ""}">{esc(s)}</p>'
                      for k, s in enumerate(report.verdict))
    suggestion = f'<pre class="suggest">{esc(report.suggestion)}</pre>' \
        if report.suggestion else ""
    events = ""
    if sc.timeline:
        events = "<h2>Timeline</h2><ul>" + "".join(
            f"<li>{esc(describe_event(ev))}</li>" for ev in sc.timeline) + "</ul>"
    sections = [
        ("Latency distribution", "What fraction of requests finished within a given time, "
                                 "errors included when the client got them.", cdf_chart(report)),
        ("p99 over time", "Per interval of virtual time; dashed lines are timeline events.",
         over_time_chart(report, "p99")),
        ("Errors over time", "Requests that got an error, per interval.",
         over_time_chart(report, "errors")),
        ("Share per backend", "Each backend's part of the attempts sent.",
         share_chart(report.results)),
        ("Errors by cause", "What the client got, per algorithm.", error_chart(report.results)),
    ]
    body = "".join(f"<h2>{esc(title)}</h2><p class=\"note\">{esc(note)}</p>"
                   + (legend(names) if title != "Errors by cause" else "") + chart
                   for title, note, chart in sections if chart)
    title = "lbctl simulate report"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{CSS}</style></head>
<body>
<h1>{esc(title)}</h1>
<p class="meta">{esc(sc.title if report.source != "compare" else "two configs compared")}<br>
{requests:,} requests per run at {sc.workload.rate:,.1f}/s, {esc(seed_text)}; lbctl {esc(__version__)}</p>
<div class="verdict">{verdict}</div>
{suggestion}
<h2>Algorithms, best first</h2>
{ranking(report)}
{events}
{body}
</body></html>
"""
