"""One request's journey: route, pick a backend, connect, forward, retry when safe.

Retry rules (the same promises HAProxy and NGINX make):

* a failed connect moves to the next backend, whatever the method (nothing was sent);
* a backend that closes or resets before any response byte is retried only for idempotent
  methods whose body can be replayed (no body, or one small enough to have been kept);
* a response timeout or a 5xx head is retried only when the pool opts in (``retry_on``
  "timeout" / "5xx"), under the same idempotent-and-replayable rule; a 5xx is held back only
  while another attempt is possible, so the last answer always reaches the client;
* nothing is retried once response bytes have reached the client;
* at most ``retries`` extra attempts, each on a backend not tried yet, within the deadline.

Statuses the proxy produces: 404 (no route), 502 (backend error or invalid response),
503 with Retry-After (no eligible backend), 504 (no response head in time).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lbctl.gateway.policy import Refusal
from lbctl.proxy import framing
from lbctl.proxy.client import ClientError
from lbctl.proxy.router import AmbiguousPath
from lbctl.proxy.upstream import IdlePool, UpstreamError

if TYPE_CHECKING:
    from lbctl.proxy.client import ClientConnection, Request

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _Timeout(Exception):
    pass


def _respond(conn: ClientConnection, req: Request, status: int, message: str,
             request_id: bytes | None, extra=()) -> bool:
    """Send a proxy-generated response; returns whether the connection stays open."""
    # A body we did not read to its end leaves the stream position unknown: close.
    keep = req.keep_alive and not conn.last_before_close() and (req.body is None or req.body.done) \
        and req.upgrade is None
    conn.status = status
    if conn.transport is not None and not conn.transport.is_closing():
        conn.transport.write(framing.error_response(
            status, message, keep_alive=keep, request_id=request_id, extra=extra,
            head_only=req.method == b"HEAD"))
    return keep


async def handle(conn: ClientConnection, req: Request) -> bool:
    """Serve one request on ``conn``; returns whether the client connection stays open."""
    observe = conn.server.observer.request      # None: nothing watches whole requests
    if observe is None:
        return await _handle(conn, req)
    return await observe(conn, req, _handle)


async def _handle(conn: ClientConnection, req: Request) -> bool:
    server = conn.server
    if req.error is not None:
        _respond(conn, req, req.error[0], req.error[1], None)
        return False
    runtime = server.runtime            # this request keeps this runtime to its end
    request_id = conn.request_id = server.request_ids.resolve(req.header(b"x-request-id"))
    try:
        route = runtime.router.match(req.host.decode("latin-1"), req.path)
    except AmbiguousPath as exc:
        req.error = (400, str(exc))         # refused like a malformed request: 400, close
        req.keep_alive = False
        _respond(conn, req, 400, str(exc), request_id)
        return False
    if route is None:
        return _respond(conn, req, 404, "no route matches this request", request_id)
    # Gateway duties (lbctl.gateway): client address, rate limits, auth, allow-lists.
    refusal = runtime.gateway.admit(conn, req, route)
    if refusal is not None and refusal.__class__ is not Refusal:
        refusal = await refusal         # the route's limit is in a shared store
    if refusal is not None:
        return _respond(conn, req, refusal.status, refusal.message, request_id,
                        extra=refusal.headers)
    state = runtime.pools[route.pool]
    pool, pcfg = state.pool, state.config
    key = state.key_of(conn, req) if state.key_of is not None else None
    if req.expect_continue and req.body is not None and not req.body.done:
        conn.transport.write(CONTINUE)

    loop = conn.loop
    deadline = loop.time() + pcfg.timeouts.connect + pcfg.timeouts.response
    tried: list = []
    failure = (502, "no backend could serve the request")
    explain = server.observer.explain(conn, req, state)
    attempts = 1 + pcfg.retries
    for attempt in range(attempts):
        backend = pool.select(key, exclude=tried) if explain is None else explain(pool, key, tried)
        if backend is None:
            if not tried:
                return _respond(conn, req, 503, f"no backend available in pool {pool.name!r}",
                                request_id, extra=((b"Retry-After", b"1"),))
            break
        tried.append(backend)
        last = attempt == attempts - 1
        result = await _attempt(conn, req, state, backend, request_id, deadline, last, tried)
        if result is True or result is False:
            return result
        failure, retryable = result
        if not retryable:
            break
    return _respond(conn, req, failure[0], failure[1], request_id)


async def _attempt(conn: ClientConnection, req: Request, state, backend, request_id: bytes,
                   deadline: float, last: bool, tried: list):
    """One try on one backend. Returns keep-alive (bool) when a response was relayed, or
    ``((status, message), retryable)`` when this backend failed before any response byte."""
    loop = conn.loop
    pool, pcfg = state.pool, state.config
    retry_on = pcfg.retry_on
    outcome = "reset"             # what the passive health sink hears unless we learn better
    idle: IdlePool = backend.extra["idle"]
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
            except (OSError, asyncio.TimeoutError):
                outcome = "connect"
                return (502, "connect failed"), "connect" in retry_on
        if conn.closed:
            raise asyncio.CancelledError
        conn.upstream = up
        conn.response_begun = False
        conn.up_reusable = False
        conn.head_waiter = loop.create_future()
        conn.done_waiter = loop.create_future()
        up.attach(conn, head_request=req.method == b"HEAD")
        body = req.body
        admitted = req.admitted
        up.transport.write(framing.upstream_request_head(
            req.method, req.target, req.headers,
            client_ip=admitted.forwarded_for if admitted else conn.peer,
            proto=admitted.proto if admitted else b"http",
            host=req.host, request_id=request_id,
            framing="none" if body is None else body.framing,
            length=body.length if body is not None else 0, upgrade=req.upgrade,
            strip=admitted.strip if admitted else (), add=admitted.add if admitted else ()))
        if "5xx" in retry_on and not last and _replayable(req):
            conn.retry_5xx = lambda: pool.has_alternative(tried)
        # The response timeout counts from the end of the request: a long upload is governed
        # by the body idle timeout instead, so it is not cut off for being large.
        timer = _ResponseTimer(conn, pcfg.timeouts.response)
        if body is not None:
            body.attach(up.transport)
            if body.done:
                timer.arm()
            else:
                body.on_done = timer.arm
                timer.watch_body(server_limits(conn).body_timeout)
        else:
            timer.arm()
        try:
            await conn.head_waiter
        except UpstreamError as exc:
            if exc.status:
                outcome = "5xx"
                return (502, exc.reason), True       # held back only when a retry was possible
            outcome = "invalid" if not exc.before_response else "reset"
            # Nothing reached the client; a retry is safe only if the backend cannot have
            # acted on the request twice, and the body can be sent again.
            return (502, exc.reason), exc.before_response and "reset" in retry_on and \
                _replayable(req)
        except _Timeout:
            outcome = "timeout"
            return (504, "backend did not answer in time"), "timeout" in retry_on and \
                _replayable(req)
        except ClientError as exc:
            outcome = "client"          # the client's fault: not held against the backend
            return (exc.status, exc.reason), False
        finally:
            timer.cancel()
            conn.retry_5xx = None
        latency = loop.time() - started
        outcome = "5xx" if conn.status >= 500 else "ok"

        # A response that arrived whole with its head is already done: no watchdog needed.
        watchdog = None if conn.done_waiter.done() else \
            _Watchdog(conn, server_limits(conn).body_timeout)
        try:
            await conn.done_waiter
        except (UpstreamError, _Timeout) as exc:
            # Response bytes already went out: the client gets a truncated message and a
            # closed connection, never a clean end.
            outcome = "timeout" if isinstance(exc, _Timeout) else "reset"
            if conn.transport is not None:
                conn.transport.abort()
            return False
        finally:
            if watchdog is not None:
                watchdog.cancel()
        ok = conn.status < 500
        if conn.tunnel is not None:
            await conn.tunnel_done
            return False
        return conn.resp_keep
    except asyncio.CancelledError:
        # The client went away before the backend answered: not the backend's failure.
        if latency is None:
            outcome = "client"
        raise
    finally:
        if up is not None:
            body = req.body
            clean = ok and conn.up_reusable and (body is None or body.done) and not up.closed
            if body is not None:
                body.detach()
            if clean:
                idle.give_back(up, loop.time())
            elif conn.tunnel is not up:
                up.close()
            if body is not None:
                body.on_done = None
        conn.upstream = None
        conn.head_waiter = conn.done_waiter = None
        pool.on_end(backend, latency if latency is not None else loop.time() - started, ok)
        state.outcomes.record(backend, outcome)
        conn.server.observer.attempt(conn, state, backend, outcome, started, latency)


def _replayable(req: Request) -> bool:
    """Safe to send again: the backend cannot have acted on it twice, the body is at hand."""
    return req.method in framing.IDEMPOTENT and (req.body is None or req.body.replayable())


def server_limits(conn: ClientConnection):
    return conn.server.runtime.config.limits


def _expire(waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(_Timeout())


class _ResponseTimer:
    """Fails the head wait when the backend has not answered ``timeout`` after the request
    was fully sent. While the body is still streaming, the watchdog below governs instead.
    Uses the connection's reusable ``response_deadline``, not a timer per request."""

    def __init__(self, conn: ClientConnection, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.armed = False
        self.watchdog: _Watchdog | None = None

    def arm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if not self.armed and self.conn.head_waiter is not None:
            self.armed = True
            self.conn.response_deadline.start(self.timeout, _expire, self.conn.head_waiter)

    def watch_body(self, body_timeout: float) -> None:
        self.watchdog = _Watchdog(self.conn, body_timeout, self.conn.head_waiter,
                                  lambda: ClientError(408, "request body not received in time"))

    def cancel(self) -> None:
        if self.armed:
            self.conn.response_deadline.stop()
        if self.watchdog is not None:
            self.watchdog.cancel()


class _Watchdog:
    """Fails the exchange when no body byte moved in either direction for ``timeout``."""

    def __init__(self, conn: ClientConnection, timeout: float,
                 waiter: asyncio.Future | None = None, error=_Timeout) -> None:
        self.conn = conn
        self.timeout = timeout
        self.waiter = waiter
        self.error = error
        self.seen = conn.progress
        self.handle = conn.loop.call_later(timeout, self._check)

    def _check(self) -> None:
        conn = self.conn
        if conn.progress != self.seen:
            self.seen = conn.progress
            self.handle = conn.loop.call_later(self.timeout, self._check)
        else:
            waiter = self.waiter or conn.done_waiter
            if waiter is not None and not waiter.done():
                waiter.set_exception(self.error())

    def cancel(self) -> None:
        self.handle.cancel()
