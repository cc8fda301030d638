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

How it runs: from callbacks, without a task per request. The client connection calls
``start`` when a request's turn comes; with an idle connection to the chosen backend at hand
(the usual case) the request is routed, admitted, written and left there, all inside the
client's read. The response comes back through the upstream connection's parser callbacks,
which relay it (``Exchange.response_*``) and note what the attempt learned (``event``: the
response complete, or a failure); ``proceed`` acts on it from the top of a callback (the end
of an upstream read, a lost connection, a timer; never inside a parser), ending the attempt,
trying the next backend or answering, and telling the connection the request is over
(``ClientConnection.finished``). A task is made only where something must be awaited: a new
connection to a backend, and an admission decided in a shared store; when its wait is over
it carries on with the same functions. The timers are the connection's reusable
``response_deadline``: the response timeout, then, while bytes flow, the idle watchdogs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from lbctl.balancing import Outcome
from lbctl.errors import local_resource_error
from lbctl.gateway.policy import Refusal
from lbctl.proxy import framing
from lbctl.proxy.exchange import COMPLETE, TIMED_OUT, ClientError
from lbctl.proxy.router import AmbiguousPath

if TYPE_CHECKING:
    from lbctl.proxy.exchange import Exchange
    from lbctl.proxy.upstream import IdlePool, UpstreamConnection

log = logging.getLogger("lbctl.proxy")

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
RETRY_AFTER = ((b"Retry-After", b"1"),)

OK = Outcome.OK
SERVER_ERROR = Outcome.SERVER_ERROR
CONNECT_ERROR = Outcome.CONNECT_ERROR
RESET = Outcome.RESET
TIMEOUT = Outcome.TIMEOUT
INVALID = Outcome.INVALID
CLIENT_ABORT = Outcome.CLIENT_ABORT
TRUNCATED = Outcome.TRUNCATED
LOCAL = Outcome.LOCAL


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


# ---- the request: route, admit, then the attempts -----------------------------------------

def start(exchange: Exchange) -> None:
    """Serve ``exchange``, the connection's current request; the connection hears of its end
    through ``ClientConnection.finished`` (or not at all when the client went away first)."""
    conn = exchange.conn
    server = conn.server
    exchange.begun = conn.loop.time()
    if exchange.error is not None:
        _respond(exchange, exchange.error[0], exchange.error[1])
        _finish(exchange, False)
        return
    runtime = exchange.runtime = server.runtime    # this request keeps this runtime to its end
    exchange.request_id = server.request_ids.resolve(exchange.sent_id)
    try:
        route = runtime.router.match(exchange.host.decode("latin-1"), exchange.path)
    except AmbiguousPath as exc:
        exchange.error = (400, str(exc))    # refused like a malformed request: 400, close
        exchange.keep_alive = False
        _respond(exchange, 400, str(exc))
        _finish(exchange, False)
        return
    if route is None:
        _finish(exchange, _respond(exchange, 404, "no route matches this request"))
        return
    # Gateway duties (lbctl.gateway): client address, rate limits, auth, allow-lists.
    refusal = runtime.gateway.admit(exchange, route, conn.peer, server.tls is not None)
    if refusal is not None:
        if refusal.__class__ is not Refusal:
            _spawn(exchange, _admit_shared(exchange, refusal, route.pool))
            return                          # the route's limit is in a shared store
        _finish(exchange, _respond(exchange, refusal.status, refusal.message,
                                   extra=refusal.headers))
        return
    _forward(exchange, route.pool)


async def _admit_shared(exchange: Exchange, pending, pool_name: str) -> None:
    refusal = await pending
    if exchange.ended:
        return                              # the client went away meanwhile
    exchange.task = None
    if refusal is not None:
        _finish(exchange, _respond(exchange, refusal.status, refusal.message,
                                   extra=refusal.headers))
        return
    _forward(exchange, pool_name)


def _forward(exchange: Exchange, pool_name: str) -> None:
    conn = exchange.conn
    state = exchange.state = exchange.runtime.pools[pool_name]
    exchange.key = state.key_of(exchange) if state.key_of is not None else None
    body = exchange.body
    if exchange.expect_continue and body is not None and not body.done:
        conn.transport.write(CONTINUE)
    timeouts = state.config.timeouts
    exchange.deadline = conn.loop.time() + timeouts.connect + timeouts.response
    exchange.select = conn.server.observer.explain(exchange, state)
    _next_attempt(exchange)


