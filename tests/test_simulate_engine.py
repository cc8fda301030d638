"""The driver's mechanics: faults and health checks, timeouts and retries, streams, the real pool."""

from __future__ import annotations

import math

import pytest

from lbctl.config.model import Health
from lbctl.simulate.driver import (CLIENT_STATUS, ERROR_5XX, ERROR_CONNECT, ERROR_NO_BACKEND,
                                   ERROR_TIMEOUT, OK, run_algorithm)
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import (BackendSpec, Event, Scenario, Service, Workload,
                                     proxy_settings)

CONSTANT = Service("constant", mean=0.010)

# serve retries only connect failures and resets unless a pool opts in; these tests opt in.
RETRY_ALL = ("connect", "reset", "timeout", "5xx")


def pool(n=4, *, rate=100.0, requests=4000, timeline=(), proxy=proxy_settings(), client=math.inf,
         arrivals="uniform", service=CONSTANT, backup=()):
    backends = tuple(BackendSpec(f"b{i}", service, backup=f"b{i}" in backup)
                     for i in range(1, n + 1))
    return Scenario(backends=backends, workload=Workload(arrivals, rate=rate, requests=requests),
                    timeline=tuple(timeline), proxy=proxy, client_timeout=client, seed=2)



# Probes every second (+/- 10%), two failures to go down, two successes to come back: a
# fault is noticed between 1 and 2.2 s after it starts (the second failed probe).
HEALTH = Health(interval=1.0, timeout=0.5, rise=2, fall=2)
DETECT = 2.3


@pytest.mark.parametrize("algorithm", ["round_robin", "random", "least_conn", "p2c", "ewma",
                                       "weighted", "consistent_hash"])
def test_down_backend_fails_until_health_checks_notice_then_gets_nothing(sends, algorithm):
    # 100 requests/s for 40 s; b2 refuses connections from 10 s to 20 s. Until two probes
    # have failed it still gets traffic (each attempt refused and retried elsewhere, as
    # serve's default retry_on "connect" does), then nothing until two probes pass again.
    sc = pool(rate=100.0, requests=4000, proxy=proxy_settings(health=HEALTH),
              timeline=[Event(10.0, "down", ("b2",)), Event(20.0, "up", ("b2",))])
    rec = run_algorithm(sc, algorithm)
    during = [name for t, name in sends if 10.0 + DETECT <= t < 20.0]
    assert during and "b2" not in during
    window = [t for t, name in sends if name == "b2" and 10.0 <= t < 10.0 + DETECT]
    assert window                                       # the detection window is not free
    assert any(name == "b2" for t, name in sends if t >= 20.0 + DETECT)
    assert any(name == "b2" for t, name in sends if t < 10.0)
    result = summarize(rec)
    assert result.errors == 0 and result.retries == len(window)
    down, up = [(t, healthy) for t, i, healthy in rec.flips]
    assert 11.0 <= down[0] <= 10.0 + DETECT and not down[1]
    assert 21.0 <= up[0] <= 20.0 + DETECT and up[1]


def test_without_health_checks_a_down_backend_keeps_failing_as_in_serve(sends):
    # No [health]: serve assumes backends are up, so b2 keeps getting its turn, every
    # attempt refused and retried elsewhere; with retries = 0 each of those is a 502.
    sc = pool(timeline=[Event(10.0, "down", ("b2",))], proxy=proxy_settings(retries=0))
    rec = run_algorithm(sc, "round_robin")
    to_b2 = sum(1 for t, name in sends if name == "b2" and t >= 10.0)
    assert to_b2 == 750                             # a quarter of 3000 arrivals
    assert rec.status.count(ERROR_CONNECT) == to_b2
    assert {CLIENT_STATUS[code] for code in rec.status} == {200, 502}


def test_blackhole_with_proxy_timeout_is_retried_elsewhere(sends):
    # b1 never answers; the proxy gives up on an attempt after 100 ms and retries once on
    # another backend, so no request fails but each one sent to b1 costs a retry and 100 ms.
    sc = pool(timeline=[Event(0.0, "blackhole", ("b1",))],
              proxy=proxy_settings(retries=1, retry_on=RETRY_ALL, timeout=0.1), client=1.0)
    result = summarize(rec := run_algorithm(sc, "round_robin"))
    to_b1 = sum(1 for _, name in sends if name == "b1")
    # Round-robin: a retry takes the turn of the backend after the one it skips, so b1 gets
    # more than a quarter of the 4000 (every third arrival when retries come back at once).
    assert 1000 < to_b1 <= 1334
    assert result.errors == 0 and result.retries == to_b1
    retried = [lat for lat, n in zip(rec.latency, rec.attempts) if n == 2]
    assert len(retried) == to_b1
    assert all(lat == pytest.approx(0.110) for lat in retried)   # timeout + 10 ms service


