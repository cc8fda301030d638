"""Invariants that hold for any scenario: every request is accounted for once, every number
is in range, and the same seed repeats the run exactly."""

from __future__ import annotations

import math
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbctl.balancing import ALGORITHMS
from lbctl.config.model import Health
from lbctl.simulate.driver import OK, run_algorithm
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import (BackendSpec, Event, proxy_settings, Scenario, Service, Workload)

services = st.sampled_from([
    Service("exponential", mean=0.01), Service("constant", mean=0.02),
    Service("uniform", mean=0.015, low=0.01, high=0.02),
    Service("lognormal", mean=0.01, p99=0.05),
    Service("empirical", mean=0.02, values=(0.01, 0.03)),
])


@st.composite
def scenarios(draw):
    n = draw(st.integers(1, 6))
    backends = tuple(
        BackendSpec(f"b{i}", draw(services), concurrency=draw(st.integers(1, 3)),
                    speed=draw(st.sampled_from([0.5, 1.0, 2.0])),
                    weight=draw(st.sampled_from([1.0, 2.0, 5.0])),
                    backup=(i > 1 and draw(st.booleans())))
        for i in range(1, n + 1))
    names = [b.name for b in backends]
    events = draw(st.lists(st.builds(
        Event, at=st.floats(0, 3), action=st.sampled_from(
            ["down", "up", "slow", "error", "refuse", "reset", "blackhole", "recover"]),
        backends=st.lists(st.sampled_from(names), min_size=1, max_size=2).map(tuple),
        factor=st.sampled_from([2.0, 4.0]), fraction=st.sampled_from([0.3, 1.0]),
        latency=st.just(0.001)), max_size=5))
    proxy = proxy_settings(retries=draw(st.integers(0, 2)),
                  retry_on=draw(st.sampled_from([("connect", "reset"), ("timeout",), ("5xx",),
                                                 ("connect", "reset", "timeout", "5xx")])),
                  timeout=draw(st.sampled_from([0.05, 0.5, math.inf])),
                  slow_start=draw(st.sampled_from([0.0, 1.0])),
                  panic_threshold=draw(st.sampled_from([0.0, 50.0])))
    if draw(st.booleans()):
        proxy = replace(proxy, health=Health(interval=0.5, timeout=0.1, rise=1, fall=2))
    client = draw(st.sampled_from([0.2, 1.0])) if proxy.timeouts.response == math.inf else \
        draw(st.sampled_from([0.2, 1.0, math.inf]))
    workload = Workload(draw(st.sampled_from(["poisson", "uniform"])),
                        rate=draw(st.sampled_from([20.0, 100.0, 400.0])),
                        requests=draw(st.integers(1, 600)), keys=7)
    return Scenario(backends=backends, workload=workload, timeline=tuple(sorted(
        events, key=lambda e: e.at)), proxy=proxy, client_timeout=client,
        seed=draw(st.integers(0, 99)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(sorted(ALGORITHMS)))
def test_every_request_is_accounted_for(sc, algorithm):
    rec = run_algorithm(sc, algorithm)
    n = sc.workload.requests
    assert len(rec.latency) == len(rec.arrival) == len(rec.status) == n
    assert len(rec.attempts) == len(rec.backend) == n
    assert all(lat >= 0 for lat in rec.latency)
    deadline = min(sc.client_timeout, (sc.proxy.retries + 1) * sc.proxy.timeouts.response)
    if deadline < math.inf:
        assert max(rec.latency) <= deadline + 1e-9
    assert all(a <= sc.proxy.retries + 1 for a in rec.attempts)
    # Every attempt started on a backend ended there (the pool saw each on_end).
    assert all(b.inflight == 0 for b in rec.backends)
    assert sum(b.started for b in rec.backends) == sum(rec.attempts)
    result = summarize(rec)
    assert result.errors == n - rec.status.count(OK)
    assert all(0.0 <= b.utilization <= 1.0 for b in result.backends)
    assert 0.0 < result.fairness <= 1.0 + 1e-9
    lat = result.latency
    assert lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    again = run_algorithm(sc, algorithm)
    assert list(again.latency) == list(rec.latency) and again.status == rec.status
