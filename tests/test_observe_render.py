"""Accounting arithmetic and the dashboard drawn to a file-backed rich Console."""

from __future__ import annotations

import io
import re
import tracemalloc

import pytest

from rich.console import Console
from rich.text import Text

from lbctl.balancing import Outcome
from lbctl.observe.accounting import BOUNDS, WINDOW, BackendStats, quantile
from lbctl.observe.render import SPARKS, dashboard, rate, sparkline


def test_percentiles_are_bucket_upper_bounds_over_the_window():
    s = BackendStats()
    # 90 fast (3 ms -> the 5 ms bucket) and 10 slow (0.3 s -> the 0.4 s bucket) at t=100.
    for _ in range(90):
        s.record(100.2, 200, Outcome.OK, 0.003, False, 0, 10)
    for _ in range(10):
        s.record(100.7, 500, Outcome.SERVER_ERROR, 0.3, False, 0, 0)
    assert s.percentiles(100.9) == {"p50": 0.005, "p90": 0.005, "p99": 0.4}
    assert s.classes()["2xx"] == 90 and s.classes()["5xx"] == 10 and s.errors == 10
    assert s.bytes_out == 900 and s.requests == 100
    # 59 s later the samples are still in the window; at 60 s they have left it.
    assert s.percentiles(159.0)["p50"] == 0.005
    assert s.percentiles(160.0)["p50"] is None
    # The cumulative histogram keeps everything.
    assert sum(s.buckets) == 100


def test_a_slot_is_reused_in_place_when_its_second_comes_round_again():
    s = BackendStats()
    s.record(10.0, 200, Outcome.OK, 0.001, False, 0, 0)
    slot_list = s.win_buckets[10 % WINDOW]
    s.record(10.0 + WINDOW, 200, Outcome.OK, 0.001, False, 0, 0)
    assert s.win_buckets[10 % WINDOW] is slot_list
    assert s.win_requests[10 % WINDOW] == 1
    assert s.series(10.0 + WINDOW)["requests"][-1] == 1
    assert sum(s.series(10.0 + WINDOW)["requests"]) == 1


def test_errors_by_kind_and_retries():
    s = BackendStats()
    for outcome in (Outcome.CONNECT_ERROR, Outcome.TIMEOUT, Outcome.RESET, Outcome.INVALID):
        s.record(1.0, 0, outcome, 0.01, True, 5, 0)
    assert (s.connect_errors, s.timeouts, s.resets, s.invalid, s.retries) == (1, 1, 1, 1, 4)
    assert s.bytes_in == 20 and s.errors == 4
    assert s.series(1.0)["errors"][-1] == 4


def test_record_keeps_no_memory_per_request():
    # Python allocates the int objects of the counters themselves; what must not happen is
    # anything that grows with the number of requests (lists, tuples, dicts per record).
    s = BackendStats()
    for i in range(200):
        s.record(1000.0 + i / 100, 200, Outcome.OK, 0.004, False, 0, 100)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(2000):
            s.record(1002.0 + i / 1000, 200, Outcome.OK, 0.004, False, 0, 100)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename")
                if "accounting" in str(stat.traceback))
    assert grown < 1024            # a dozen counter ints, not 2000 of anything


def test_quantile_edges():
    assert quantile([0] * (len(BOUNDS) + 1), 0.5) is None
    beyond = [0] * len(BOUNDS) + [3]
    assert quantile(beyond, 0.99) == BOUNDS[-1]


def test_sparkline_and_rate():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7], width=8) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, None, 1], width=3) == "  █"
    assert len(sparkline(list(range(60)), width=20)) == 20
    assert len(sparkline(list(range(60)))) == 15           # 4 s per character
    assert rate({"requests": [0] * 54 + [10, 10, 10, 10, 10, 99]}) == 10.0
    # 60 s in 8 characters: groups of 8 from the newest second; the short group is the oldest.
    assert sparkline([1] * 4 + [5] * 56, width=8, combine=max) == "▂███████"


