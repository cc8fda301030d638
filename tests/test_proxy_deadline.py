"""Connection deadlines on one shared timer (``proxy/deadline.py``), on a real event loop.

Only order and outcome are asserted, never how long anything took: which deadlines ran
their action, in which order, and that nothing is left holding a closed connection.
"""

from __future__ import annotations

import asyncio

from lbctl.proxy.deadline import TICK, Deadline, Timers


async def test_due_deadlines_run_in_order_and_met_or_cancelled_ones_never_do():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[str] = []
    done = asyncio.Event()

    def note(name):
        fired.append(name)
        if name == "last":
            done.set()

    late, early, met, closed, last = (Deadline(timers) for _ in range(5))
    late.start(0.05, note, "late")
    early.start(0.02, note, "early")
    met.start(0.01, note, "met")
    met.stop()                         # the response came: its slot finds nothing to do
    closed.start(0.01, note, "closed")
    closed.cancel()                    # the connection closed: out of its slot at once
    last.start(0.08, note, "last")
    assert len(timers) == 4            # met stays in its slot until then; closed does not
    await asyncio.wait_for(done.wait(), 10)
    assert fired == ["early", "late", "last"]
    assert len(timers) == 0 and timers.handle is None
    timers.close()


async def test_a_deadline_moved_later_waits_for_the_new_time_and_a_shorter_one_wins():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    fired: list[tuple[str, float]] = []
    done = asyncio.Event()

    def note(name):
        fired.append((name, loop.time()))
        if len(fired) == 2:
            done.set()

    kept, shortened = Deadline(timers), Deadline(timers)
    start = loop.time()
    kept.start(0.02, note, "kept")
    kept.start(0.06, note, "kept")     # re-set later (the next request): stays in its slot
    assert kept.key and len(timers) == 1
    shortened.start(5.0, note, "shortened")
    shortened.start(0.04, note, "shortened")   # a shorter timeout moves it to an earlier slot
    await asyncio.wait_for(done.wait(), 10)
    assert [name for name, _ in fired] == ["shortened", "kept"]
    # Never early: each ran no sooner than its deadline (within the loop's 1 ms timers).
    assert fired[0][1] >= start + 0.04 - 0.001 and fired[1][1] >= start + 0.06 - 0.001
    timers.close()


async def test_an_action_that_fails_does_not_stop_the_others_in_its_slot():
    loop = asyncio.get_running_loop()
    timers = Timers(loop)
    errors, fired = [], []
    done = asyncio.Event()
    loop.set_exception_handler(lambda _loop, context: errors.append(context["exception"]))
    try:
        def boom(_):
            raise RuntimeError("bug")

        def note(name):
            fired.append(name)
            done.set()

        a, b = Deadline(timers), Deadline(timers)
        a.start(TICK / 2, boom)
        b.start(TICK / 2, note, "b")    # the same slot
        await asyncio.wait_for(done.wait(), 10)
        assert fired == ["b"] and [str(e) for e in errors] == ["bug"]
    finally:
        loop.set_exception_handler(None)
        timers.close()
