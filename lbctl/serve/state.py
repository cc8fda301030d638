"""Backend states as messages: decided in the master's pools, installed in every worker's.

The master's pools are the instance's: health checks, operator actions, passive ejection
and slow start change them there. After each change the master sends every worker the
backends whose state moved (``StateTracker.changes``); a worker installs them in its own
pools in one step (``install``). Times travel as durations (``ejected_for``: seconds of
ejection left; ``ramping_for``: seconds since a slow-start ramp began), so the two
processes' clocks need not share an origin.

One entry per backend: ``[healthy, admin, weight, ejected_for, ramping_for]``, grouped by
pool and backend name: ``{"api": {"api-1": [true, "enabled", 3.0, 0, null]}}``.
"""

from __future__ import annotations

import math
from typing import Callable

from lbctl.balancing import AdminState, Backend, Pool


def _ramp_start(pool: Pool, b: Backend, now: float) -> float | None:
    """When ``b``'s slow-start ramp began, if it is ramping now."""
    if pool.slow_start and b.eligible and now - b.eligible_since < pool.slow_start:
        return b.eligible_since
    return None


class StateTracker:
    """What the workers were last told, to send each of them only what changed."""

    def __init__(self) -> None:
        self.sent: dict[tuple[str, str], tuple] = {}

    def changes(self, runtime, now: float, *, full: bool = False) -> dict:
        """The backends whose state differs from the last message (all with ``full``)."""
        out: dict[str, dict[str, list]] = {}
        sent: dict[tuple[str, str], tuple] = {}
        for pool_name, state in runtime.pools.items():
            pool = state.pool
            pool.advance()          # an ejection or a ramp may have ended since
            for b in pool.backends:
                key = (b.healthy, b.admin, b.weight, b.ejected_until, _ramp_start(pool, b, now))
                sent[(pool_name, b.name)] = key
                if full or self.sent.get((pool_name, b.name)) != key:
                    ramp = key[4]
                    out.setdefault(pool_name, {})[b.name] = [
                        b.healthy, b.admin.value, b.weight,
                        max(b.ejected_until - now, 0.0) if b.ejected_until else 0.0,
                        None if ramp is None else (now - ramp if math.isfinite(ramp) else None)]
        self.sent = sent
        return out


def install(runtime, states: dict, clock: Callable[[], float]) -> None:
    """Apply a state message to this process's pools (unknown pools or backends are skipped:
    a message about a config this process does not run yet)."""
    now = clock()
    for pool_name, backends in states.items():
        state = runtime.pools.get(pool_name)
        if state is None:
            continue
        pool = state.pool
        entries = []
        for name, (healthy, admin, weight, ejected_for, ramping_for) in backends.items():
            b = pool.by_name.get(name)
            if b is None:
                continue
            until = now + ejected_for if ejected_for > 0 else 0.0
            if b.ejected_until and until and abs(until - b.ejected_until) < 0.05:
                until = b.ejected_until         # the same ejection, told again
            entries.append((b, bool(healthy), AdminState(admin), float(weight), until,
                            None if ramping_for is None else now - ramping_for))
        if entries:
            pool.install(entries)
