"""The client side of the proxy: one ``ClientConnection`` per accepted TCP connection.

The connection keeps what outlives a request: the parser, the queue of exchanges, read and
write flow control, and the timers (keep-alive idle, request head, the reusable response
deadline). httptools parses requests in ``data_received`` into ``Exchange`` objects
(``exchange.py``); complete heads are queued in order (so pipelined requests are answered in
order) and started one at a time (``forward.start``) once a read has been parsed, or when the
request before them ends (``finished``). No task runs per connection or per request: the
journey goes on from callbacks (see ``forward.py``). Body bytes stream to the current
upstream from inside the parser callback; they are buffered only until an upstream
connection exists, or while a pipelined request waits its turn, and reading pauses when that
buffer fills.

No connection may hold the event loop. A read is parsed ``SLICE`` bytes at a time, and the
body pieces of one slice go upstream as one write, however finely the client chunked them.
Once a connection has done ``TURN_BUDGET`` of parsing work (bytes, and a fixed cost per body
piece) it stops reading until the loop's next turn, keeping what it has not parsed yet;
libuv would otherwise hand it read after read, megabytes in one turn, while every other
connection and the admin API wait.

A connection counts toward the connection caps from the moment it is accepted. On a TLS
listener the handshake runs inside the connection (``loop.start_tls``), bounded by
``header_timeout`` like the request head that follows; past the cap a TLS client is closed
before any handshake work.

When a connection must close while its client may still be sending (a request body not read
to its end, a refused request), it closes *lingering*, as NGINX does: it sends what it has,
shuts its sending side, and reads and discards for up to ``LINGER_TIME`` (less while the
client is silent for ``LINGER_IDLE``), so the client reads its answer instead of a TCP reset
that would destroy it.

On SIGTERM (``start_drain``) a connection between requests is given ``DRAIN_GRACE`` for a
request that may already be on its way, answered with ``Connection: close``; a response in
progress finishes, and the connection closes after it.

After a 101 Switching Protocols the connection becomes a tunnel: bytes are copied both ways
until either side closes. Only the protocols in ``[listen] upgrades`` (``websocket`` by
default) are asked for; other Upgrade requests are plain requests. When the backend answers
an Upgrade with anything but 101, the connection carries on as HTTP/1.1.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import httptools

from lbctl.proxy import forward, framing, refusals
from lbctl.proxy.deadline import Deadline
from lbctl.proxy.exchange import Exchange

if TYPE_CHECKING:
    from lbctl.proxy.exchange import Body
    from lbctl.proxy.server import ProxyServer
    from lbctl.proxy.upstream import UpstreamConnection

log = logging.getLogger("lbctl.proxy")

MAX_PIPELINE = 16              # queued pipelined requests before reading pauses
SLICE = 16 * 1024              # bytes given to the parser at a time
TURN_BUDGET = 256 * 1024       # parsing work a connection does before it lets the loop turn
PIECE_COST = 256               # a body piece (a Python callback, a list append) in bytes' worth
LINGER_TIME = 30.0             # lingering close: at most this long in all (NGINX's lingering_time)
LINGER_IDLE = 5.0              # ...and this long without a byte (NGINX's lingering_timeout)
DRAIN_GRACE = 1.0              # SIGTERM: how long an idle keep-alive connection may still send
OVER_CAP_LINGER = 1.0          # a connection refused at the cap lingers this long at most
# What feed_data raises when it stops before the end (an Upgrade is not a parser error).
PARSER_STOPS = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class _StopParsing(Exception):
    """Raised inside a parser callback to stop at a refused request (no byte after it is read)."""


def _run_eagerly(coro, done) -> None:
    """Run ``coro`` up to its first real wait now, not at the loop's next turn, then on;
    ``done(result, error)`` at its end. ``loop.start_tls`` must take over a transport inside
    ``connection_made``: started from a task, the ClientHello could be read first."""
    try:
        waiting = coro.send(None)
    except StopIteration as stop:
        done(stop.value, None)
        return
    except (Exception, asyncio.CancelledError) as exc:
        done(None, exc)
        return
    if hasattr(waiting, "add_done_callback"):
        waiting.add_done_callback(lambda _: _run_eagerly(coro, done))
    else:                                   # a bare yield: try again at the next turn
        asyncio.get_running_loop().call_soon(_run_eagerly, coro, done)


class ClientConnection(asyncio.Protocol):
    """An accepted client connection: the parser, the queue of exchanges, flow control and
    timers. Slotted: thousands may sit idle, each costing only what it holds."""

    __slots__ = (
        "server", "loop", "transport", "peer", "peer_bytes", "parser", "parsing", "url", "in_head",
        "head_size", "stop_parsing", "upgrading", "upgrade_tail", "queue", "current",
        "dispatching", "read_pauses", "backlog", "backlog_due", "work", "unflushed",
        "progress", "tunnel", "closed", "draining", "peer_done", "unread",
        "lingering", "linger_until", "handshaking", "early", "idle", "response_deadline",
        "head_timer", "limits",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.peer_bytes = b"?"            # as X-Forwarded-For carries it
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Exchange | None = None          # the request whose bytes are arriving
        self.url = b""                    # its request target so far
        self.in_head = False
        self.head_size = 0                # bytes of the request head so far (431 past the limit)
        self.stop_parsing = False
        self.upgrading: Exchange | None = None        # the last head asked for a tunnel
        self.upgrade_tail = b""           # bytes after an Upgrade request's head, for the tunnel
        # Complete heads waiting their turn: a list (at most MAX_PIPELINE + 1 long), lighter
        # than a deque for the many connections that never pipeline.
        self.queue: list[Exchange] = []
        self.current: Exchange | None = None          # the one being answered
        self.dispatching = False          # in _next, or due in the server's batch (soon)
        self.read_pauses: set[str] = set()
        self.backlog: memoryview | None = None        # read, not parsed yet (budget, pauses)
        self.backlog_due = False          # its parsing is scheduled
        self.work = 0                     # parsing work since this connection last yielded
        self.unflushed: Body | None = None            # body pieces parsed, not written yet
        self.progress = 0                 # body bytes moved either way, for idle watchdogs
        self.tunnel: UpstreamConnection | None = None
        self.closed = False
        self.draining = False             # SIGTERM: answer what arrives with Connection: close
        self.peer_done = False            # the client half-closed: answer what was read, close
        self.unread = False               # the client may still be sending: close lingering
        self.lingering: asyncio.TimerHandle | None = None
        self.linger_until = 0.0
        self.handshaking = False
        self.early: list[bytes] | None = None   # TLS: bytes that came with the handshake's end
        self.idle = Deadline(server.timers)           # keep-alive: waiting for the next request
        self.response_deadline = Deadline(server.timers)  # set by forward.py per exchange
        self.head_timer: asyncio.TimerHandle | None = None
        self.limits = server.runtime.config.limits    # [limits] for the head being parsed

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        self.peer_bytes = self.peer.encode()
        server = self.server
        connections = server.connections
        connections.add(self)
        counts = server.per_client
        open_here = counts[self.peer] = counts.get(self.peer, 0) + 1
        limits = server.runtime.config.limits
        per_client = limits.max_connections_per_client
        open_now = len(connections)
        trimmer = server.trimmer
        if open_now > trimmer.peak:
            trimmer.peak = open_now
        if open_now > server.max_connections or \
                (per_client and open_here > per_client):
            # Over a cap: a short 503 and close, so other clients keep being served. A TLS
            # client is closed before its handshake: no costly work for a refused connection.
            server.refused_over_cap()
            self.stop_parsing = True
            if server.tls is None:
                transport.write(framing.error_response(503, "too many connections",
                                                       keep_alive=False,
                                                       extra=((b"Retry-After", b"1"),)))
                # Its request is on its way: read and dropped, briefly, so that the 503
                # is not destroyed by the reset that closing over unread bytes sends.
                self._linger(transport, OVER_CAP_LINGER)
            else:
                transport.close()
            return
        if server.tls is not None:
            # The handshake is bounded by header_timeout, as NGINX bounds it by its
            # client_header_timeout.
            self.handshaking = True
            _run_eagerly(self.loop.start_tls(
                transport, self, server.tls.front, server_side=True,
                ssl_handshake_timeout=limits.header_timeout), self._handshake_done)
        else:
            self._await_first_request()

    def _await_first_request(self) -> None:
        """A connection that never sends a request is held for header_timeout, not for the
        keep-alive timeout (NGINX's client_header_timeout counts from the accept too)."""
        limits = self.server.runtime.config.limits
        self.idle.start(min(limits.header_timeout, limits.keepalive_timeout),
                        ClientConnection.close, self)

    def _handshake_done(self, transport: asyncio.Transport | None,
                        error: BaseException | None) -> None:
        self.handshaking = False
        if error is not None or transport is None:
            # Timed out, or not TLS: start_tls has closed the connection.
            self.closed = True
            self._cancel_timers()
            self.server.forget(self)
            return
        self.transport = transport
        if self.closed or self.draining:
            transport.close()
            return
        self._await_first_request()
        early, self.early = self.early, None
        for data in early or ():
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self.handshaking:
            # The TLS layer hands over a request that came with the end of the handshake
            # before start_tls has returned the transport to answer it on: kept until then.
            if self.early is None:
                self.early = []
            self.early.append(data)
            return
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        if self.stop_parsing:
            self.progress += 1              # lingering: discarded, but the client is alive
            return
        if len(data) > SLICE or self.work >= TURN_BUDGET - SLICE:
            self._parse(data)
            return
        # The usual read (a request, a body piece): one slice, well within the budget.
        pieces = self.progress
        try:
            self.parser.feed_data(data)
        except PARSER_STOPS as exc:
            resume = self._stopped(exc, data, 0, len(data))
            if resume < len(data):          # what follows an Upgrade nobody asked for
                self._parse(memoryview(data)[resume:])
                return
        body = self.unflushed
        if body is not None:
            self.unflushed = None
            body.flush()
        self.work += len(data) + PIECE_COST * (self.progress - pieces)
        if self.work >= TURN_BUDGET:        # a slice of tiny body pieces: yield the loop
            self.work = 0
            self.pause_reading("turn")
            self.loop.call_soon(self.resume_reading, "turn")
        if self.in_head and self.head_timer is None and not self.stop_parsing:
            # A head that began in this read and is still incomplete: its deadline counts
            # from now, the loop time of its first byte. A head that arrived whole (the usual
            # case) never needs a timer at all.
            limits = self.server.runtime.config.limits
            self.head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)
        if self.current is None and self.queue and not self.dispatching:
            self.dispatching = True
            self.server.soon(ClientConnection._dispatch, self)

    def _parse(self, data: bytes | memoryview) -> None:
        """Parse ``data`` a slice at a time; keep what the budget or a pause leaves over."""
        end = len(data)
        start = 0
        view = None
        while True:
            if start == 0 and end <= SLICE:
                piece = data
            else:
                if view is None:
                    view = memoryview(data)
                piece = view[start:start + SLICE]
            pieces = self.progress
            try:
                self.parser.feed_data(piece)
                start += len(piece)
            except PARSER_STOPS as exc:
                start = self._stopped(exc, data, start, len(piece))
            body = self.unflushed
            if body is not None:            # the slice's body pieces, as one upstream write
                self.unflushed = None
                body.flush()
            self.work += len(piece) + PIECE_COST * (self.progress - pieces)
            if start >= end or self.stop_parsing:
                break
            if self.read_pauses or self.work >= TURN_BUDGET:
                # Paused (a full body buffer, a deep pipeline) or over budget: the rest
                # waits, unparsed, and reading with it.
                self.backlog = (view if view is not None else memoryview(data))[start:]
                self.pause_reading("backlog")
                break
        if self.work >= TURN_BUDGET:
            self.work = 0
            self.pause_reading("turn")
            self.loop.call_soon(self.resume_reading, "turn")
        if self.in_head and self.head_timer is None and not self.stop_parsing:
            limits = self.server.runtime.config.limits
            self.head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)
        if self.current is None and self.queue and not self.dispatching:
            self.dispatching = True
            self.server.soon(ClientConnection._dispatch, self)

    def _stopped(self, exc: Exception, data, start: int, size: int) -> int:
        """``feed_data`` of ``size`` bytes from ``start`` raised ``exc``: where parsing of
        ``data`` resumes (``len(data)``: it does not)."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            offset = start + (exc.args[0] if exc.args else size)
            if self.upgrading is None:
                # An Upgrade nobody asked a backend for: an ordinary request, and what
                # follows it is the next one.
                return offset
            # The head is complete; what follows belongs to the tunnel if the backend
            # agrees, or to the next request if it does not.
            self.upgrade_tail = bytes(data[offset:])
            self.stop_parsing = True
            self.pause_reading("upgrade")
        elif isinstance(exc, httptools.HttpParserCallbackError):
            if not self.stop_parsing:       # not one of our refusals: a bug in a callback
                log.exception("request parser callback failed for %s", self.peer)
                self._refuse(400, "malformed request")
        elif not self.stop_parsing:
            self._refuse(*refusals.parser_error(self.parser, exc))
        return len(data)

    def _parse_backlog(self) -> None:
        self.backlog_due = False
        backlog, self.backlog = self.backlog, None
        if backlog is None or self.closed:
            return
        # Reading stays paused while the backlog is parsed; a new pause or budget keeps
        # the rest for later again.
        self.read_pauses.discard("backlog")
        if not self.stop_parsing:
            self._parse(backlog)
        if not self.read_pauses and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        """The client half-closed. Requests already read are still answered (some clients
        send, shut down writing, then read); a request cut off midway is abandoned."""
        if self.tunnel is not None:
            if self.tunnel.transport is not None and self.tunnel.transport.can_write_eof():
                self.tunnel.transport.write_eof()
            return True
        self.unread = False
        if self.lingering is not None:
            return False                    # lingering close: the client is done too
        self.stop_parsing = True
        partial, self.parsing = self.parsing, None
        if partial is not None and not self.in_head:
            # Its head was accepted but its body will never be complete.
            partial.fail_body(400, "request body cut short")
        if self.current is None and not self.queue:
            return False                    # nothing complete to answer: close
        self.peer_done = True               # answer what was read, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        self._cancel_timers()
        if self.lingering is not None:
            self.lingering.cancel()
            self.lingering = None
        # The parser holds this protocol's bound callbacks: a reference cycle that only the
        # garbage collector would free. Nothing is parsed after connection_lost, so break it
        # and let the connection go at once.
        self.parser = None
        self.backlog = None
        self.early = None
        if self.tunnel is not None:
            self.tunnel.close()
            if self.current is not None:
                self.current.end_tunnel()
        current, self.current = self.current, None
        if current is not None:
            forward.abort(current)

    def pause_writing(self) -> None:
        up = self._upstream()
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        up = self._upstream()
        if up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()

    def _upstream(self) -> UpstreamConnection | None:
        """The backend connection whose bytes are written to this client."""
        if self.tunnel is not None:
            return self.tunnel
        return self.current.upstream if self.current is not None else None

    # ---- read flow control (several independent reasons can pause reading) ----------------

    def pause_reading(self, reason: str) -> None:
        if not self.read_pauses and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self.read_pauses.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason in self.read_pauses:
            pauses = self.read_pauses
            pauses.discard(reason)
            if self.closed:
                return
            if not pauses:
                if self.transport is not None:
                    self.transport.resume_reading()
            elif len(pauses) == 1 and "backlog" in pauses and not self.backlog_due:
                # Only the backlog holds reading now: bytes already read are parsed first
                # (at the next turn), and reading resumes once they are.
                self.backlog_due = True
                self.loop.call_soon(self._parse_backlog)

    def stop_reading(self) -> None:
        """A request was refused: nothing after it is parsed, and reading stops for good."""
        self.stop_parsing = True
        self.unread = True                  # what the client sends next is not read: linger
        self.pause_reading("refused")

    # ---- httptools request callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Exchange(self)
        self.url = b""
        self.limits = self.server.runtime.config.limits
        self.in_head = True
        self.idle.stop()

    def on_url(self, url: bytes) -> None:
        self.url += url                  # usually in one piece: no list, no join
        self.head_size = len(self.url)
        if self.head_size > self.limits.max_uri_length:
            self._refuse(414, "request target too long")
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.parsing
        if not self.in_head:        # trailers arrive after the head: dropped, never forwarded
            return
        headers = exchange.headers
        headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        limits = self.limits
        if self.head_size > limits.max_header_size or len(headers) > limits.max_headers:
            self._refuse(431, "request header fields too large")
            raise _StopParsing

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        exchange = self.parsing
        parser = self.parser
        version = parser.get_http_version()
        exchange.method = parser.get_method()
        exchange.target = self.url
        exchange.http10 = version == "1.0"
        exchange.keep_alive = parser.should_keep_alive()
        server = self.server
        exchange.inspect(version, server.runtime.config, server.default_host)
        if exchange.upgrade is not None and (not parser.should_upgrade() or
                                             exchange.upgrade.strip().lower() not in server.upgrades):
            exchange.upgrade = None     # not a tunnel: Upgrade is hop-by-hop, never forwarded
        self.upgrading = exchange if exchange.upgrade is not None else None
        self.queue.append(exchange)
        if len(self.queue) > MAX_PIPELINE:
            self.pause_reading("pipeline")
        if exchange.error is not None:
            # Nothing after a refused head is read: not its body, not a pipelined request.
            exchange.keep_alive = False
            self.stop_reading()
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.progress += 1
        if self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.feed(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is not None and exchange.body is not None:
            exchange.body.finish()
        self.parsing = None

    # ---- one request after another -------------------------------------------------------

    def _dispatch(self) -> None:
        self.dispatching = False
        self._next()

    def _next(self) -> None:
        """Start the queued requests in order, each once the one before it has ended."""
        if self.dispatching:
            return                          # the loop below, or a batch, picks it up
        self.dispatching = True
        try:
            while self.current is None and self.queue and not self.closed:
                exchange = self.current = self.queue.pop(0)
                if len(self.queue) <= MAX_PIPELINE:
                    self.resume_reading("pipeline")
                forward.start(exchange)
        except Exception:  # a bug must cost one connection, not the process
            log.exception("internal error while handling a request from %s", self.peer)
            self.internal_error(self.current)
        finally:
            self.dispatching = False

    @staticmethod
    def resume(exchange: Exchange) -> None:
        """``proceed`` for the server's batch (``soon``), which passes one argument."""
        exchange.conn.proceed(exchange)

    def proceed(self, exchange: Exchange) -> None:
        """Let ``exchange`` go on after an upstream read, a lost connection or a timer."""
        try:
            forward.proceed(exchange)
        except Exception:  # a bug must cost one connection, not the process
            log.exception("internal error while handling a request from %s", self.peer)
            self.internal_error(exchange)

    def finished(self, exchange: Exchange, keep: bool) -> None:
        """``exchange`` has been answered; ``keep``: the connection may serve another."""
        if self.current is exchange:
            self.current = None
        body = exchange.body
        if body is not None and not body.done:
            self.unread = True              # answered before its body ended (it closes)
        if not keep or self.closed:
            self.close()
            return
        if exchange.upgrade is not None and self.tunnel is None:
            self._upgrade_declined()        # what followed its head is the next request
        if self.queue:
            self._next()
        elif self.peer_done:
            self.close()                    # the client half-closed: all it sent is answered
        else:
            self._arm_idle_timer()

    def internal_error(self, exchange: Exchange | None) -> None:
        """A bug while handling ``exchange`` (logged by the caller): the client gets a 500
        and the connection closes, when nothing of the response has gone out yet; else the
        connection is cut, so a half-sent response is never taken for a whole one."""
        transport = self.transport
        if transport is None:
            return
        if exchange is None or exchange.response_begun or transport.is_closing():
            transport.abort()
            return
        exchange.response_begun = True
        transport.write(framing.error_response(500, "internal error", keep_alive=False,
                                               request_id=exchange.request_id))
        self.unread = True                  # what the client still sends is not read
        self.close()

    def close(self) -> None:
        """Close after what is buffered has been written; lingering when the client may
        still be sending."""
        self._cancel_timers()
        transport = self.transport
        if transport is not None and not transport.is_closing() and self.lingering is None:
            if self.unread and not self.closed and not self.handshaking:
                self._linger(transport)
            else:
                transport.close()
        up = self.current.upstream if self.current is not None else None
        if up is not None:
            up.close()

    def _linger(self, transport: asyncio.Transport, time: float = LINGER_TIME) -> None:
        """Say we are done (FIN after what is buffered), read and discard until the client
        closes, for at most ``time``, less if it goes quiet for LINGER_IDLE."""
        self.stop_parsing = True
        self.backlog = None
        if transport.can_write_eof():
            transport.write_eof()
        self.read_pauses.clear()
        transport.resume_reading()
        self.linger_until = self.loop.time() + time
        self.lingering = self.loop.call_later(min(LINGER_IDLE, time), self._linger_check,
                                              self.progress)

    def _linger_check(self, seen: int) -> None:
        transport = self.transport
        if transport is None or self.closed:
            return
        now = self.loop.time()
        if self.progress == seen or now >= self.linger_until:
            transport.close()
            return
        self.lingering = self.loop.call_later(min(LINGER_IDLE, self.linger_until - now),
                                              self._linger_check, self.progress)

    def last_before_close(self) -> bool:
        """Draining (or the client half-closed): every request already read is answered; the
        last says Connection: close."""
        return (self.draining or self.peer_done) and not self.queue

    def start_drain(self) -> None:
        """SIGTERM: finish the request in progress, then close. Between requests, a request
        may already be on its way: wait DRAIN_GRACE for it (it gets Connection: close)."""
        self.draining = True
        if self.handshaking:
            self.close()
        elif self.current is None and not self.queue and self.parsing is None:
            self.idle.start(DRAIN_GRACE, ClientConnection.close, self)

    def start_tunnel(self, up: UpstreamConnection) -> None:
        """The backend accepted an Upgrade: from now on bytes are copied both ways."""
        self.tunnel = up
        if self.upgrade_tail and up.transport is not None:
            up.transport.write(self.upgrade_tail)
        self.upgrade_tail = b""
        self.resume_reading("upgrade")

    def _upgrade_declined(self) -> None:
        """The backend answered an Upgrade with a plain response: carry on as HTTP/1.1 with
        what followed the request's head."""
        tail, self.upgrade_tail = self.upgrade_tail, b""
        self.upgrading = None
        self.stop_parsing = False
        if tail:
            self._parse(tail)
        self.resume_reading("upgrade")

    def _arm_idle_timer(self) -> None:
        if not self.idle.active and not self.closed:
            timeout = DRAIN_GRACE if self.draining else \
                self.server.runtime.config.limits.keepalive_timeout
            self.idle.start(timeout, ClientConnection.close, self)

    def _cancel_timers(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        self.idle.cancel()
        self.response_deadline.cancel()

    def _head_timeout(self) -> None:
        self.head_timer = None
        self._refuse(408, "request head not received in time")
        if self.current is None:
            self._next()

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer it in order, then close; read no more."""
        self.stop_reading()
        exchange, self.parsing = self.parsing, None
        if exchange is not None and not self.in_head:
            # The head was accepted and queued; its body turned out malformed.
            exchange.fail_body(status, message)
            return
        exchange = exchange or Exchange(self)
        exchange.error = (status, message)
        exchange.keep_alive = False
        self.queue.append(exchange)