def stats_doc() -> dict:
    history = {"requests": [0] * 50 + [20] * 10, "errors": [0] * 59 + [2],
               "p99": [None] * 50 + [0.02] * 10}

    def backend(name, state, **kw):
        doc = {"name": name, "url": f"http://{name}", "state": state, "slow_start_progress": None,
               "weight": 2.0, "effective_weight": 2.0, "inflight": 3, "requests": 200,
               "errors": 2, "latency": {"p50": 0.004, "p90": 0.01, "p99": 0.02},
               "history": history}
        doc.update(kw)
        return doc
    return {
        "version": "0.1.0", "uptime": 3725.0, "config": "lb.toml", "loaded_at": 0,
        "metrics": True,
        "frontend": {"requests": 400, "responses": {"2xx": 398, "5xx": 2}, "client_aborts": 0},
        "pools": [
            {"name": "api", "algorithm": "ewma", "mode": "normal", "requests": 400,
             "errors": 4, "backends": [
                 backend("api-1", "up"),
                 backend("api-2", "slow_start", slow_start_progress=0.25,
                         effective_weight=0.5),
             ]},
            {"name": "web", "algorithm": "weighted", "mode": "normal", "requests": 0,
             "errors": 0, "backends": [backend("web-1", "draining", history=None,
                                               requests=0, errors=0, inflight=1)]},
        ],
    }


def render(doc: dict, width: int, **kw) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None).print(dashboard(doc, **kw))
    return buffer.getvalue()


def table_rows(out: str, names) -> dict[str, list[str]]:
    """Each backend's row split into cells (columns are two or more spaces apart)."""
    return {line.split()[0]: re.split(r" {2,}", line.strip()) for line in out.splitlines()
            if line.split() and line.split()[0] in names}


def test_dashboard_renders_header_pools_and_rows():
    out = render(stats_doc(), 160)
    assert "lbctl 0.1.0" in out and "up 1h02m05s" in out and "config lb.toml" in out
    assert "pool api (ewma, normal)" in out and "pool web (weighted, normal)" in out
    rows = table_rows(out, {"api-1", "api-2", "web-1"})
    assert set(rows) == {"api-1", "api-2", "web-1"}
    # backend, state, weight, in-flight, req/s, p50, p99, errors, requests, then sparklines
    assert rows["api-1"][:9] == ["api-1", "up", "2", "3", "20.0", "4.0ms", "20ms", "1.0%", "200"]
    assert "█" in rows["api-1"][9] and "█" in rows["api-1"][-1]
    assert rows["api-2"][1:3] == ["slow start 25%", "0.5/2"]
    assert rows["web-1"][1] == "draining"
    assert "40.0 req/s" in out                              # header total: 2 x 20


def busy_doc() -> dict:
    """Wide figures: 7-digit counts, seconds-long latencies, slow start, a 20-letter name."""
    doc = stats_doc()
    api = doc["pools"][0]["backends"]
    api[0].update(requests=1_234_567, errors=99_999, inflight=1234,
                  latency={"p50": 2.5, "p90": 9.0, "p99": 12.5})
    api[1].update(name="payments-eu-west-1ab", weight=10.0, effective_weight=0.125)
    doc["pools"][1]["backends"][0].update(state="ejected", weight=100.0, effective_weight=100.0)
    return doc