def _next_attempt(exchange: Exchange) -> None:
    """Try the next backend, or answer when there is none to try."""
    state = exchange.state
    policy = state.policy
    tried = exchange.tried
    while True:
        backend = policy.next_backend(state.pool, exchange.key, tried, exchange.select)
        if backend is None:
            if not tried:
                _finish(exchange, _respond(exchange, policy.client_status(None),
                                           f"no backend available in pool {state.pool.name!r}",
                                           extra=RETRY_AFTER))
            else:
                _answer_failure(exchange)
            return
        tried.append(backend)
        idle = exchange.runtime.idle.get(backend)
        if idle is None:
            # A pool outlives a reload that keeps its settings, so a retry of a request from
            # before it may pick a backend that joined since: its connections are the newer
            # runtime's. One that left again since is not tried.
            idle = exchange.conn.server.runtime.idle.get(backend)
        if idle is not None:
            break
    exchange.attempts += 1
    state.pool.on_start(backend)
    exchange.trying = backend
    exchange.latency = None
    exchange.result = RESET       # what the passive health sink hears unless we learn better
    exchange.ok = False
    started = exchange.started = exchange.conn.loop.time()
    exchange.idle_pool = idle
    up = idle.take(started)
    if up is None:
        remaining = exchange.deadline - started
        _spawn(exchange, _connect(exchange, idle, min(state.config.timeouts.connect,
                                                      max(remaining, 0.001))))
        return
    _send(exchange, up)


async def _connect(exchange: Exchange, idle: IdlePool, timeout: float) -> None:
    try:
        up = await idle.connect(timeout)
    except (OSError, asyncio.TimeoutError) as exc:
        if exchange.ended:
            return
        exchange.task = None
        policy = exchange.state.policy
        local = local_resource_error(exc)
        if local is not None:
            # Our own descriptors (or memory, or ports) ran out: the backend is not at fault
            # and another one would fare no better.
            exchange.conn.server.out_of_resources(
                local, f"connecting to backend {exchange.trying.name}")
            outcome = LOCAL
            exchange.failure = (policy.client_status(outcome),
                                "the proxy is out of resources; try again")
        else:
            outcome = CONNECT_ERROR
            exchange.failure = (policy.client_status(outcome), "connect failed")
        _end_attempt(exchange, outcome, False)
        _after_failure(exchange, outcome)
        return
    if exchange.ended:
        # The client went away while it connected: nothing was sent, so the new
        # connection can serve another request.
        idle.give_back(up, exchange.conn.loop.time())
        return
    exchange.task = None
    _send(exchange, up)


def _send(exchange: Exchange, up: UpstreamConnection) -> None:
    """Write the request on ``up``; the response comes back through its callbacks."""
    conn = exchange.conn
    state = exchange.state
    exchange.upstream = up
    exchange.reusable = False
    up.attach(exchange, head_request=exchange.method == b"HEAD")
    body = exchange.body
    admitted = exchange.admitted
    head = framing.upstream_request_head(
        exchange.method, exchange.target, exchange.pieces,
        client_ip=admitted.forwarded_for.encode() if admitted else conn.peer_bytes,
        proto=admitted.proto if admitted else b"http",
        host=exchange.host, request_id=exchange.request_id,
        framing="none" if body is None else body.framing,
        length=body.length if body is not None else 0, upgrade=exchange.upgrade,
        strip=admitted.strip if admitted else (), add=admitted.add if admitted else ())
    policy = state.policy
    if SERVER_ERROR in policy.retry_on:
        # Asked when a 5xx head arrives: hold it back for a retry, or relay it.
        replayable = exchange.replayable()
        pool, tried = state.pool, exchange.tried
        exchange.retry_5xx = lambda: policy.hold_5xx(pool, tried, replayable)
    if body is None:
        up.transport.write(head)
    else:
        body.attach(up.transport, head)   # the head, and what has come of the body, at once
        if not body.done:
            # The response timeout counts from the end of the request: a long upload is
            # governed by the body idle timeout instead, so it is not cut off for being large.
            body.on_done = _arm_response_timeout
            _watch(exchange, _upload_stalled)
            return
    _arm_response_timeout(exchange)


# ---- what an attempt learns, acted on from the top of a callback --------------------------

def proceed(exchange: Exchange) -> None:
    """Act on what the attempt in progress learned (``exchange.event``); called after each
    upstream read, a lost upstream connection, a timer or a failed request body."""
    event = exchange.event
    if event is None:
        if exchange.latency is not None and not exchange.watching \
                and exchange.upstream is not None:
            # The head went out, the body is still coming: it must keep moving.
            exchange.watching = True
            _watch(exchange, _response_stalled)
        return
    exchange.event = None
    if exchange.trying is None or exchange.ended:
        return                              # the attempt has ended already
    if event is COMPLETE:
        exchange.ok = exchange.status < 500
        if exchange.tunnel:
            return                          # upgraded: the attempt lasts as long as the tunnel
        _end_attempt(exchange, exchange.result, exchange.ok)
        _finish(exchange, exchange.response_keep)
        return
    if exchange.latency is not None:
        # Response bytes already went out: the client gets a truncated message and a closed
        # connection, never a clean end.
        outcome = TIMEOUT if event is TIMED_OUT else TRUNCATED
        exchange.response_keep = False
        if exchange.conn.transport is not None:
            exchange.conn.transport.abort()
        _end_attempt(exchange, outcome, False)
        _finish(exchange, False)
        return
    policy = exchange.state.policy
    if event is TIMED_OUT:
        outcome = TIMEOUT
        exchange.failure = (policy.client_status(outcome), "backend did not answer in time")
    elif isinstance(event, ClientError):
        outcome = CLIENT_ABORT          # the client's fault: not held against the backend
        exchange.failure = (event.status, event.reason)
    else:
        if event.status:
            outcome = SERVER_ERROR          # held back for a retry (hold_5xx)
        else:
            outcome = RESET if event.before_response else INVALID
        exchange.failure = (policy.client_status(outcome), event.reason)
    _end_attempt(exchange, outcome, False)
    _after_failure(exchange, outcome)


