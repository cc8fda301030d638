"""One view of several processes' figures: the workers of a serve, summed in its master.

A worker answers the master's stats question with ``export``: its front-end counts, and per
backend (by pool and name) its accounting (``BackendStats.export``) and the live figures
its balancer keeps (in flight, attempts started, failures, the EWMA estimate). The master
sums every worker's latest answer with ``Merged.absorb`` into an object that reads like an
``Observer`` (``stats``, ``frontend``, ``metrics``, ``started_at``), so the same
``snapshot`` and ``/metrics`` code shows the whole instance; the live figures are written
onto the master's own ``Backend`` objects and idle pools (``last_error``), which never carry
traffic themselves.
"""

from __future__ import annotations

import os
import time

from lbctl.balancing import Backend
from lbctl.observe.accounting import BackendStats
from lbctl.observe.observer import Frontend


def export(runtime, observer, now: float, *, connections: int) -> dict:
    """This process's figures for the master (``now``: the clock the observer counts in)."""
    front = observer.frontend
    pools: dict[str, dict] = {}
    for name, state in runtime.pools.items():
        pool = state.pool
        backends = {}
        # Leaving backends too (still answering requests here): the master keeps showing
        # them until no worker has any in flight.
        leaving = [b for b in getattr(state, "leaving", ()) if b.name not in pool.by_name]
        for b in (*pool.backends, *leaving):
            counted = observer.stats.get(b)
            upstream = runtime.idle.get(b)
            backends[b.name] = {
                "inflight": b.inflight, "started": b.started, "failures": b.failures,
                "ewma": b.ewma_cost(pool.clock(), pool.ewma_decay),
                "last_error": upstream.last_error if upstream is not None else None,
                "stats": counted.export(now) if counted is not None else None}
        pools[name] = backends
    return {"pid": os.getpid(), "now": now, "time": time.time(), "metrics": observer.metrics,
            "connections": connections,
            "frontend": {"requests": front.requests, "by_class": front.by_class,
                         "aborted": front.aborted},
            "pools": pools}


def fold(total: dict | None, doc: dict, now: float, wall: float) -> dict:
    """An exited worker's last ``export`` added into ``total``, the sum of those that exited
    before it, so the master keeps one document however many workers came and went (a crash
    loop would otherwise grow its memory by one document per exit). ``now`` and ``wall``: the
    master's clock and the time of day; the sum's seconds are kept on the master's clock."""
    if total is None:
        classes = [0] * len(doc["frontend"]["by_class"])
        total = {"now": now, "time": wall, "pools": {},
                 "frontend": {"requests": 0, "by_class": classes, "aborted": 0}}
    front, add = total["frontend"], doc["frontend"]
    front["requests"] += add["requests"]
    front["aborted"] += add["aborted"]
    for i, n in enumerate(add["by_class"]):
        front["by_class"][i] += n
    # The document may be old (the worker's last answer before it exited): the offset
    # between the two clocks is taken through the time of day, not from the age.
    shift = round((now - wall) - (doc["now"] - doc["time"]))
    for pool_name, backends in doc["pools"].items():
        kept = total["pools"].setdefault(pool_name, {})
        for name, figures in backends.items():
            have = kept.setdefault(name, {"inflight": 0, "started": 0, "failures": 0, "ewma": 0.0,
                                          "last_error": None, "stats": None})
            have["started"] += figures["started"]
            have["failures"] += figures["failures"]
            if figures["stats"] is not None:
                stats = BackendStats()
                if have["stats"] is not None:
                    stats.absorb(have["stats"])
                stats.absorb(figures["stats"], shift)
                have["stats"] = stats.export(now)
    total["now"], total["time"] = now, wall
    return total


class Merged:
    """The instance's figures, as an ``Observer`` presents them to readers."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self.metrics = True
        self.frontend = Frontend()
        self.stats: dict[Backend, BackendStats] = {}

    def stats_of(self, backend: Backend) -> BackendStats:
        stats = self.stats.get(backend)
        if stats is None:
            stats = self.stats[backend] = BackendStats()
        return stats

    def reset(self, runtime, metrics: bool) -> None:
        """Start a new sum over ``runtime``'s backends."""
        self.metrics = metrics
        self.frontend = Frontend()
        self.stats = {}
        for b in runtime.backends():
            b.inflight = b.started = b.failures = 0
            b.ewma = 0.0
        for upstream in runtime.idle.values():
            upstream.last_error = None

    def absorb(self, runtime, doc: dict, now: float, *, live: bool = True,
               shift: int | None = None) -> None:
        """Add one process's ``export``. ``live`` False: the figures of exited workers
        (``fold``: their counts stay in the totals; nothing of them is in flight any more).
        ``shift``: seconds from ``doc``'s clock to ``now``'s, when not ``now`` less its own
        (a fresh answer's)."""
        front = doc["frontend"]
        self.frontend.requests += front["requests"]
        self.frontend.aborted += front["aborted"]
        for i, n in enumerate(front["by_class"]):
            self.frontend.by_class[i] += n
        if shift is None:
            shift = round(now - doc["now"])     # 0 where both clocks are the boot clock
        for pool_name, backends in doc["pools"].items():
            state = runtime.pools.get(pool_name)
            if state is None:
                continue
            pool = state.pool
            leaving = {b.name: b for b in getattr(state, "leaving", ())}
            for name, figures in backends.items():
                b = pool.by_name.get(name) or leaving.get(name)
                if b is None:
                    continue
                b.started += figures["started"]
                b.failures += figures["failures"]
                if live:
                    b.inflight += figures["inflight"]
                    # The estimate shown is the highest of the workers': the one the most
                    # careful balancer would act on.
                    if figures["ewma"] > b.ewma_cost(pool.clock(), pool.ewma_decay):
                        b.ewma, b.ewma_stamp = figures["ewma"], pool.clock()
                    # Why a worker's last connect failed, until one succeeds there.
                    upstream = runtime.idle.get(b)
                    if figures.get("last_error") and upstream is not None:
                        upstream.last_error = figures["last_error"]
                if figures["stats"] is not None:
                    self.stats_of(b).absorb(figures["stats"], shift)
