"""Passive ejection (outlier detection): consecutive failures eject, for a time that doubles
up to a cap; a success resets the count; at most max_ejection_percent of a pool is out.

The pool's clock is a ``Clock`` the test moves, so ejection and expiry need no sleeping.
"""

from __future__ import annotations

import asyncio
import random

from lbctl.balancing import Backend, Outcome, make_pool
from lbctl.config.model import Outlier, Timeouts
from lbctl.health.passive import OutlierDetector
from tests.health_support import LogLines, load, proxy, start
from tests.support import ManualClock
from tests.support import backend_config, config, raw_exchange

OUTLIER = Outlier(consecutive_failures=3, ejection_time=10.0, max_ejection_time=35.0,
                  max_ejection_percent=50.0)


def setup(n: int = 4, outlier: Outlier = OUTLIER):
    clock = ManualClock()
    backends = [Backend(f"b{i}") for i in range(n)]
    pool = make_pool("api", backends, "round_robin", rng=random.Random(1), clock=clock)
    return clock, pool, backends, OutlierDetector(pool, outlier, clock=clock)


def fail(sink: OutlierDetector, b: Backend, times: int,
         outcome: Outcome = Outcome.SERVER_ERROR) -> None:
    for _ in range(times):
        sink.record(b, outcome)


def test_consecutive_failures_eject_and_a_success_resets_the_count():
    clock, pool, (b0, *_), sink = setup()
    with LogLines() as log:
        fail(sink, b0, 2)
        sink.record(b0, Outcome.OK)             # resets: two more are not enough
        fail(sink, b0, 2, Outcome.CONNECT_ERROR)
        assert b0.eligible
        sink.record(b0, Outcome.TIMEOUT)        # third in a row
        assert not b0.eligible and b0.state == "ejected"
        assert b0.ejected_until == clock.now + 10.0
        assert log.lines == ["pool api: backend b0 EJECTED for 10s after 3 consecutive failures "
                             "(last: timeout)"]
        fail(sink, b0, 5)                       # late failures of requests already in flight
        assert b0.ejected_until == clock.now + 10.0 and len(log.lines) == 1


def test_only_configured_kinds_count_as_failures():
    _, _, (b0, *_), sink = setup(outlier=Outlier(consecutive_failures=2, failure_on=("connect",)))
    fail(sink, b0, 5, Outcome.SERVER_ERROR)
    fail(sink, b0, 5, Outcome.INVALID)
    assert b0.eligible
    fail(sink, b0, 2, Outcome.CONNECT_ERROR)
    assert not b0.eligible


def test_ejection_time_doubles_on_repeat_up_to_the_cap_and_expires_lazily():
    clock, pool, (b0, *_), sink = setup()
    lengths = []
    for _ in range(4):
        fail(sink, b0, 3)
        lengths.append(b0.ejected_until - clock.now)
        clock.advance(lengths[-1] - 0.001)
        assert pool.select(exclude=[b for b in pool.backends if b is not b0]) is None
        clock.advance(0.001)                    # expiry: the pool re-admits on its next pick
        assert pool.select(exclude=[b for b in pool.backends if b is not b0]) is b0
        assert b0.state == "up"
    assert lengths == [10.0, 20.0, 35.0, 35.0]  # 10, 20, 40 capped at 35
    assert b0.ejections == 4           # what /stats and lbctl_ejections_total show


def test_good_behaviour_is_forgiven_step_by_step():
    clock, pool, (b0, *_), sink = setup()
    fail(sink, b0, 3)
    clock.advance(10.0)
    fail(sink, b0, 3)
    assert b0.ejected_until - clock.now == 20.0
    clock.advance(20.0 + 35.0)                  # one max_ejection_time of good behaviour
    fail(sink, b0, 3)
    assert b0.ejected_until - clock.now == 20.0     # one step down from 40 (-> 20, not 10)


def test_at_most_max_ejection_percent_is_out_at_once():
    clock, pool, (b0, b1, b2, b3), sink = setup(4)
    with LogLines() as log:
        fail(sink, b0, 3)
        fail(sink, b1, 3)
        fail(sink, b2, 6)                       # would be 3 of 4 = 75% > 50%
        assert [b.state for b in (b0, b1, b2, b3)] == ["ejected", "ejected", "up", "up"]
        assert log.matching("b2 not ejected") == [
            "pool api: backend b2 not ejected after 3 consecutive failures (last: 5xx): "
            "max_ejection_percent 50% reached"]     # once per streak, not per failure
        clock.advance(10.0)                     # b0 and b1 come back
        sink.record(b2, Outcome.SERVER_ERROR)   # the streak continues: now there is room
        assert b2.state == "ejected"