def _after_failure(exchange: Exchange, outcome: Outcome) -> None:
    """No response reached the client: the next backend, or the client's answer."""
    if exchange.decision is not None:       # explained: the next attempt or our answer
        exchange.decision += b"; outcome=" + outcome.value.encode()
    if exchange.state.policy.may_retry(outcome, len(exchange.tried), exchange.replayable()):
        _next_attempt(exchange)
    else:
        _answer_failure(exchange)


def _answer_failure(exchange: Exchange) -> None:
    """The attempts ran out on a failure: the client gets ``exchange.failure``."""
    status, message = exchange.failure
    _finish(exchange, _respond(exchange, status, message,
                               extra=RETRY_AFTER if status == 503 else ()))


def abort(exchange: Exchange) -> None:
    """The client went away: end the attempt in progress; the request counts as aborted."""
    if exchange.ended:
        return
    if exchange.trying is not None:
        # Before a response head it is not the backend's failure.
        _end_attempt(exchange, CLIENT_ABORT if exchange.latency is None else exchange.result,
                     exchange.ok)
    _finish(exchange, False, aborted=True)


def _end_attempt(exchange: Exchange, outcome: Outcome, ok: bool) -> None:
    conn = exchange.conn
    backend = exchange.trying
    state = exchange.state
    exchange.trying = None
    now = conn.loop.time()
    up = exchange.upstream
    if up is not None:
        exchange.upstream = None
        body = exchange.body
        clean = ok and exchange.reusable and (body is None or body.done) and not up.closed
        if body is not None:
            body.detach()
            body.on_done = None
        if clean:
            exchange.idle_pool.give_back(up, now)
        elif conn.tunnel is not up:
            up.close()
    exchange.retry_5xx = None
    exchange.watching = False
    conn.response_deadline.stop()
    latency = exchange.latency
    # A local resource failure is not the backend's: its load feedback hears a success.
    state.pool.on_end(backend, latency if latency is not None else now - exchange.started,
                      ok or outcome is LOCAL)
    state.outcomes.record(backend, outcome)
    conn.server.observer.attempt(exchange, state, backend, outcome, exchange.started, latency)


def _finish(exchange: Exchange, keep: bool, aborted: bool = False) -> None:
    exchange.ended = True
    conn = exchange.conn
    hook = conn.server.observer.request_end
    if hook is not None:
        hook(exchange, aborted)
    if not aborted:
        conn.finished(exchange, keep)


# ---- tasks, for the waits a callback cannot make -------------------------------------------

def _spawn(exchange: Exchange, coro) -> None:
    task = exchange.task = exchange.conn.loop.create_task(coro)
    task.add_done_callback(lambda t: _reap(t, exchange))


def _reap(task: asyncio.Task, exchange: Exchange) -> None:
    if task.cancelled() or task.exception() is None:
        return
    # A bug must cost one connection, not the process.
    log.error("internal error while handling a request from %s", exchange.conn.peer,
              exc_info=task.exception())
    exchange.conn.internal_error(exchange)


# ---- timers: the connection's response_deadline, one action at a time ---------------------

def _arm_response_timeout(exchange: Exchange) -> None:
    """The request is sent: its backend has ``timeouts.response`` to answer."""
    if exchange.upstream is not None and exchange.latency is None:
        exchange.conn.response_deadline.start(exchange.state.config.timeouts.response,
                                              _response_timeout, exchange)


def _response_timeout(exchange: Exchange) -> None:
    if exchange.upstream is not None and exchange.latency is None and exchange.event is None:
        exchange.event = TIMED_OUT
        exchange.conn.proceed(exchange)


def _watch(exchange: Exchange, action) -> None:
    """Run ``action`` once no body byte moved either way for ``body_timeout``."""
    conn = exchange.conn
    exchange.seen = conn.progress
    conn.response_deadline.start(exchange.runtime.config.limits.body_timeout, action, exchange)


def _moved(exchange: Exchange, action) -> bool:
    """Bytes moved since the watch began: watch again from now."""
    conn = exchange.conn
    if conn.progress == exchange.seen:
        return False
    _watch(exchange, action)
    return True


def _upload_stalled(exchange: Exchange) -> None:
    if exchange.upstream is None or exchange.latency is not None or \
            _moved(exchange, _upload_stalled):
        return
    if exchange.event is None:
        exchange.event = ClientError(408, "request body not received in time")
    exchange.conn.proceed(exchange)


def _response_stalled(exchange: Exchange) -> None:
    if exchange.upstream is None or _moved(exchange, _response_stalled):
        return
    if exchange.event is None:
        exchange.event = TIMED_OUT
    exchange.conn.proceed(exchange)