def test_blackhole_without_retries_shows_as_timeouts():
    sc = pool(timeline=[Event(0.0, "blackhole", ("b1",))],
              proxy=proxy_settings(retries=0, retry_on=RETRY_ALL, timeout=0.1), client=1.0)
    rec = run_algorithm(sc, "round_robin")
    assert rec.status.count(ERROR_TIMEOUT) == 1000
    assert summarize(rec).errors == 1000 and summarize(rec).retries == 0
    assert max(rec.latency) == pytest.approx(0.1)


def test_client_timeout_ends_a_blackholed_request_without_retry():
    # No proxy timeout: the client's own deadline ends the request; the proxy cannot retry
    # for a client that left.
    sc = pool(timeline=[Event(0.0, "blackhole", ("b1",), fraction=0.5)], client=0.5)
    rec = run_algorithm(sc, "round_robin")
    result = summarize(rec)
    assert result.retries == 0
    # Half of b1's 1000 requests, give or take the binomial noise (sd ~ 16).
    assert 400 < result.errors < 600
    assert all(lat == pytest.approx(0.5) for lat, s in zip(rec.latency, rec.status) if s != OK)


def test_fast_5xx_is_retried_and_counted_on_the_backend(sends):
    sc = pool(timeline=[Event(0.0, "error", ("b3",), latency=0.002)],
              proxy=proxy_settings(retries=1, retry_on=RETRY_ALL))
    rec = run_algorithm(sc, "round_robin")
    result = summarize(rec)
    to_b3 = sum(1 for _, name in sends if name == "b3")
    # Round-robin: the retry takes b4's turn, so b3 gets every third arrival.
    assert to_b3 == 1333
    assert result.errors == 0 and result.retries == to_b3
    b3 = next(b for b in rec.backends if b.name == "b3")
    assert b3.failures == to_b3                 # the pool saw every failure (on_end ok=False)
    retried = {round(lat, 9) for lat, n in zip(rec.latency, rec.attempts) if n == 2}
    assert retried == {0.012}


def test_5xx_with_no_retry_left_is_an_error():
    sc = pool(timeline=[Event(0.0, "error", ("b1", "b2", "b3", "b4"))],
              proxy=proxy_settings(retries=1, retry_on=RETRY_ALL))
    rec = run_algorithm(sc, "round_robin")
    assert rec.status.count(ERROR_5XX) == 4000
    assert summarize(rec).retries == 4000


def test_slow_event_and_recover():
    # Constant 10 ms service and 10 ms between arrivals: nobody ever queues, so a request's
    # latency is its service time: 30 ms on b1 between 10 s and 20 s, 10 ms otherwise.
    sc = pool(timeline=[Event(10.0, "slow", ("b1",), factor=3.0),
                        Event(20.0, "recover", ("b1",))])
    rec = run_algorithm(sc, "round_robin")
    for t, lat, b in zip(rec.arrival, rec.latency, rec.backend):
        expected = 0.030 if b == 0 and 10.0 <= t < 20.0 else 0.010
        assert lat == pytest.approx(expected), (t, b)


def test_backup_takes_over_only_when_primaries_are_down(sends):
    sc = pool(n=3, backup=("b3",), proxy=proxy_settings(health=HEALTH),
              timeline=[Event(10.0, "down", ("b1", "b2")), Event(20.0, "up", ("b1", "b2"))])
    rec = run_algorithm(sc, "least_conn")
    assert {name for t, name in sends if t < 10.0 or t >= 20.0 + DETECT} == {"b1", "b2"}
    assert {name for t, name in sends if 10.0 + DETECT <= t < 20.0} == {"b3"}
    # Before the checks notice, a request tried on b1 and retried on b2 gets a 502.
    assert rec.status.count(ERROR_CONNECT) > 0
    assert all(10.0 <= t < 10.0 + DETECT for t, code in zip(rec.arrival, rec.status) if code)


def test_no_eligible_backend_is_an_immediate_503():
    sc = pool(n=2, proxy=proxy_settings(health=HEALTH), timeline=[Event(5.0, "down", ("b1", "b2"))])
    rec = run_algorithm(sc, "p2c")
    late = [code for t, code in zip(rec.arrival, rec.status) if t >= 5.0 + DETECT]
    assert late and set(late) == {ERROR_NO_BACKEND}
    assert all(lat == 0 for t, lat in zip(rec.arrival, rec.latency) if t >= 5.0 + DETECT)
    early = {code for t, code in zip(rec.arrival, rec.status) if 5.0 <= t < 6.0}
    assert early == {ERROR_CONNECT}                 # refused twice: a 502 each


