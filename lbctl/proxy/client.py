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

After a 101 Switching Protocols the connection becomes a tunnel: bytes are copied both ways
until either side closes.
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
    from lbctl.proxy.server import ProxyServer
    from lbctl.proxy.upstream import UpstreamConnection

log = logging.getLogger("lbctl.proxy")

MAX_PIPELINE = 16              # queued pipelined requests before reading pauses


class _StopParsing(Exception):
    """Raised inside a parser callback to stop at a refused request (no byte after it is read)."""


class ClientConnection(asyncio.Protocol):
    """An accepted client connection: the parser, the queue of exchanges, flow control and
    timers. Slotted: thousands may sit idle, each costing only what it holds."""

    __slots__ = (
        "server", "loop", "transport", "peer", "peer_bytes", "parser", "parsing", "url", "in_head",
        "head_size", "stop_parsing", "upgrade_tail", "queue", "current", "dispatching",
        "read_pauses", "write_paused", "progress", "tunnel", "closed", "draining", "idle",
        "response_deadline", "head_timer", "limits",
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
        self.upgrade_tail = b""           # bytes after an Upgrade request's head, for the tunnel
        # Complete heads waiting their turn: a list (at most MAX_PIPELINE + 1 long), lighter
        # than a deque for the many connections that never pipeline.
        self.queue: list[Exchange] = []
        self.current: Exchange | None = None          # the one being answered
        self.dispatching = False          # in _next, or due in the server's batch (soon)
        self.read_pauses: set[str] = set()
        self.write_paused = False
        self.progress = 0                 # body bytes moved either way, for idle watchdogs
        self.tunnel: UpstreamConnection | None = None
        self.closed = False
        self.draining = False
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
        server.connections.add(self)
        counts = server.per_client
        open_here = counts[self.peer] = counts.get(self.peer, 0) + 1
        limits = server.runtime.config.limits
        per_client = limits.max_connections_per_client
        if len(server.connections) > limits.max_connections or \
                (per_client and open_here > per_client):
            # Over a cap: a short 503 and close, so other clients keep being served.
            self.stop_parsing = True
            transport.write(framing.error_response(503, "too many connections",
                                                   keep_alive=False,
                                                   extra=((b"Retry-After", b"1"),)))
            transport.close()
            return
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            if self.tunnel.transport is not None:
                self.tunnel.transport.write(data)
            return
        if self.stop_parsing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not self.stop_parsing:       # not one of our refusals: a bug in a callback
                log.exception("request parser callback failed for %s", self.peer)
                self._refuse(400, "malformed request")
        except httptools.HttpParserUpgrade as exc:
            # The head is complete; what follows belongs to the tunnel, if the backend agrees.
            offset = exc.args[0] if exc.args else len(data)
            self.upgrade_tail = data[offset:]
            self.stop_parsing = True
            self.pause_reading("upgrade")
        except httptools.HttpParserError as exc:
            if not self.stop_parsing:
                self._refuse(*refusals.parser_error(self.parser, exc))
        if self.in_head and self.head_timer is None:
            # A head that began in this read and is still incomplete: its deadline counts
            # from now, the loop time of its first byte. A head that arrived whole (the usual
            # case) never needs a timer at all.
            limits = self.server.runtime.config.limits
            self.head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)
        if self.current is None and self.queue and not self.dispatching:
            self.dispatching = True
            self.server.soon(ClientConnection._dispatch, self)

    def eof_received(self) -> bool:
        """The client half-closed. Requests already read are still answered (some clients
        send, shut down writing, then read); a request cut off midway is abandoned."""
        if self.tunnel is not None:
            if self.tunnel.transport is not None and self.tunnel.transport.can_write_eof():
                self.tunnel.transport.write_eof()
            return True
        self.stop_parsing = True
        partial, self.parsing = self.parsing, None
        if partial is not None and not self.in_head:
            # Its head was accepted but its body will never be complete.
            partial.fail_body(400, "request body cut short")
        if self.current is None and not self.queue:
            return False                    # nothing complete to answer: close
        self.draining = True                # answer what was read, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.forget(self)
        self._cancel_timers()
        # The parser holds this protocol's bound callbacks: a reference cycle that only the
        # garbage collector would free. Nothing is parsed after connection_lost, so break it
        # and let the connection go as soon as its handler task ends.
        self.parser = None
        if self.tunnel is not None:
            self.tunnel.close()
            if self.current is not None:
                self.current.end_tunnel()
        current, self.current = self.current, None
        if current is not None:
            forward.abort(current)

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self._upstream()
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
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
            self.read_pauses.discard(reason)
            if not self.read_pauses and self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def stop_reading(self) -> None:
        """A request was refused: nothing after it is parsed, and reading stops for good."""
        self.stop_parsing = True
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
        if exchange.upgrade is not None and not parser.should_upgrade():
            exchange.upgrade = None
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
            self._fail()
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
            self._fail()

    def finished(self, exchange: Exchange, keep: bool) -> None:
        """``exchange`` has been answered; ``keep``: the connection may serve another."""
        if self.current is exchange:
            self.current = None
        if not keep or self.closed or (self.draining and not self.queue):
            self.close()
        elif self.queue:
            self._next()
        else:
            self._arm_idle_timer()

    def _fail(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close after what is buffered has been written."""
        self._cancel_timers()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        up = self.current.upstream if self.current is not None else None
        if up is not None:
            up.close()

    def last_before_close(self) -> bool:
        """Draining: every request already read is answered; the last says Connection: close."""
        return self.draining and not self.queue

    def start_drain(self) -> None:
        """SIGTERM: finish the request in progress, then close; close at once if idle."""
        self.draining = True
        if self.current is None and not self.queue and self.parsing is None:
            self.close()

    def start_tunnel(self, up: UpstreamConnection) -> None:
        """The backend accepted an Upgrade: from now on bytes are copied both ways."""
        self.tunnel = up
        if self.upgrade_tail and up.transport is not None:
            up.transport.write(self.upgrade_tail)
        self.upgrade_tail = b""
        self.resume_reading("upgrade")

    def _arm_idle_timer(self) -> None:
        if not self.idle.active and not self.closed:
            self.idle.start(self.server.runtime.config.limits.keepalive_timeout,
                            ClientConnection.close, self)

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
