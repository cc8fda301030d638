"""Summaries and rendering: the arithmetic, and what the report says."""

from __future__ import annotations

import pytest
from rich.console import Console

from lbctl.simulate.render import bar, report, sparkline
from lbctl.simulate.results import (AlgorithmResult, BackendResult, Interval, combine,
                                    confidence, jain, percentile, to_csv)
from lbctl.simulate.run import Report, Variant
from lbctl.simulate.scenario import BackendSpec, Event, Scenario, Service
from lbctl.simulate.verdict import fmt_latency, ranked, verdict


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


def scenario(speeds=(1.0, 1.0), configured=None, timeline=()):
    return Scenario(backends=tuple(BackendSpec(f"b{i + 1}", Service(), speed=s)
                                   for i, s in enumerate(speeds)), configured=configured,
                    timeline=timeline)


def seeded(name, p99s, errors=(0,), shares=(0.5, 0.5)):
    """One algorithm over several seeds: p99 and errors vary per seed."""
    runs = [result(name, p, errors[k % len(errors)], shares) for k, p in enumerate(p99s)]
    return combine(runs)


def test_ranking_puts_errors_before_latency():
    results = [result("p2c", 0.05), result("random", 0.01, errors=3), result("ewma", 0.04)]
    assert [r.algorithm for r in ranked(results)] == ["ewma", "p2c", "random"]


def test_verdict_explains_by_the_slow_backend():
    results = [result("round_robin", 2.0, errors=50, shares=(0.5, 0.5)),
               result("least_conn", 0.2, shares=(0.8, 0.2))]
    lead, errors, why = verdict(results, scenario((1.0, 1 / 3)))
    assert lead == ("least_conn won with p99 200ms and 0 errors, against 2.00s and 50 errors "
                    "for round_robin (the default).")
    assert why == ("Why least_conn: it sent the slowest backend, b2, 20.0% of the attempts "
                   "where round_robin sent 50.0%, though it can serve only 25.0% of the load.")
    assert errors.startswith("Errors are the lesson: round_robin (50) against 0 for least_conn")


def test_verdict_on_identical_backends_explains_the_algorithm():
    results = [result("random", 0.09), result("least_conn", 0.03), result("p2c", 0.05)]
    text = " ".join(verdict(results, scenario()))
    assert text.startswith("least_conn won with p99 30.0ms against 90.0ms for random. ")
    assert "fewest requests in flight" in text


def test_verdict_compares_with_the_configured_algorithm():
    results = [result("round_robin", 0.09), result("ewma", 0.03), result("p2c", 0.05)]
    text = " ".join(verdict(results, scenario(configured="p2c")))
    assert "against 50.0ms for p2c (your config)" in text


def test_report_renders_at_any_width():
    results = [result("round_robin", 0.09), result("ewma", 0.03)]
    sc = scenario()
    rep = Report(sc, [Variant("", sc, r.algorithm) for r in results], results, [], (1,),
                 verdict=verdict(results, sc))
    for width in (60, 80, 120):
        console = Console(width=width, record=True, color_system=None)
        console.print(report(rep, width=width))
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


def test_confidence_interval_is_students_t_over_the_seeds():
    # Five replications 1..5: mean 3, sample sd sqrt(2.5), t(0.975, 4) = 2.776.
    ci = confidence([1.0, 2.0, 3.0, 4.0, 5.0])
    assert ci.mean == 3.0 and ci.half == pytest.approx(2.776 * (2.5 / 5) ** 0.5)
    assert confidence([7.0]) == Interval(7.0)
    assert Interval(1.0, 0.5).overlaps(Interval(2.0, 0.6))
    assert not Interval(1.0, 0.4).overlaps(Interval(2.0, 0.5))


def test_a_winner_by_a_hair_is_within_noise():
    # outlier.toml's old verdict: ewma crowned on p99 154 ms against 156 ms, a gap far
    # inside the seed-to-seed spread. With seeds, the verdict says so.
    results = [seeded("ewma", [0.150, 0.158, 0.154, 0.149, 0.159]),
               seeded("p2c", [0.152, 0.160, 0.156, 0.151, 0.161]),
               seeded("round_robin", [0.300, 0.310, 0.305, 0.295, 0.290])]
    lead = verdict(results, scenario())[0]
    assert lead.startswith("No clear winner: ewma and p2c are within noise of each other "
                           "over 5 seeds (p99 ")
    assert "; all of them beat round_robin (the default): p99 " in lead
    # A clear gap is a winner, with its interval.
    results[1] = seeded("p2c", [0.250, 0.260, 0.256, 0.251, 0.261])
    lead = verdict(results, scenario())[0]
    assert lead.startswith("ewma won with p99 154ms ± ") and "over 5 seeds" in lead


def test_verdict_names_the_error_lesson_a_p99_winner_hides():
    # least_conn and p2c feed the backend that fails fast (its errors leave it idle-looking),
    # with more errors although their p99 is close to round_robin's.
    sc = scenario((1.0, 1.0), timeline=(Event(10.0, "error", ("b2",), fraction=0.5),))
    results = [seeded("round_robin", [0.155, 0.152, 0.158], errors=(121, 118, 125)),
               seeded("least_conn", [0.150, 0.149, 0.153], errors=(209, 201, 215),
                      shares=(0.4, 0.6)),
               seeded("p2c", [0.151, 0.150, 0.152], errors=(200, 205, 195), shares=(0.42, 0.58))]
    sentences = verdict(results, sc)
    errors = next(s for s in sentences if s.startswith("Errors are the lesson"))
    assert "least_conn (208 ± " in errors and "p2c (200 ± " in errors
    assert "against 121 ± " in errors and "for round_robin" in errors
    assert ("least_conn sends b2, which fails (error) from 10s, 60.0% of the attempts where "
            "round_robin sends 50.0%, because its fast failures leave it with the fewest "
            "requests in flight") in errors


def test_one_seed_close_call_asks_for_more_seeds():
    results = [result("ewma", 0.154), result("p2c", 0.156), result("round_robin", 0.3)]
    assert verdict(results, scenario())[-1] == (
        "ewma and p2c are 1.3% apart on p99 with one seed: run with --seeds 5 to tell a real "
        "difference from noise.")
