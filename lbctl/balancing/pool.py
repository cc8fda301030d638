"""A pool: its backends, their eligibility, and the algorithm that ranks them.

The pool is the one place that decides. It derives each backend's eligibility from health,
admin state and passive ejection, chooses the *active set* (the eligible primaries; the
eligible backups when no primary is eligible; every enabled primary when panic mode applies
and no backup is up), hands that set to the algorithm when it changes, and filters the
algorithm's candidates per request (a retry's exclusion set, an ``accept`` predicate) with
a bound on attempts.

Time-driven changes (an ejection expiring, a slow-start ramp advancing) are applied by
``advance``: one comparison of the clock with the next scheduled change. ``select`` calls it
on every request; a driver with no traffic calls it on a timer (the proxy, once a second), and
readers call it before showing state, so ``effective_weight`` and ``state`` never go stale.
"""

from __future__ import annotations

import math
from typing import Callable, Collection, Hashable, Iterable, Iterator, Sequence

from lbctl.balancing.backend import AdminState, Backend, checked_weight
from lbctl.balancing.base import Algorithm

# Slow start begins at this fraction of the weight, so a recovered backend gets *some* traffic.
SLOW_START_MIN = 0.1
# A ramp advances in this many steps; each step rebuilds the algorithm's tables once.
SLOW_START_STEPS = 20


