"""One request's journey: route, pick a backend, connect, forward, retry when safe.

Retry rules (the same promises HAProxy and NGINX make) are the pool's ``AttemptPolicy``
(``lbctl.balancing.attempts``), the one object ``lbctl simulate`` asks too: which backend comes
next, whether a failed attempt is tried again, whether a 5xx head is held back for a retry,
and what the client gets when the attempts run out. In short:

* a failed connect moves to the next backend, whatever the method (nothing was sent);
* a backend that closes or resets before any response byte is retried only for idempotent
  methods whose body can be replayed (no body, or one small enough to have been kept);
* a response timeout or a 5xx head is retried only when the pool opts in (``retry_on``
  "timeout" / "5xx"), under the same idempotent-and-replayable rule; a 5xx is held back only
  while another attempt is possible, so the last answer always reaches the client;
* nothing is retried once response bytes have reached the client;
* at most ``retries`` extra attempts, each on a backend not tried yet, within the deadline.

Each attempt ends with one ``Outcome`` (``lbctl.balancing``): it feeds the pool's load
feedback, the pool's outcome sink (passive health) and the observer, and, when no response
reached the client, the policy decides from it whether another backend is tried.

Statuses the proxy produces: 404 (no route), 502 (backend error or invalid response),
503 with Retry-After (no eligible backend, or the proxy itself out of file descriptors,
memory or local ports: an ``Outcome.LOCAL``, never held against the backend), 504 (no
response head in time). When the request is explained, each of them carries
``X-LB-Decision`` too, listing every attempt with its outcome.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lbctl.balancing import Outcome
from lbctl.errors import local_resource_error
from lbctl.gateway.policy import Refusal
from lbctl.proxy import framing
from lbctl.proxy.exchange import ClientError
from lbctl.proxy.router import AmbiguousPath
from lbctl.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from lbctl.balancing import Backend
    from lbctl.proxy.exchange import Exchange
    from lbctl.proxy.runtime import PoolRuntime
    from lbctl.proxy.upstream import IdlePool

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

OK = Outcome.OK
SERVER_ERROR = Outcome.SERVER_ERROR
CONNECT_ERROR = Outcome.CONNECT_ERROR
RESET = Outcome.RESET
TIMEOUT = Outcome.TIMEOUT
INVALID = Outcome.INVALID
CLIENT_ABORT = Outcome.CLIENT_ABORT
TRUNCATED = Outcome.TRUNCATED
LOCAL = Outcome.LOCAL


class _Timeout(Exception):
    pass


def _respond(exchange: Exchange, status: int, message: str, extra=()) -> bool:
    """Send a proxy-generated response; returns whether the connection stays open."""
    conn = exchange.conn
    body = exchange.body
    # A body we did not read to its end leaves the stream position unknown: close.
    keep = exchange.keep_alive and not conn.last_before_close() and \
        (body is None or body.done) and exchange.upgrade is None
    exchange.status = status
    if exchange.decision is not None:
        extra = (*extra, (b"X-LB-Decision", exchange.decision))
    if conn.transport is not None and not conn.transport.is_closing():
        conn.transport.write(framing.error_response(
            status, message, keep_alive=keep, request_id=exchange.request_id, extra=extra,
            head_only=exchange.method == b"HEAD"))
    return keep


async def handle(exchange: Exchange) -> bool:
    """Serve one request; returns whether the client connection stays open."""
    observe = exchange.conn.server.observer.request    # None: nothing watches whole requests
    if observe is None:
        return await _handle(exchange)
    return await observe(exchange, _handle)


async def _handle(exchange: Exchange) -> bool:
    conn = exchange.conn
    server = conn.server
    if exchange.error is not None:
        _respond(exchange, exchange.error[0], exchange.error[1])
        return False
    runtime = server.runtime            # this request keeps this runtime to its end
    exchange.request_id = server.request_ids.resolve(exchange.header(b"x-request-id"))
    try:
        route = runtime.router.match(exchange.host.decode("latin-1"), exchange.path)
    except AmbiguousPath as exc:
        exchange.error = (400, str(exc))    # refused like a malformed request: 400, close
        exchange.keep_alive = False
        _respond(exchange, 400, str(exc))
        return False
    if route is None:
        return _respond(exchange, 404, "no route matches this request")
    # Gateway duties (lbctl.gateway): client address, rate limits, auth, allow-lists.
    refusal = runtime.gateway.admit(exchange, route, conn.peer, server.tls is not None)
    if refusal is not None and refusal.__class__ is not Refusal:
        refusal = await refusal         # the route's limit is in a shared store
    if refusal is not None:
        return _respond(exchange, refusal.status, refusal.message, extra=refusal.headers)
    state = runtime.pools[route.pool]
    pool, pcfg = state.pool, state.config
    key = state.key_of(exchange) if state.key_of is not None else None
    body = exchange.body
    if exchange.expect_continue and body is not None and not body.done:
        conn.transport.write(CONTINUE)

    deadline = conn.loop.time() + pcfg.timeouts.connect + pcfg.timeouts.response
    tried: list = []
    explain = server.observer.explain(exchange, state)
    idle = runtime.idle
    policy = state.policy
    while True:
        backend = policy.next_backend(pool, key, tried, explain)
        if backend is None:
            if not tried:
                return _respond(exchange, policy.client_status(None),
                                f"no backend available in pool {pool.name!r}",
                                extra=((b"Retry-After", b"1"),))
            break
        tried.append(backend)
        connections = idle.get(backend)
        if connections is None:
            # A pool outlives a reload that keeps its settings, so a retry of a request from
            # before it may pick a backend that joined since: its connections are the newer
            # runtime's. One that left again since is not tried.
            connections = server.runtime.idle.get(backend)
            if connections is None:
                continue
        outcome = await _attempt(exchange, state, backend, connections, deadline, tried)
        if exchange.response_begun:
            return exchange.response_keep
        if exchange.decision is not None:       # explained: the next attempt or our answer
            exchange.decision += b"; outcome=" + outcome.value.encode()
        if not policy.may_retry(outcome, len(tried), exchange.replayable()):
            break
    status, message = exchange.failure
    return _respond(exchange, status, message,
                    extra=((b"Retry-After", b"1"),) if status == 503 else ())


async def _attempt(exchange: Exchange, state: PoolRuntime, backend: Backend, idle: IdlePool,
                   deadline: float, tried: list) -> Outcome:
    """One try on one backend. When no response reached the client (``response_begun`` is
    still False), ``exchange.failure`` says what the client gets if nothing else is tried."""
    conn = exchange.conn
    loop = conn.loop
    pool, pcfg, policy = state.pool, state.config, state.policy
    outcome = RESET               # what the passive health sink hears unless we learn better
    exchange.attempts += 1
    pool.on_start(backend)
    started = loop.time()
    ok = False
    latency = None
    up = None
    try:
        up = idle.take(started)
        if up is None:
            remaining = deadline - started
            try:
                up = await idle.connect(min(pcfg.timeouts.connect, max(remaining, 0.001)))
            except (OSError, asyncio.TimeoutError) as exc:
                local = local_resource_error(exc)
                if local is not None:
                    # Our own descriptors (or memory, or ports) ran out: the backend is not
                    # at fault and another one would fare no better.
                    conn.server.out_of_resources(local, f"connecting to backend {backend.name}")
                    outcome = LOCAL
                    exchange.failure = (policy.client_status(outcome),
                                        "the proxy is out of resources; try again")
                    return outcome
                outcome = CONNECT_ERROR
                exchange.failure = (policy.client_status(outcome), "connect failed")
                return outcome
        if conn.closed:
            raise asyncio.CancelledError
        exchange.upstream = up
        exchange.reusable = False
        exchange.head_waiter = loop.create_future()
        exchange.done_waiter = loop.create_future()
        up.attach(exchange, head_request=exchange.method == b"HEAD")
        body = exchange.body
        admitted = exchange.admitted
        up.transport.write(framing.upstream_request_head(
            exchange.method, exchange.target, exchange.headers,
            client_ip=admitted.forwarded_for if admitted else conn.peer,
            proto=admitted.proto if admitted else b"http",
            host=exchange.host, request_id=exchange.request_id,
            framing="none" if body is None else body.framing,
            length=body.length if body is not None else 0, upgrade=exchange.upgrade,
            strip=admitted.strip if admitted else (), add=admitted.add if admitted else ()))
        if SERVER_ERROR in policy.retry_on:
            # Asked when a 5xx head arrives: hold it back for a retry, or relay it.
            replayable = exchange.replayable()
            exchange.retry_5xx = lambda: policy.hold_5xx(pool, tried, replayable)
        # The response timeout counts from the end of the request: a long upload is governed
        # by the body idle timeout instead, so it is not cut off for being large.
        timer = _ResponseTimer(exchange, pcfg.timeouts.response)
        if body is not None:
            body.attach(up.transport)
            if body.done:
                timer.arm()
            else:
                body.on_done = timer.arm
                timer.watch_body(_limits(exchange).body_timeout)
        else:
            timer.arm()
        try:
            await exchange.head_waiter
        except UpstreamError as exc:
            if exc.status:
                outcome = SERVER_ERROR          # held back for a retry (hold_5xx)
            else:
                outcome = RESET if exc.before_response else INVALID
            exchange.failure = (policy.client_status(outcome), exc.reason)
            return outcome
        except _Timeout:
            outcome = TIMEOUT
            exchange.failure = (policy.client_status(outcome), "backend did not answer in time")
            return outcome
        except ClientError as exc:
            outcome = CLIENT_ABORT      # the client's fault: not held against the backend
            exchange.failure = (exc.status, exc.reason)
            return outcome
        finally:
            timer.cancel()
            exchange.retry_5xx = None
        latency = loop.time() - started
        outcome = SERVER_ERROR if exchange.status >= 500 else OK

        # A response that arrived whole with its head is already done: no watchdog needed.
        watchdog = None if exchange.done_waiter.done() else \
            _Watchdog(exchange, _limits(exchange).body_timeout)
        try:
            await exchange.done_waiter
        except (UpstreamError, _Timeout) as exc:
            # Response bytes already went out: the client gets a truncated message and a
            # closed connection, never a clean end.
            outcome = TIMEOUT if isinstance(exc, _Timeout) else TRUNCATED
            exchange.response_keep = False
            if conn.transport is not None:
                conn.transport.abort()
            return outcome
        finally:
            if watchdog is not None:
                watchdog.cancel()
        ok = exchange.status < 500
        if exchange.tunnel_done is not None:
            await exchange.tunnel_done
            exchange.response_keep = False
        return outcome
    except asyncio.CancelledError:
        # The client went away before the backend answered: not the backend's failure.
        if latency is None:
            outcome = CLIENT_ABORT
        raise
    finally:
        if up is not None:
            body = exchange.body
            clean = ok and exchange.reusable and (body is None or body.done) and not up.closed
            if body is not None:
                body.detach()
            if clean:
                idle.give_back(up, loop.time())
            elif conn.tunnel is not up:
                up.close()
            if body is not None:
                body.on_done = None
        exchange.upstream = None
        exchange.head_waiter = exchange.done_waiter = None
        pool.on_end(backend, latency if latency is not None else loop.time() - started,
                    ok or outcome is LOCAL)
        state.outcomes.record(backend, outcome)
        conn.server.observer.attempt(exchange, state, backend, outcome, started, latency)


def _limits(exchange: Exchange):
    return exchange.conn.server.runtime.config.limits


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(_Timeout())


class _ResponseTimer:
    """Fails the head wait when the backend has not answered ``timeout`` after the request
    was fully sent. While the body is still streaming, the watchdog below governs instead.
    Uses the connection's reusable ``response_deadline``, not a timer per request."""

    def __init__(self, exchange: Exchange, timeout: float) -> None:
        self.exchange = exchange
        self.timeout = timeout
        self.armed = False
        self.watchdog: _Watchdog | None = None

    def arm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        waiter = self.exchange.head_waiter
        if not self.armed and waiter is not None:
            self.armed = True
            self.exchange.conn.response_deadline.start(self.timeout, _expire, waiter)

    def watch_body(self, body_timeout: float) -> None:
        self.watchdog = _Watchdog(self.exchange, body_timeout, self.exchange.head_waiter,
                                  lambda: ClientError(408, "request body not received in time"))

    def cancel(self) -> None:
        if self.armed:
            self.exchange.conn.response_deadline.stop()
        if self.watchdog is not None:
            self.watchdog.cancel()


class _Watchdog:
    """Fails the exchange when no body byte moved in either direction for ``timeout``."""

    def __init__(self, exchange: Exchange, timeout: float,
                 waiter: asyncio.Future | None = None, error=_Timeout) -> None:
        self.exchange = exchange
        self.conn = exchange.conn
        self.timeout = timeout
        self.waiter = waiter
        self.error = error
        self.seen = self.conn.progress
        self.handle = self.conn.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        conn = self.conn
        if conn.progress != self.seen:
            self.seen = conn.progress
            self.handle = conn.loop.call_later(self.timeout, self._check)
        else:
            waiter = self.waiter or self.exchange.done_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(self.error())

    def cancel(self) -> None:
        self.handle.cancel()
