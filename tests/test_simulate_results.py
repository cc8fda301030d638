"""Summaries and rendering: the arithmetic, and what the report says."""

from __future__ import annotations

import pytest
from rich.console import Console

from lbctl.simulate.render import bar, fmt_latency, ranked, report, sparkline, verdict
from lbctl.simulate.results import (AlgorithmResult, BackendResult, jain, percentile,
                                    to_csv)
from lbctl.simulate.scenario import BackendSpec, Scenario, Service


def test_percentile_is_nearest_rank():
    values = list(range(1, 101))                # 1..100
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 0.999) == 100
    assert percentile([7.0], 0.5) == 7.0 and percentile([], 0.5) == 0.0


def test_jain_index():
    assert jain([0.5, 0.5, 0.5]) == pytest.approx(1.0)
    assert jain([1.0, 0.0, 0.0, 0.0]) == pytest.approx(0.25)   # 1/n: one does everything
    assert jain([1.0, 0.5]) == pytest.approx(2.25 / 2.5)
    assert jain([]) == 1.0 and jain([0.0, 0.0]) == 1.0


def test_bars():
    assert bar(1.0, 4) == "████" and bar(0.0, 4) == "    "
    assert bar(0.5, 3) == "█▌ "
    assert sparkline([1.0, 0.5, 0.0], 1.0) == "█▄ "
    assert len(sparkline([1.0] * 500, 1.0)) == 48


def result(name, p99, errors=0, shares=(0.5, 0.5)):
    return AlgorithmResult(
        name, 1000, {"mean": p99 / 3, "p50": p99 / 4, "p90": p99 / 2, "p99": p99,
                     "p999": p99 * 1.2, "max": p99 * 1.5},
        errors, {"5xx": errors, "timeout": 0, "no_backend": 0}, 0,
        tuple(BackendResult(f"b{i + 1}", int(s * 1000), s, s) for i, s in enumerate(shares)),
        jain(shares), max(shares) / (sum(shares) / len(shares)))


def scenario(speeds=(1.0, 1.0), configured=None):
    return Scenario(backends=tuple(BackendSpec(f"b{i + 1}", Service(), speed=s)
                                   for i, s in enumerate(speeds)), configured=configured)


def test_ranking_puts_errors_before_latency():
    results = [result("p2c", 0.05), result("random", 0.01, errors=3), result("ewma", 0.04)]
    assert [r.algorithm for r in ranked(results)] == ["ewma", "p2c", "random"]


def test_verdict_explains_by_the_slow_backend():
    results = [result("round_robin", 2.0, errors=50, shares=(0.5, 0.5)),
               result("least_conn", 0.2, shares=(0.8, 0.2))]
    text = verdict(results, scenario((1.0, 1 / 3)))
    assert text == ("least_conn won with p99 200ms and 0 errors, against 2.00s and 50 errors "
                    "for round_robin (the default): it sent the slowest backend, b2, 20.0% of "
                    "the requests where round_robin sent 50.0%, though it can serve only "
                    "25.0% of the load.")


def test_verdict_on_identical_backends_explains_the_algorithm():
    results = [result("random", 0.09), result("least_conn", 0.03), result("p2c", 0.05)]
    text = verdict(results, scenario())
    assert text.startswith("least_conn won with p99 30.0ms against 90.0ms for random: ")
    assert "fewest requests in flight" in text


def test_verdict_compares_with_the_configured_algorithm():
    results = [result("round_robin", 0.09), result("ewma", 0.03), result("p2c", 0.05)]
    text = verdict(results, scenario(configured="p2c"))
    assert "against 50.0ms for p2c (your config)" in text


def test_report_renders_at_any_width():
    results = [result("round_robin", 0.09), result("ewma", 0.03)]
    for width in (60, 80, 120):
        console = Console(width=width, record=True, color_system=None)
        console.print(report(scenario(), results, width=width))
        text = console.export_text()
        assert "ewma won" in " ".join(text.split())
        assert max(len(line) for line in text.splitlines()) <= width


def test_fmt_latency():
    assert [fmt_latency(x) for x in (0.000123, 0.0123, 0.123, 1.5, 12.0)] == \
        ["0.12ms", "12.3ms", "123ms", "1.50s", "12.0s"]


def test_csv_columns():
    text = to_csv([result("p2c", 0.05)])
    lines = text.splitlines()
    assert lines[0].startswith("algorithm,backend,requests,share,utilization,latency_mean")
    assert lines[1].startswith("p2c,b1,500,0.500000,0.500000,")
    assert len(lines) == 3
