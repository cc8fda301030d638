"""The attempt policy: which failures are retried, on which backend, and what the client gets.

One rule, one place: ``lbctl serve`` (``proxy/forward.py``) and ``lbctl simulate`` both ask
this object, so the simulator cannot drift from what the proxy does. It is pure: it reads
the pool (``select``, ``has_alternative``) and the outcome words of ``balancing.outcome``,
never a socket or a clock.

The rules (the promises HAProxy's ``retry-on`` and NGINX's ``proxy_next_upstream`` make):

* at most ``1 + retries`` attempts per request, each on a backend not tried yet;
* ``connect``: a failed connect may be retried whatever the method (nothing was sent);
* ``reset``, ``timeout`` and ``5xx``: only for a *replayable* request (an idempotent method
  whose body, if any, is still at hand), and only when ``retry_on`` names the outcome;
* a 5xx response head is held back for a retry only while another backend could take it
  (``hold_5xx``); otherwise it is relayed: the last answer always reaches the client;
* ``invalid`` (a response that could not be read), ``truncated`` (one cut short) and
  ``client`` are never retried: bytes may already have reached the client, or the client is
  the problem; nor is ``local`` (the proxy out of descriptors or memory): another backend
  would fare no better.

What the client gets when the attempts end on a failure (``client_status``): 503 when no
backend was available for the first attempt or the proxy ran out of a resource of its own,
502 after a connect failure, a reset, an invalid response or a held-back 5xx, 504 after a
response timeout.
"""

from __future__ import annotations

from typing import Callable, Collection, Hashable, Iterable, Sequence

from lbctl.balancing.backend import Backend
from lbctl.balancing.outcome import Outcome
from lbctl.balancing.pool import Pool

# The outcomes ``retry_on`` may name (the config's ``pools.X.retry_on``).
RETRYABLE = (Outcome.CONNECT_ERROR, Outcome.RESET, Outcome.TIMEOUT, Outcome.SERVER_ERROR)

NO_BACKEND = 503                 # no backend eligible for the first attempt
# The status the proxy answers with when the last attempt failed this way.
CLIENT_STATUS = {
    Outcome.CONNECT_ERROR: 502,
    Outcome.RESET: 502,
    Outcome.INVALID: 502,
    Outcome.SERVER_ERROR: 502,        # a 5xx held back for a retry that found no backend
    Outcome.TIMEOUT: 504,
    Outcome.LOCAL: 503,               # the proxy's own descriptors or memory ran out
}


class AttemptPolicy:
    """The retry rule of one pool, built once per config load (never per request)."""

    __slots__ = ("attempts", "retry_on", "_connect", "_replay")

    def __init__(self, retries: int, retry_on: Iterable[str]) -> None:
        self.attempts = 1 + retries
        self.retry_on = frozenset(Outcome(word) for word in retry_on)
        self._connect = Outcome.CONNECT_ERROR in self.retry_on
        # Outcomes retried only when the request can be sent again.
        self._replay = self.retry_on - {Outcome.CONNECT_ERROR}

    @classmethod
    def of(cls, pool_config) -> "AttemptPolicy":
        """From anything with ``retries`` and ``retry_on`` (a ``PoolConfig``)."""
        return cls(pool_config.retries, pool_config.retry_on)

    def may_retry(self, outcome: str, attempts_made: int, replayable: bool = True) -> bool:
        """After a failed attempt: may the request be tried again (if a backend is found)?"""
        if attempts_made >= self.attempts:
            return False
        if outcome == Outcome.CONNECT_ERROR:
            return self._connect
        return replayable and outcome in self._replay

    def hold_5xx(self, pool: Pool, tried: Collection[Backend], replayable: bool = True) -> bool:
        """A 5xx head arrived on the attempt that made ``tried`` what it is: hold it back for
        a retry (True), or relay it as the answer (False). Held only when a retry is allowed
        and another backend could take it, so the last answer always reaches the client."""
        return self.may_retry(Outcome.SERVER_ERROR, len(tried), replayable) and \
            pool.has_alternative(tried)

    def next_backend(self, pool: Pool, key: Hashable | None, tried: Sequence[Backend],
                     select: Callable[[Pool, Hashable | None, Sequence[Backend]],
                                      Backend | None] | None = None) -> Backend | None:
        """The backend for the next attempt (the first when ``tried`` is empty): the pool's
        choice among backends not tried yet, or None once attempts run out or none is left.
        ``select`` replaces ``pool.select`` (e.g. one that explains its decision)."""
        if len(tried) >= self.attempts:
            return None
        if select is not None:
            return select(pool, key, tried)
        return pool.select(key, exclude=tried)

    @staticmethod
    def client_status(outcome: str | None) -> int:
        """The status the client gets when the attempts end on ``outcome`` (None: no
        backend was available for a first attempt)."""
        if outcome is None:
            return NO_BACKEND
        return CLIENT_STATUS.get(outcome, 502)
