"""What the data plane reports to: the ``Hooks`` a ``ProxyServer`` is given.

The proxy knows nothing of metrics or logs; it calls these, each at most once per request or
attempt (``lbctl.observe.Observer`` is what ``serve`` plugs in here):

* ``attempt(exchange, state, backend, outcome, started, head_latency)`` when an attempt on a
  backend ends (``head_latency``: seconds to the response head, None when none arrived);
* ``request_end``: None, or ``request_end(exchange, aborted)`` once a client request is over
  (answered, or ``aborted``: the client went away first), when something needs it;
  ``exchange.begun`` is the loop time its handling began;
* ``explain(exchange, state)``: None, or a ``select(pool, key, exclude)`` that records why
  it chose (``X-LB-Decision``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from lbctl.balancing import Backend, Outcome, Pool
    from lbctl.proxy.exchange import Exchange
    from lbctl.proxy.runtime import PoolRuntime

Select = Callable[["Pool", object, list], "Backend | None"]


class Hooks(Protocol):
    request_end: Callable[[Exchange, bool], None] | None

    def attempt(self, exchange: Exchange, state: PoolRuntime, backend: Backend,
                outcome: Outcome, started: float, head_latency: float | None) -> None: ...

    def explain(self, exchange: Exchange, state: PoolRuntime) -> Select | None: ...


class NoHooks:
    """Nothing watches: the leanest path."""

    request_end = None

    def attempt(self, exchange, state, backend, outcome, started, head_latency) -> None:
        pass

    def explain(self, exchange, state) -> None:
        return None