def test_panic_mode_spreads_over_down_backends_as_serve_does():
    # Three of four refuse from the start; health checks take them out, leaving 25% of the
    # primaries, under panic_threshold 50: the pool ignores health and spreads over all
    # four. With one retry on "connect", a request fails when both attempts hit refusing
    # backends: 3/4 x 2/3 = 1/2 of the requests get a 502 after detection.
    backends = tuple(BackendSpec(f"b{i}", CONSTANT) for i in range(1, 5))
    from dataclasses import replace
    from lbctl.simulate.scenario import Fault
    backends = tuple(replace(b, failure=Fault("refuse")) if b.name != "b4" else b
                     for b in backends)
    sc = Scenario(backends=backends, workload=Workload("uniform", rate=100.0, requests=4000),
                  proxy=proxy_settings(health=HEALTH, panic_threshold=50), seed=4)
    rec = run_algorithm(sc, "random")
    late = [code for t, code in zip(rec.arrival, rec.status) if t >= DETECT]
    share = late.count(ERROR_CONNECT) / len(late)
    # 3,770 requests: the binomial standard deviation of the share is 0.008; 0.04 is five.
    assert abs(share - 0.5) < 0.04 and set(late) == {OK, ERROR_CONNECT}


def test_streams_are_separate_and_runs_repeat():
    sc = pool(arrivals="poisson", service=Service("exponential", mean=0.02))
    a, b = run_algorithm(sc, "random"), run_algorithm(sc, "p2c")
    # Every algorithm sees the very same arrivals (the balancer draws from its own stream).
    assert sorted(a.arrival) == sorted(b.arrival)
    again = run_algorithm(sc, "random")
    assert list(again.latency) == list(a.latency) and list(again.backend) == list(a.backend)


def test_least_conn_over_a_thousand_backends():
    service = Service("exponential", mean=1.0)
    backends = tuple(BackendSpec(f"b{i}", service) for i in range(1000))
    sc = Scenario(backends=backends, workload=Workload(rate=900.0, requests=20_000))
    result = summarize(run_algorithm(sc, "least_conn"))
    assert result.errors == 0
    assert sum(b.requests for b in result.backends) == 20_000


def test_utilization_counts_only_the_arrival_window():
    # One backend, constant 10 ms service, an arrival every 5 ms: twice what it can serve.
    # From the first arrival (t = 5 ms) to the last (t = 20 s) it is never idle, so its
    # utilization is (20 - 0.005) / 20 even though its backlog runs far past 20 s.
    sc = pool(n=1, rate=200.0, requests=4000)
    rec = run_algorithm(sc, "round_robin")
    assert rec.horizon == pytest.approx(20.0)
    assert summarize(rec).backends[0].utilization == pytest.approx((20 - 0.005) / 20)


def test_utilization_with_late_retries_and_concurrency(sends):
    # Two slots per backend; b1 black-holes from 9 s, its requests time out after 0.5 s and
    # are retried on b2, the last of them after the arrivals end: that late work falls
    # outside the window and must not count. At this load nobody queues for a slot (at most
    # an arrival and a retry at once), so each attempt to b2 is busy from the moment it is
    # sent for 10 ms, and the expected busy time follows from the log of sends.
    backends = tuple(BackendSpec(f"b{i}", CONSTANT, concurrency=2) for i in (1, 2))
    sc = Scenario(backends=backends, workload=Workload("uniform", rate=100.0, requests=1000),
                  timeline=(Event(9.0, "blackhole", ("b1",)),),
                  proxy=proxy_settings(retries=1, retry_on=RETRY_ALL, timeout=0.5), seed=2)
    rec = run_algorithm(sc, "round_robin")
    horizon = rec.horizon
    assert horizon == pytest.approx(10.0)
    assert any(t > horizon for t, name in sends if name == "b2")      # late retries exist
    busy_b2 = sum(min(0.010, horizon - t) for t, name in sends if name == "b2" and t < horizon)
    b1, b2 = summarize(rec).backends
    assert b2.utilization == pytest.approx(busy_b2 / (2 * horizon))
    # b1 served every other arrival until 9 s, and nothing after.
    assert b1.utilization == pytest.approx(450 * 0.010 / (2 * horizon))


def test_by_default_a_fast_5xx_is_not_retried_as_in_serve():
    sc = pool(timeline=[Event(0.0, "error", ("b1",))], proxy=proxy_settings(retries=1))
    rec = run_algorithm(sc, "round_robin")
    assert rec.status.count(ERROR_5XX) > 0          # relayed, as serve relays a 5xx
    assert max(rec.attempts) == 1                   # never a second attempt