class Pool:
    """Backends plus live balancing state. Pure: the clock and rng are injected."""

    def __init__(self, name: str, backends: Sequence[Backend], algorithm: Algorithm, *,
                 clock: Callable[[], float], ewma_decay: float = 10.0, slow_start: float = 0.0,
                 panic_threshold: float = 0.0) -> None:
        self.name = name
        self.algorithm = algorithm
        self.clock = clock
        self.ewma_decay = ewma_decay
        self.slow_start = slow_start
        self.panic_threshold = panic_threshold      # percent; 0 = off (the default)
        self.mode = "normal"                        # normal | backup | panic | empty
        self.backends: list[Backend] = []
        self.by_name: dict[str, Backend] = {}
        self._next_change = math.inf
        self.set_backends(backends, starting=True)

    # ---- membership -------------------------------------------------------------------

    def set_backends(self, backends: Sequence[Backend], *, starting: bool = False) -> None:
        """Install a new membership (config load or reload). Backends new to a running pool
        start their slow-start ramp; at startup nobody ramps (there is no one to protect).

        A backend whose name the pool already has keeps its live object (in-flight count,
        health, admin state, ejection, EWMA, driver data) and takes the new settings from the
        object passed in, so a reload that builds fresh ``Backend`` objects loses no state."""
        now = self.clock()
        members: list[Backend] = []
        for i, b in enumerate(backends):
            old = self.by_name.get(b.name)
            if old is not None and old is not b:
                old.url, old.scheme, old.host, old.port = b.url, b.scheme, b.host, b.port
                old.weight, old.config_weight, old.backup = b.weight, b.config_weight, b.backup
                b = old
            b.index = i
            if old is None and not starting:
                b.eligible_since = now
            elif starting:
                b.eligible_since = -math.inf
            members.append(b)
        self.backends = members
        self.by_name = {b.name: b for b in self.backends}
        self.algorithm.set_members(self.backends)
        self.refresh()

    # ---- state changes (each rebuilds the active set once) ------------------------------

    def set_healthy(self, b: Backend, healthy: bool) -> None:
        if b.healthy != healthy:
            b.healthy = healthy
            self.refresh()

    def set_admin(self, b: Backend, state: AdminState) -> None:
        if b.admin is not state:
            b.admin = state
            self.refresh()

    def eject(self, b: Backend, until: float) -> None:
        b.ejected_until = until
        self.refresh()

    def set_weight(self, b: Backend, weight: float) -> None:
        """An operator's weight; ``ValueError`` outside ``MIN_WEIGHT..MAX_WEIGHT``."""
        b.weight = checked_weight(weight)
        self.algorithm.set_members(self.backends)
        self.refresh()

    def install(self, states: Iterable[tuple[Backend, bool, AdminState, float, float,
                                             float | None]]) -> None:
        """States decided by another driver of the same pool (a serve master's), applied at
        once: ``(backend, healthy, admin, weight, ejected_until, eligible_since)``, times on
        this pool's clock. ``eligible_since``, when not None, is when the backend's
        slow-start ramp began, so a worker that learns of it late ramps in step."""
        weights = False
        for b, healthy, admin, weight, ejected_until, since in states:
            b.healthy, b.admin, b.ejected_until = healthy, admin, ejected_until
            if b.weight != weight:
                b.weight, weights = weight, True
            if since is not None and healthy and admin is AdminState.ENABLED \
                    and not ejected_until:
                b.eligible, b.eligible_since = True, since    # refresh keeps this start
        if weights:
            self.algorithm.set_members(self.backends)
        self.refresh()

    def refresh(self) -> None:
        """Re-derive eligibility, effective weights and the active set; rebuild the algorithm."""
        now = self.clock()
        next_change = math.inf
        for b in self.backends:
            since = now
            if b.ejected_until and now >= b.ejected_until:
                # Back when the ejection ended, not when this refresh noticed: its ramp (and
                # its effective weight) count from then.
                since = b.ejected_until
                b.ejected_until = 0.0
            if b.ejected_until:
                next_change = min(next_change, b.ejected_until)
            eligible = b.healthy and b.admin is AdminState.ENABLED and not b.ejected_until
            if eligible and not b.eligible:
                b.eligible_since = since
            b.eligible = eligible
            b.effective_weight = b.weight
            if eligible and self.slow_start > 0:
                progress = (now - b.eligible_since) / self.slow_start
                if progress < 1.0:
                    b.effective_weight = b.weight * max(SLOW_START_MIN, progress)
                    next_change = min(next_change, now + self.slow_start / SLOW_START_STEPS)
        self._next_change = next_change

        primaries = [b for b in self.backends if not b.backup]
        eligible_primaries = [b for b in primaries if b.eligible]
        eligible_backups = [b for b in self.backends if b.backup and b.eligible]
        if not eligible_primaries and eligible_backups:
            # Backups exist for exactly this case; panic must not send traffic to primaries
            # known to be down while a backup is up (Envoy spills to the next priority first).
            self.mode, active = "backup", eligible_backups
        elif primaries and self.panic_threshold and \
                100.0 * len(eligible_primaries) / len(primaries) < self.panic_threshold:
            # Envoy's panic mode: too few healthy to carry the load, so spread over all.
            self.mode, active = "panic", [b for b in primaries if b.admin is AdminState.ENABLED]
        elif eligible_primaries:
            self.mode, active = "normal", eligible_primaries
        else:
            self.mode, active = "empty", []
        self.algorithm.rebuild(active)

    def advance(self) -> None:
        """Apply the time-driven changes due by now (an ejection ending, a ramp step)."""
        if self.clock() >= self._next_change:
            self.refresh()

    def slow_start_progress(self, b: Backend) -> float | None:
        """Fraction of the ramp done (0..1), or None when the backend is not ramping."""
        if not self.slow_start or not b.eligible:
            return None
        progress = (self.clock() - b.eligible_since) / self.slow_start
        return progress if progress < 1.0 else None

    # ---- the request path ---------------------------------------------------------------

    def select(self, key: Hashable | None = None, exclude: Collection[Backend] = (),
               accept: Callable[[Backend], bool] | None = None,
               trace: Callable[[Backend], None] | None = None) -> Backend | None:
        """The backend for one attempt, or None when no active backend is acceptable.

        ``trace``, when given, is told every candidate the algorithm offers, in order (for a
        power-of-two pick, both of the pair, since both were drawn): it explains a decision
        without changing it."""
        if self.clock() >= self._next_change:
            self.refresh()              # advance(), inlined: this is the per-request path
        algorithm = self.algorithm
        panic = self.mode == "panic"
        candidates = algorithm.candidates(key)
        if trace is not None:
            candidates = _traced(candidates, trace,
                                 algorithm.draws_pair and len(algorithm.active) >= 2)
        try:
            for _ in range(len(algorithm.active)):
                b = next(candidates, None)
                if b is None:
                    return None
                if b in exclude or (not b.eligible and not panic) or (accept and not accept(b)):
                    continue
                algorithm.chosen(b)
                return b
            return None
        finally:
            candidates.close()

    def has_alternative(self, exclude: Collection[Backend]) -> bool:
        """Whether a retry excluding ``exclude`` could find a backend (no side effects)."""
        panic = self.mode == "panic"
        return any((panic or b.eligible) and b not in exclude for b in self.algorithm.active)

    def on_start(self, b: Backend) -> None:
        b.inflight += 1
        b.started += 1
        self.algorithm.on_start(b)

    def on_end(self, b: Backend, latency: float, ok: bool = True) -> None:
        b.inflight -= 1
        b.finished += 1
        if not ok:
            b.failures += 1
        algorithm = self.algorithm
        if algorithm.reads_latency:
            b.observe_latency(self.clock(), latency, self.ewma_decay)
        algorithm.on_end(b)

    def eligible_count(self) -> int:
        return sum(1 for b in self.backends if b.eligible)

    def __iter__(self) -> Iterable[Backend]:
        return iter(self.backends)


def _traced(candidates: Iterator[Backend], trace: Callable[[Backend], None],
            pair: bool) -> Iterator[Backend]:
    """``candidates``, each reported to ``trace`` as it is offered. With ``pair``, the first
    two are taken together: the algorithm drew both before yielding the first, so taking the
    second early consumes no randomness and changes no choice."""
    try:
        if pair:
            drawn = [b for b in (next(candidates, None), next(candidates, None)) if b is not None]
            for b in drawn:
                trace(b)
            yield from drawn
        for b in candidates:
            trace(b)
            yield b
    finally:
        candidates.close()
