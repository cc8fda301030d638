"""The parts of an instance with workers, one at a time: backend states from the master's
pools into a worker's, outcome batches back, figures summed, the control channel, and the
claim on the listening address."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from lbctl.balancing import AdminState, Backend, Outcome, make_pool
from lbctl.config.model import Address, Outlier
from lbctl.health.passive import OutlierDetector
from lbctl.observe import merge
from lbctl.observe.accounting import WINDOW, BackendStats
from lbctl.serve import listen
from lbctl.serve.channel import Channel
from lbctl.serve.outcomes import Outbox, OutcomeRelay, replay
from lbctl.serve.state import StateTracker, install
from tests.support import ManualClock


class PoolState:
    """What ``state.py`` reads of a runtime's pool: ``.pool`` and ``.config.outlier``."""

    def __init__(self, pool, outlier=None) -> None:
        self.pool = pool
        self.outcomes = None

        class Config:
            pass
        self.config = Config()
        self.config.outlier = outlier


class Runtime:
    def __init__(self, **pools) -> None:
        self.pools = pools


def pool_of(clock, *names, slow_start=0.0, algorithm="weighted"):
    import random
    return make_pool("api", [Backend(n) for n in names], algorithm, rng=random.Random(1),
                     clock=clock, slow_start=slow_start)


# ---- state: master -> worker -------------------------------------------------------------------

def test_state_changes_are_sent_once_and_installed_whole():
    master_clock, worker_clock = ManualClock(100.0), ManualClock(5.0)   # clocks need not agree
    master = Runtime(api=PoolState(pool_of(master_clock, "a", "b", "c")))
    worker = Runtime(api=PoolState(pool_of(worker_clock, "a", "b", "c")))
    tracker = StateTracker()
    full = tracker.changes(master, master_clock())          # the first time: everything
    assert full == {"api": {n: [True, "enabled", 1.0, 0.0, None] for n in "abc"}}
    assert tracker.changes(master, master_clock()) == {}    # nothing moved since

    pool = master.pools["api"].pool
    pool.set_healthy(pool.by_name["a"], False)
    pool.set_admin(pool.by_name["b"], AdminState.DRAINING)
    pool.set_weight(pool.by_name["c"], 5.0)
    changes = tracker.changes(master, master_clock())
    assert set(changes["api"]) == {"a", "b", "c"}
    install(worker, changes, worker_clock)
    got = worker.pools["api"].pool
    assert [(b.healthy, b.admin, b.weight, b.eligible) for b in got.backends] == [
        (False, AdminState.ENABLED, 1.0, False), (True, AdminState.DRAINING, 1.0, False),
        (True, AdminState.ENABLED, 5.0, True)]
    assert got.mode == "normal" and got.select() is got.by_name["c"]


def test_an_ejection_travels_as_time_left_and_ends_on_the_workers_clock():
    master_clock, worker_clock = ManualClock(1000.0), ManualClock(7.0)
    master = Runtime(api=PoolState(pool_of(master_clock, "a", "b")))
    worker = Runtime(api=PoolState(pool_of(worker_clock, "a", "b")))
    tracker = StateTracker()
    tracker.changes(master, master_clock())
    mp = master.pools["api"].pool
    mp.eject(mp.by_name["a"], master_clock() + 30.0)
    changes = tracker.changes(master, master_clock())
    assert changes == {"api": {"a": [True, "enabled", 1.0, 30.0, None]}}
    install(worker, changes, worker_clock)
    a = worker.pools["api"].pool.by_name["a"]
    assert a.ejected_until == 37.0 and not a.eligible
    worker_clock.advance(30.0)
    worker.pools["api"].pool.advance()
    assert a.eligible and a.ejected_until == 0.0


def test_a_worker_that_learns_late_ramps_in_step_with_the_master():
    master_clock, worker_clock = ManualClock(50.0), ManualClock(0.0)
    master = Runtime(api=PoolState(pool_of(master_clock, "a", "b", slow_start=10.0)))
    mp = master.pools["api"].pool
    mp.set_healthy(mp.by_name["a"], False)
    master_clock.advance(1.0)
    mp.set_healthy(mp.by_name["a"], True)           # up again: a ramp of 10 s begins
    master_clock.advance(4.0)                       # 4 s into it
    # A worker that starts now (a replacement) gets the full state: the ramp is 4 s old.
    worker = Runtime(api=PoolState(pool_of(worker_clock, "a", "b", slow_start=10.0)))
    install(worker, StateTracker().changes(master, master_clock(), full=True), worker_clock)
    a = worker.pools["api"].pool.by_name["a"]
    assert a.effective_weight == pytest.approx(0.4) == mp.by_name["a"].effective_weight
    worker_clock.advance(6.0)
    worker.pools["api"].pool.advance()
    assert a.effective_weight == 1.0