def test_single_backend_pool_is_never_emptied_by_passive_ejection():
    _, pool, (b0,), sink = setup(1)
    fail(sink, b0, 10)
    assert b0.eligible and pool.select() is b0


# ---- through the proxy ------------------------------------------------------------------

async def test_proxy_failures_eject_and_the_backend_is_readmitted_after_the_ejection(
        backends, clock):
    a, _ = await start(backends, "a")
    flaky, broken = await start(backends, "flaky")
    broken.status = 503
    cfg = config({"p": [backend_config(a.url, "a"), backend_config(flaky.url, "flaky")]},
                 outlier=OUTLIER, retries=0, timeouts=Timeouts(connect=1.0, response=5.0))
    server = await proxy(backends, cfg, clock=clock)
    port = server.address[1]
    with LogLines() as log:
        # Round robin alternates: the flaky one answers 503 three times, then is ejected.
        first = await load(port, 6)
        assert [who for _, who in first] == ["a", "flaky"] * 3
        assert [s for s, who in first if who == "flaky"] == [503, 503, 503]
        assert await load(port, 10) == [(200, "a")] * 10
        assert broken.traffic == 3
        assert log.lines == ["pool p: backend flaky EJECTED for 10s after 3 consecutive "
                             "failures (last: 5xx)"]

        broken.status = 200                     # it recovers while ejected
        clock.advance(10.0)
        back = await load(port, 4)
        assert sorted(who for _, who in back) == ["a", "a", "flaky", "flaky"]
        assert all(s == 200 for s, _ in back)
        assert log.lines[-1] == "pool p: backend flaky is back from ejection"

        broken.status = 503                     # fails again: twice as long this time
        await load(port, 6)
        b = server.runtime.pools["p"].pool.by_name["flaky"]
        assert b.ejected_until - clock.now == 20.0


# ---- truncated responses, with no [outlier] ---------------------------------------------

async def cut_short(reader, writer):
    """A backend that declares 100 bytes, sends 10 and closes, whatever it is asked."""
    try:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Backend: cut\r\n\r\n"
                         + b"x" * 10)
            await writer.drain()
            writer.close()
            return
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def who_answered(port: int) -> tuple[str, bool]:
    """(X-Backend, whether the body arrived whole) for one request on its own connection."""
    raw = await asyncio.wait_for(
        raw_exchange(port, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"), 5)
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
    length = int(fields.get(b"Content-Length", b"-1"))
    return fields[b"X-Backend"].decode(), len(body) == length


async def test_without_outlier_five_truncated_responses_in_a_row_eject(backends, clock):
    a, _ = await start(backends, "a")
    port = await backends.start_raw(cut_short)
    cfg = config({"p": [backend_config(a.url, "a"),
                        backend_config(f"http://127.0.0.1:{port}", "cut")]}, retries=0)
    assert cfg.pools["p"].outlier is None
    server = await proxy(backends, cfg, clock=clock)
    with LogLines() as log:
        first = [await who_answered(server.address[1]) for _ in range(10)]
        assert first == [("a", True), ("cut", False)] * 5
        assert log.lines == ["pool p: backend cut EJECTED for 30s after 5 consecutive "
                             "failures (last: truncated)"]
        assert [await who_answered(server.address[1]) for _ in range(6)] == [("a", True)] * 6
    cut = server.runtime.pools["p"].pool.by_name["cut"]
    assert cut.ejected_until - clock.now == 30.0 and cut.ejections == 1


async def test_without_outlier_other_failures_still_eject_nobody(backends, clock):
    a, _ = await start(backends, "a")
    flaky, broken = await start(backends, "flaky")
    broken.status = 503
    cfg = config({"p": [backend_config(a.url, "a"), backend_config(flaky.url, "flaky")]},
                 retries=0)
    server = await proxy(backends, cfg, clock=clock)
    with LogLines() as log:
        answers = await load(server.address[1], 20)
    assert [s for s, who in answers if who == "flaky"] == [503] * 10
    assert log.lines == []
