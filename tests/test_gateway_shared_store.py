"""Rate-limit buckets in shared memory: the same decisions as in-process buckets, exact
across processes that decide at the same time, bounded, and never wedged by a dead process.

The processes here are real forks sharing the table's descriptor, as the workers of an
instance do; the fcntl locks between them are the kernel's.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import time

import pytest

from lbctl.gateway.rate_limit import Limit, TokenBuckets
from lbctl.gateway.shared_store import STRIPES, SharedBuckets, SharedStore, SharedTable
from lbctl.config.model import Store


@pytest.fixture
def table():
    fd = SharedTable.create()
    shared = SharedTable(fd)
    yield shared
    shared.close()
    os.close(fd)


def test_same_decisions_as_the_in_process_buckets(table):
    limit = Limit("api", 2.0, 5)
    shared = SharedBuckets(table, limit)
    local = TokenBuckets(limit.rate, limit.burst, limit=limit)
    rng = random.Random(7)
    now = 1000.0
    for _ in range(2000):
        now += rng.expovariate(3.0)               # a little faster than the rate
        key = f"client-{rng.randrange(5)}"
        assert shared.allow(key, now) == local.allow(key, now), (key, now)


def test_limits_and_keys_do_not_share_buckets(table):
    one = SharedBuckets(table, Limit("one", 1.0, 1))
    two = SharedBuckets(table, Limit("two", 1.0, 1))
    assert one.allow("k", 0.0).allowed and two.allow("k", 0.0).allowed
    assert one.allow("other", 0.0).allowed
    assert not one.allow("k", 0.0).allowed
    # The same name with another rate (a reload changed the limit): a fresh bucket.
    assert SharedBuckets(table, Limit("one", 2.0, 1)).allow("k", 0.0).allowed
    store = SharedStore(Store(), table)
    assert store.up and isinstance(store.limiter(Limit("one", 1.0, 1)), SharedBuckets)


def test_a_full_slot_is_reused_and_a_crowded_key_evicts_the_fullest():
    # A table of one stripe of 4 slots: every key competes for the same 4.
    fd = SharedTable.create(slots=4)
    table = SharedTable(fd, slots=4, stripes=1, probes=4)
    try:
        buckets = SharedBuckets(table, Limit("crowd", 1.0, 10))
        crowd = ["a", "b", "c", "d", "e"]
        # Four keys with buckets not full: "a" closest to full (one token taken), the others
        # five tokens each.
        assert buckets.allow("a", 1.0).allowed
        for key in "bcd":
            assert [buckets.allow(key, 1.0).allowed for _ in range(5)] == [True] * 5
        # A fifth key: no free slot, so the bucket closest to full ("a") gives way...
        assert [buckets.allow("e", 1.5).allowed for _ in range(11)] == [True] * 10 + [False]
        # ...and the others kept theirs: 5 tokens taken, 5.5 left.
        for key in "bcd":
            assert [buckets.allow(key, 1.5).allowed for _ in range(6)] == [True] * 5 + [False]
        # "a" starts again from a full bucket (the bound wins over exactness), in the slot
        # of whichever bucket is fullest; much later every bucket is full, so each slot is
        # as good as empty and every key decides as a new one.
        for key in crowd:
            assert [buckets.allow(key, 100.0).allowed for _ in range(11)] == [True] * 10 + [False]
    finally:
        table.close()
        os.close(fd)


def _hammer(fd: int, limit: Limit, start: float, count: int, out: int) -> None:
    """In a forked child: ``count`` requests of one key at about the same instant."""
    buckets = SharedBuckets(SharedTable(fd), limit)
    while time.time() < start:
        pass
    allowed = sum(buckets.allow("same-client", 50.0).allowed for _ in range(count))
    os.write(out, b"%d\n" % allowed)


@pytest.mark.timeout(60)
def test_concurrent_processes_never_let_more_than_the_burst_through(table):
    limit = Limit("burst", 0.001, 100)           # no refill within the test: 100 in all
    read, write = os.pipe()
    start = time.time() + 0.3
    children = []
    for _ in range(4):
        pid = os.fork()
        if pid == 0:                               # pragma: no cover - the child
            try:
                _hammer(table.fd, limit, start, 500, write)
            finally:
                os._exit(0)
        children.append(pid)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
    os.close(write)
    with os.fdopen(read) as results:
        counts = [int(line) for line in results]
    assert len(counts) == 4 and sum(counts) == 100, counts


@pytest.mark.timeout(60)
def test_a_process_killed_holding_a_lock_does_not_wedge_the_others(table):
    buckets = SharedBuckets(table, Limit("lock", 1.0, 1))
    stripe = buckets.fingerprint("k") % STRIPES
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:                                   # pragma: no cover - the child
        fcntl.lockf(table.fd, fcntl.LOCK_EX, 1, stripe)
        os.write(write, b"locked")
        time.sleep(60)
        os._exit(0)
    assert os.read(read, 6) == b"locked"
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert buckets.allow("k", 0.0).allowed        # the kernel released the dead one's lock
    os.close(read)
    os.close(write)