HEADS = ("backend", "state", "weight", "in-flight", "req/s", "p50", "p99", "errors", "requests")
@pytest.mark.parametrize("width", [80, 100, 120])
@pytest.mark.parametrize("doc, sparks", [
    # The numbers take 80 columns in the usual document and 95 in the busy one; the
    # sparklines get what is left, both or none here (one fits at 90 in the usual one).
    (stats_doc, {80: [], 100: ["req/s 1m", "p99 1m"], 120: ["req/s 1m", "p99 1m"]}),
    (busy_doc, {80: [], 100: [], 120: ["req/s 1m", "p99 1m"]}),
])
def test_dashboard_fits_the_terminal_without_cutting_a_number_or_a_header(width, doc, sparks):
    out = render(doc(), width)
    lines = out.splitlines()
    assert "…" not in out
    assert max(Text(line).cell_len for line in lines) <= width
    heads = [lines[i - 1] for i, line in enumerate(lines) if line.startswith("───")]
    assert len(heads) == 2
    for head in heads:
        assert head.split()[:len(HEADS)] == list(HEADS)
    assert [h for h in ("req/s 1m", "p99 1m") if h in heads[0]] == sparks[width]
    wide = table_rows(render(doc(), 200), {"api-1", "api-2", "payments-eu-west-1ab", "web-1"})
    for name, cells in wide.items():
        # The row's first line (a long name may wrap) ends with its seven figures, each
        # whole and in its column; sparkline characters aside.
        line = next(line for line in lines if line.split() and name.startswith(line.split()[0])
                    and len(line.split()[0]) >= 4)
        tokens = [t for t in line.split() if not set(t) <= set(SPARKS)]
        assert tokens[-7:] == cells[2:9], (line, cells)
    assert ("█" in out) == bool(sparks[width])


def test_one_sparkline_when_only_one_fits():
    out = render(stats_doc(), 90)
    assert "req/s 1m" in out and "p99 1m" not in out and "█" in out


def test_at_120_columns_the_usual_dashboard_has_both_sparklines_at_full_width():
    out = render(stats_doc(), 120)
    rows = table_rows(out, {"api-1"})
    assert len(rows["api-1"][9]) == 15                      # req/s over 60 s, 4 s a character


@pytest.mark.parametrize("width", [40, 50, 60, 70])
def test_a_narrower_terminal_loses_whole_columns_never_part_of_a_number(width):
    out = render(busy_doc(), width)
    assert "…" not in out
    assert max(Text(line).cell_len for line in out.splitlines()) <= width
    shown = [h for h in HEADS if re.search(rf"(^| ){re.escape(h)}( |$)", out, re.M)]
    assert shown[:2] == ["backend", "state"] and {"req/s", "p99", "errors"} <= set(shown)
    # Every figure on screen is one the wide dashboard shows: none is cut short.
    whole = set(render(busy_doc(), 200).split())
    for token in out.split():
        if token[0].isdigit():
            assert token in whole, token


def test_dashboard_colours_states():
    buffer = io.StringIO()
    Console(file=buffer, width=160, force_terminal=True, color_system="standard").print(
        dashboard(stats_doc()))
    out = buffer.getvalue()
    assert "\x1b[32mup" in out                 # green
    assert "\x1b[33mdraining" in out           # yellow


class FakeAdmin:
    def __init__(self, on_call=None) -> None:
        self.calls = 0
        self.on_call = on_call

    def stats(self) -> dict:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(self.calls)
        return stats_doc()


def test_live_view_quits_on_q_from_a_terminal_and_restores_it():
    import os
    import termios

    from lbctl.observe.dashboard import watch
    master, slave = os.openpty()
    stdin = os.fdopen(slave, "rb", buffering=0)
    saved = termios.tcgetattr(slave)
    # The key arrives once the dashboard has been polled twice: a redraw happened first.
    client = FakeAdmin(lambda n: os.write(master, b"q") if n == 2 else None)
    buffer = io.StringIO()
    try:
        watch(client, Console(file=buffer, width=160, color_system=None), 0.01, stdin=stdin)
        assert client.calls == 2
        assert termios.tcgetattr(slave) == saved          # cbreak undone
        assert "pool api (ewma, normal)" in buffer.getvalue()
    finally:
        stdin.close()
        os.close(master)


def test_live_view_ctrl_c_quits_cleanly():
    from lbctl.observe.dashboard import watch

    def interrupt(n):
        if n == 3:
            raise KeyboardInterrupt
    client, buffer = FakeAdmin(interrupt), io.StringIO()
    watch(client, Console(file=buffer, width=160, color_system=None), 0.001,
          stdin=io.StringIO())                            # not a terminal: no key reading
    assert client.calls == 3                              # it stopped at the interrupt
    assert "pool api (ewma, normal)" in buffer.getvalue()  # after drawing what it had
