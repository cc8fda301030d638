"""Passive outcomes from the workers to the master, where ejection is decided once.

In a worker, every pool reports its attempts' outcomes into an ``OutcomeRelay`` instead of
an ``OutlierDetector``: the worker must not eject on its share of the traffic alone. That is
every pool, not only those with ``[outlier]``: without one, truncated responses still count
(``health.passive.TRUNCATIONS``), and five in a row across the instance eject. The relay keeps, per backend, the outcomes in order as runs (five
``reset`` in a row travel as ``["reset", 5]``; successes only reset a failure streak, so a
run of them travels as one), and the ``Outbox`` sends them to the master: at once (at the
end of the loop's current turn) when a failure is among them, otherwise within ``DELAY``.
The master replays each batch, in order, into the pool's own ``OutlierDetector``
(``replay``), and pushes any ejection back to every worker as state.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from lbctl.balancing import Backend, Outcome
from lbctl.health.passive import TRUNCATIONS

# Successes only: how long they may wait to share a message with others.
DELAY = 0.01
_OK = Outcome.OK


class Outbox:
    """Outcome runs per (pool, backend), sent in one message per flush."""

    def __init__(self, loop: asyncio.AbstractEventLoop, send: Callable[[list], None]) -> None:
        self.loop = loop
        self.send = send
        self.runs: dict[tuple[str, str], list[list]] = {}
        self.timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self.urgent = False

    def add(self, pool: str, backend: str, outcome: Outcome) -> None:
        runs = self.runs.get((pool, backend))
        if runs is None:
            runs = self.runs[(pool, backend)] = []
        if runs and runs[-1][0] == outcome.value:
            if outcome is not _OK:
                runs[-1][1] += 1
        else:
            runs.append([outcome.value, 1])
        if outcome is _OK:
            if self.timer is None:
                self.timer = self.loop.call_later(DELAY, self.flush)
        elif not self.urgent:
            if self.timer is not None:
                self.timer.cancel()
            self.urgent = True
            self.timer = self.loop.call_soon(self.flush)

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.urgent = False
        if self.runs:
            batch = [[pool, backend, runs] for (pool, backend), runs in self.runs.items()]
            self.runs = {}
            self.send(batch)


class OutcomeRelay:
    """A worker pool's ``OutcomeSink``: outcomes that matter to ejection go to the master."""

    def __init__(self, pool: str, failure_on, outbox: Outbox) -> None:
        self.pool = pool
        self.failure_on = frozenset(failure_on)
        self.outbox = outbox

    def record(self, backend: Backend, outcome: Outcome) -> None:
        if outcome is _OK or outcome in self.failure_on:
            self.outbox.add(self.pool, backend.name, outcome)


def relay_outcomes(runtime, outbox: Outbox) -> None:
    """Point every pool of a freshly built runtime at the master: its ``[outlier]``'s kinds
    of failure, or truncations alone (as the master's detector for that pool counts)."""
    for name, state in runtime.pools.items():
        policy = state.config.outlier if state.config.outlier is not None else TRUNCATIONS
        state.outcomes = OutcomeRelay(name, policy.failure_on, outbox)


def replay(runtime, batch: list) -> bool:
    """A worker's batch, in order, into the master's detectors; True if an ejection began."""
    ejected = False
    for pool_name, backend_name, runs in batch:
        state = runtime.pools.get(pool_name)
        if state is None:
            continue
        b = state.pool.by_name.get(backend_name)
        if b is None:
            continue
        before = b.ejections
        sink = state.outcomes
        for value, count in runs:
            try:
                outcome = Outcome(value)
            except ValueError:
                continue
            for _ in range(min(int(count), 1_000_000)):
                sink.record(b, outcome)
        ejected = ejected or b.ejections != before
    return ejected
