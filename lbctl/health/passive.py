"""Passive health: outlier detection from the outcomes of real requests (Envoy-style).

The proxy (and the simulator) reports every attempt's ``Outcome`` into the pool's
``OutcomeSink`` (both from ``lbctl.balancing``); this one counts consecutive failures per
backend (the kinds named in ``failure_on``: connect, reset, timeout, 5xx, invalid). At ``consecutive_failures`` the backend is ejected: ``pool.eject(b, until)``, and
the pool re-admits it lazily when the clock passes ``until`` (then slow start ramps it up).

* Each ejection lasts ``ejection_time`` x 2^(k-1) for the k-th one in a row, capped at
  ``max_ejection_time``: a backend that keeps failing right after coming back stays out
  longer each time. A backend that has behaved for ``max_ejection_time`` since its last
  ejection ended is forgiven one step.
* At most ``max_ejection_percent`` of the pool's backends are ejected at once, counting the
  one about to be. This is strict: with 2 backends and 50% only one can be out; a pool of
  one backend is never ejected at 50%. Passive detection must not empty a pool that active
  checks still consider up; a refused ejection is logged once per failure streak.
* A success resets the count; an outcome of a kind not in ``failure_on`` changes nothing.

A pool without ``[outlier]`` still counts one kind of failure: truncated responses
(``TRUNCATIONS``, the defaults above with ``failure_on = ["truncated"]``). Active probes
check a status and maybe a body pattern, so a backend that cuts every response short would
otherwise stay up forever; a truncation is never a race on a reused keep-alive connection
(that is a "reset", before any response byte) and never the client's doing, so five in a row
are worth an ejection by default, as Envoy counts locally originated failures once outlier
detection is on. Set ``[outlier]`` to choose the kinds and numbers.

Per-backend failure streaks live in the detector; the detector built for a reloaded pool
takes them over from the previous one (``previous``), so they survive a SIGHUP. The count of
ejections is kept on the backend (``Backend.ejections``), for ``/stats`` and the metrics.
The clock is injected (the pool's), so tests drive ejection and expiry without sleeping.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

from lbctl.balancing import Backend, Outcome, Pool
from lbctl.config.model import Outlier
from lbctl.units import format_duration

log = logging.getLogger("lbctl.health")

_OK = Outcome.OK

# What a pool without [outlier] ejects for: truncated responses only (see the docstring).
TRUNCATIONS = Outlier(failure_on=(Outcome.TRUNCATED.value,))


class _Streak:
    __slots__ = ("failures", "level", "ended", "capped", "ejected")

    def __init__(self) -> None:
        self.failures = 0           # consecutive failures seen
        self.level = 0              # ejections in a row; the next one lasts base x 2^level
        self.ended = -math.inf      # when the last ejection ends (clock time)
        self.capped = False         # refusal already logged for this streak
        self.ejected = False        # we ejected it and have not yet seen it back


class OutlierDetector:
    """An ``OutcomeSink`` for one pool."""

    def __init__(self, pool: Pool, config: Outlier, *, clock: Callable[[], float],
                 logger: logging.Logger = log, previous: OutlierDetector | None = None) -> None:
        self.pool = pool
        self.config = config
        self.clock = clock
        self.log = logger           # the simulator passes a quiet one: it counts ejections
        self.failure_on = frozenset(config.failure_on)
        old = previous.streaks if previous is not None else {}
        self.streaks: dict[Backend, _Streak] = {b: old[b] for b in pool.backends if b in old}

    def record(self, backend: Backend, outcome: Outcome) -> None:
        rec = self.streaks.get(backend)
        if rec is None:
            if outcome is _OK or outcome not in self.failure_on:
                return          # nothing to reset, nothing to count: the usual case, kept cheap
            rec = self.streaks[backend] = _Streak()
        elif outcome is _OK and not rec.failures and not rec.ejected:
            rec.capped = False
            return
        now = self.clock()
        if rec.ejected and now >= rec.ended:
            rec.ejected = False
            self.log.info("pool %s: backend %s is back from ejection", self.pool.name,
                          backend.name, extra={"event": "backend_state", "pool": self.pool.name,
                                               "backend": backend.name, "state": "up",
                                               "reason": "ejection ended"})
        if outcome is _OK:
            rec.failures, rec.capped = 0, False
            return
        if outcome not in self.failure_on:
            return
        if backend.ejected_until and now < backend.ejected_until:
            return          # a request that started before the ejection; already counted out
        rec.failures += 1
        if rec.failures >= self.config.consecutive_failures:
            self._eject(backend, rec, now, outcome)

    def ejection_time(self, rec: _Streak, now: float) -> float:
        """How long the next ejection of this backend lasts."""
        cfg = self.config
        if rec.level and now > rec.ended:
            # Good behaviour since the last ejection ended is forgiven step by step.
            rec.level = max(0, rec.level - int((now - rec.ended) // cfg.max_ejection_time))
        return min(cfg.ejection_time * 2 ** rec.level, cfg.max_ejection_time)

    def _eject(self, b: Backend, rec: _Streak, now: float, outcome: Outcome) -> None:
        pool, cfg = self.pool, self.config
        ejected = sum(1 for other in pool.backends
                      if other is not b and other.ejected_until and other.ejected_until > now)
        if 100.0 * (ejected + 1) > cfg.max_ejection_percent * len(pool.backends):
            if not rec.capped:
                rec.capped = True
                self.log.warning("pool %s: backend %s not ejected after %d consecutive failures "
                                 "(last: %s): max_ejection_percent %g%% reached", pool.name,
                                 b.name, rec.failures, outcome, cfg.max_ejection_percent,
                                 extra={"event": "ejection_refused", "pool": pool.name,
                                        "backend": b.name, "reason": "max_ejection_percent",
                                        "failures": rec.failures, "last": str(outcome)})
            return
        duration = self.ejection_time(rec, now)
        failures = rec.failures
        rec.level += 1
        rec.ended = now + duration
        rec.failures, rec.capped, rec.ejected = 0, False, True
        # Counted on the backend (survives reloads): /stats and lbctl_ejections_total read it.
        b.ejections += 1
        pool.eject(b, rec.ended)
        self.log.warning("pool %s: backend %s EJECTED for %s after %d consecutive failures "
                         "(last: %s)", pool.name, b.name, format_duration(duration), failures,
                         outcome, extra={"event": "backend_state", "pool": pool.name,
                                         "backend": b.name, "state": "ejected",
                                         "reason": f"{failures} consecutive failures "
                                                   f"(last: {outcome})",
                                         "duration": duration})