def test_unknown_pools_and_backends_are_skipped():
    clock = ManualClock()
    worker = Runtime(api=PoolState(pool_of(clock, "a")))
    install(worker, {"gone": {"x": [False, "disabled", 1.0, 0.0, None]},
                     "api": {"x": [False, "disabled", 1.0, 0.0, None]}}, clock)
    assert worker.pools["api"].pool.by_name["a"].eligible


# ---- outcomes: worker -> master ------------------------------------------------------------------

async def test_outcomes_travel_as_runs_and_failures_at_once():
    sent: list[list] = []
    outbox = Outbox(asyncio.get_running_loop(), sent.append)
    relay = OutcomeRelay("api", ("5xx", "reset"), outbox)
    a, b = Backend("a"), Backend("b")
    for outcome in (Outcome.OK, Outcome.OK, Outcome.CLIENT_ABORT, Outcome.OK):
        relay.record(a, outcome)                  # successes (an abort is nobody's failure)
    relay.record(b, Outcome.RESET)
    relay.record(b, Outcome.RESET)
    relay.record(b, Outcome.TIMEOUT)              # not in failure_on: changes nothing
    relay.record(b, Outcome.OK)
    relay.record(b, Outcome.SERVER_ERROR)
    await asyncio.sleep(0)                        # the end of this turn: a failure is in it
    assert sent == [[["api", "a", [["ok", 1]]],
                     ["api", "b", [["reset", 2], ["ok", 1], ["5xx", 1]]]]]
    relay.record(a, Outcome.OK)                   # successes alone wait a little
    await asyncio.sleep(0)
    assert len(sent) == 1
    outbox.flush()
    assert sent[1] == [["api", "a", [["ok", 1]]]]


def test_replay_feeds_the_masters_detector_in_order():
    clock = ManualClock(10.0)
    pool = pool_of(clock, "a", "b")
    state = PoolState(pool, Outlier(consecutive_failures=3, max_ejection_percent=50))
    state.outcomes = OutlierDetector(pool, state.config.outlier, clock=clock)
    runtime = Runtime(api=state)
    # Two failures from one worker, a success from another, two failures: no streak of 3.
    assert not replay(runtime, [["api", "a", [["5xx", 2]]], ["api", "a", [["ok", 1]]],
                                ["api", "a", [["5xx", 2]]]])
    assert pool.by_name["a"].eligible
    assert replay(runtime, [["api", "a", [["reset", 1]]], ["api", "zz", [["5xx", 9]]]])
    assert not pool.by_name["a"].eligible and pool.by_name["a"].ejections == 1


# ---- figures: workers -> master -------------------------------------------------------------------

def test_window_figures_add_up_across_processes():
    one, two = BackendStats(), BackendStats()
    one.record(100.2, 200, Outcome.OK, 0.004, False, 10, 20)
    one.record(101.5, 503, Outcome.SERVER_ERROR, 0.2, True, 0, 5)
    two.record(101.7, 200, Outcome.OK, 0.004, False, 1, 2)
    two.record(100.0 - WINDOW, 200, Outcome.OK, 0.004, False, 1, 2)    # out of the window
    total = BackendStats()
    total.absorb(one.export(101.9))
    total.absorb(two.export(101.9))
    assert (total.requests, total.errors, total.retries, total.bytes_in, total.bytes_out) == \
        (4, 1, 1, 12, 29)
    assert total.classes() == {"1xx": 0, "2xx": 3, "3xx": 0, "4xx": 0, "5xx": 1}
    series = total.series(101.9)
    assert series["requests"][-2:] == [1, 2] and series["errors"][-2:] == [0, 1]
    assert sum(series["requests"]) == 3
    assert total.percentiles(101.9) == {"p50": 0.005, "p90": 0.25, "p99": 0.25}


