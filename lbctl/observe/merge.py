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

    def absorb(self, runtime, doc: dict, now: float, *, live: bool = True) -> None:
        """Add one process's ``export``. ``live`` False: the figures of a worker that has
        exited (its counts stay in the totals; nothing of it is in flight any more)."""
        front = doc["frontend"]
        self.frontend.requests += front["requests"]
        self.frontend.aborted += front["aborted"]
        for i, n in enumerate(front["by_class"]):
            self.frontend.by_class[i] += n
        shift = round(now - doc["now"])         # 0 where both clocks are the boot clock
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