def test_exited_workers_figures_fold_into_one_document():
    def last_figures(requests, at, *records):
        stats = BackendStats()
        for record in records:
            stats.record(*record)
        return {"now": at, "time": at + 1000.0, "frontend": {"requests": requests, "by_class": [0, 0, requests, 0, 0, 0],
                                        "aborted": 1},
                "pools": {"api": {"a": {"inflight": 3, "started": requests, "failures": 1,
                                        "ewma": 0.5, "last_error": "refused",
                                        "stats": stats.export(at)}}}}

    # The workers' clocks run 50 s behind the master's (time of day - 1000 vs - 950), and
    # their last figures are a few seconds old when they are folded in: the seconds land
    # where they were on the master's clock (99 and 109), not at the time of folding.
    first = last_figures(2, 50.0, (49.5, 200, Outcome.OK, 0.004, False, 1, 2),
                         (49.5, 502, Outcome.SERVER_ERROR, 0.2, False, 0, 0))
    second = last_figures(1, 60.0, (59.8, 200, Outcome.OK, 0.004, False, 1, 2))
    total = merge.fold(None, first, 104.0, 1054.0)
    total = merge.fold(total, second, 112.0, 1062.0)
    assert total["now"] == 112.0
    assert total["frontend"] == {"requests": 3, "by_class": [0, 0, 3, 0, 0, 0], "aborted": 2}
    a = total["pools"]["api"]["a"]
    # Nothing of an exited worker is in flight, and its estimate and error are not carried.
    assert (a["inflight"], a["started"], a["failures"], a["last_error"]) == (0, 3, 2, None)
    stats = BackendStats()
    stats.absorb(a["stats"])
    assert (stats.requests, stats.errors, stats.bytes_in) == (3, 1, 2)
    series = stats.series(112.0)["requests"]
    assert series[-14:] == [2] + [0] * 9 + [1, 0, 0, 0]


# ---- the channel -----------------------------------------------------------------------------

async def test_channel_messages_cross_whole_and_end_as_none():
    ours, theirs = socket.socketpair()
    a, b = await Channel.open(ours), await Channel.open(theirs)
    big = "x" * 300_000                           # more than one read's worth
    a.send("config", text=big, n=1)
    a.send("state", pools={})
    assert await b.receive() == {"t": "config", "text": big, "n": 1}
    assert await b.receive() == {"t": "state", "pools": {}}
    a.close()
    assert await b.receive() is None
    b.close()


# ---- the claim on the listening address ---------------------------------------------------------

def test_a_claimed_address_cannot_be_taken_and_workers_can_share_it():
    claim = listen.claim(Address("127.0.0.1", 0))
    try:
        port = claim.port
        assert port != 0
        # Another program that binds without SO_REUSEADDR: refused.
        with socket.socket() as other:
            with pytest.raises(OSError) as refused:
                other.bind(("127.0.0.1", port))
            assert refused.value.errno == errno.EADDRINUSE
        # A second instance's claim, even with no worker listening yet: refused, with the
        # words a user reads.
        with pytest.raises(Exception, match="address already in use"):
            listen.claim(Address("127.0.0.1", port))
        if listen.REUSE_PORT:
            # What a worker does: join with SO_REUSEPORT, and accept.
            with socket.socket() as worker:
                worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                worker.bind(("127.0.0.1", port))
                worker.listen()
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    conn, _ = worker.accept()
                    conn.close()
    finally:
        claim.close()
    with socket.socket() as free:                  # released with the claim
        free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        free.bind(("127.0.0.1", port))
        free.listen()
    listen.claim(Address("127.0.0.1", port)).close()


# ---- lbctl stats says how many workers serve -------------------------------------------------

def test_the_stats_header_counts_the_workers():
    from lbctl.observe.render import header_chunks
    doc = {"version": "0", "uptime": 1.0, "pools": [], "config": "lb.toml", "pid": 10,
           "workers": [{"index": 1, "state": "serving"}, {"index": 2, "state": "serving"}]}
    _, source = header_chunks(doc)
    assert [t.plain for t in source][-1] == "2 workers"
    doc["workers"][1]["state"] = "not answering"
    _, source = header_chunks(doc)
    assert source[-1].plain == "2 workers (1 serving)" and source[-1].style == "yellow"
    del doc["workers"]
    _, source = header_chunks(doc)
    assert source[-1].plain == "pid 10"
