"""Connections to backends: the response-parsing protocol and per-backend idle pools.

An ``UpstreamConnection`` serves one ``Exchange`` at a time and reports parser events
straight to it (``response_head``, ``response_body``...), so response bytes are written to
the client inside the callback, without a hop through a task. After each read (later in the
same turn of the loop, ``ProxyServer.soon``) and when the connection is lost it lets the
exchange's journey go on (``ClientConnection.proceed``): out of the parser, so an attempt
that ended can give this connection back, or try another. A connection goes back to its
backend's idle pool only after a clean, complete exchange; one that saw an error, a timeout,
stray bytes or an incomplete message is closed, never reused.

A response head is held to ``[limits] max_response_header_size`` and ``max_response_headers``
(like a request head): past either, the exchange fails as an invalid response (502) and the
connection is closed, so a backend sending headers without end costs a bounded amount of
memory. Bytes are counted as they arrive, not only as parsed headers, because the parser
holds a header line that has not ended yet.

The idle pools belong to the proxy's ``Runtime`` (one per backend, carried over a reload
while the backend keeps its address).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import ssl as ssl_module
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lbctl.balancing.backend import Backend
from lbctl.proxy.framing import CODING, CONNECTION, HOP, LENGTH, NAMES, UPGRADE, name_info
from lbctl.config.tls import handshake_error

if TYPE_CHECKING:
    from lbctl.proxy.exchange import Exchange

log = logging.getLogger("lbctl.proxy")
# Distinct connect-failure causes logged per backend between two successful connects.
MAX_LOGGED_CAUSES = 8


class UpstreamError(Exception):
    """The backend failed an exchange. ``before_response``: no response byte was received."""

    def __init__(self, reason: str, before_response: bool, status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.before_response = before_response
        self.status = status              # a 5xx head held back for a retry (retry_on "5xx")


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a backend, speaking HTTP/1.1 with keep-alive."""

    __slots__ = (
        "idle_pool", "transport", "exchange", "parser", "closed", "idle_since",
        "response_started", "pieces", "length", "codings", "connection", "upgrade", "reason",
        "interim", "complete", "tunnel",
        "head_request", "head_open", "head_bytes", "header_bytes", "header_count",
        "max_head", "max_headers",
    )

    def __init__(self, idle_pool: "IdlePool") -> None:
        self.idle_pool = idle_pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.response_started = False     # any byte of a response received in this exchange
        # The response head, collected as it is parsed: the headers that cross to the client
        # (name, ": ", value, CRLF pieces), and those the proxy reads instead of relaying.
        self.pieces: list[bytes] = []
        self.length = -1                  # Content-Length (-1: none)
        self.codings: list[bytes] | None = None   # Transfer-Encoding values
        self.connection: list[bytes] | None = None   # Connection values
        self.upgrade: bytes | None = None
        self.reason = b""
        self.interim = False              # inside a 1xx response (not forwarded)
        self.complete = False
        self.tunnel = False
        self.head_request = False
        self.head_open = False            # a response head is still arriving
        self.head_bytes = 0               # bytes received while it was
        self.header_bytes = 0             # parsed header lines, as the request side counts
        self.header_count = 0
        self.max_head = 0                 # [limits] max_response_header_size, per exchange
        self.max_headers = 0

    # ---- exchange lifecycle (called by forward.py) -----------------------------------

    def attach(self, exchange: Exchange, head_request: bool) -> None:
        self.exchange = exchange
        self.response_started = False
        self.pieces = []
        self.length = -1
        self.codings = self.connection = self.upgrade = None
        self.reason = b""
        self.interim = False
        self.complete = False
        self.head_request = head_request
        limits = exchange.conn.server.runtime.config.limits
        self.max_head, self.max_headers = limits.max_response_header_size, \
            limits.max_response_headers
        self.head_open = True
        self.head_bytes = self.header_bytes = self.header_count = 0

    def detach(self) -> None:
        self.exchange = None

    def close(self) -> None:
        """Abort: an upstream connection is closed only when it must not be reused."""
        if not self.closed:
            self.closed = True
            self.exchange = None
            if self.transport is not None:
                self.transport.abort()

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes on an idle connection: the backend is confused; never reuse it.
            self.close()
            return
        if self.tunnel:
            exchange.transport.write(data)
            return
        self.response_started = True
        # What the parser callbacks write to the client goes out as one write, after parsing.
        exchange.hold_writes()
        try:
            if self.head_open:
                self.head_bytes += len(data)
            self.parser.feed_data(data)
            if self.head_open and self.head_bytes > self.max_head:
                # Still no end of head: a line without end, or more than the limit in all.
                self._fail_head()
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.exchange is not None:
                self.exchange.upstream_upgraded(data[offset:])
        except httptools.HttpParserCallbackError:
            # Raised by our own callback (the client went away while writing): stop here.
            self.close()
        except httptools.HttpParserError as exc:
            if self.exchange is not None:
                self.exchange.upstream_failed(UpstreamError(f"invalid response: {exc}", False))
            self.close()
        finally:
            try:
                exchange.flush_writes()
            except Exception:
                # The client went away: the same as a write failing inside a callback.
                self.close()
        conn = exchange.conn
        conn.server.soon(conn.resume, exchange)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None                # a reference cycle through its callbacks (see client.py)
        self.idle_pool.discard(self)
        exchange = self.exchange
        self.exchange = None
        if exchange is None:
            return
        if self.tunnel:
            exchange.end_tunnel()
            exchange.conn.close()
        elif not self.complete:
            exchange.upstream_lost(self)
        exchange.conn.proceed(exchange)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.conn.pause_reading("upstream")

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.conn.resume_reading("upstream")

    # ---- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response to one request (bytes beyond the declared length, a body
            # after 204/304): never relay it, never reuse this connection.
            raise _StopParsing

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.complete:
            return
        self.header_count += 1
        self.header_bytes += len(name) + len(value) + 4
        if self.header_count > self.max_headers or self.header_bytes > self.max_head:
            self._fail_head()
            raise _StopParsing
        info = NAMES.get(name) or name_info(name)
        kind = info[1]
        if kind < HOP:                    # crosses to the client as it is
            self.pieces += (name, b": ", value, b"\r\n")
        elif kind == LENGTH:
            self.length = int(value)      # llhttp has validated it
        elif kind == CODING:
            if self.codings is None:
                self.codings = []
            self.codings.append(value)
        elif kind == CONNECTION:
            if self.connection is None:
                self.connection = []
            self.connection.append(value)
        elif kind == UPGRADE:
            if self.upgrade is None:
                self.upgrade = value

    def _fail_head(self) -> None:
        """Over a response-head limit: a 502 for the client, and this connection closed."""
        self.head_open = False
        if self.exchange is not None:
            self.exchange.upstream_failed(UpstreamError(
                f"invalid response: head over the limits (max_response_header_size "
                f"{self.max_head}, max_response_headers {self.max_headers})", False))
        self.close()

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim responses (100 Continue, 103) are not forwarded: the proxy answers
            # Expect itself and the final response follows on this connection. Their bytes
            # count toward the head limit, so endless 103s are bounded too.
            self.interim = True
            self.pieces = []
            self.length = -1
            self.codings = self.connection = self.upgrade = None
            self.header_count = 0
            return
        self.head_open = False
        if self.exchange is not None and not self.exchange.response_head(
                self, status, self.reason):
            raise _StopParsing
        if self.head_request:
            # httptools cannot be told a response answers HEAD, so it would wait for the
            # declared body. The exchange ends at the head, and the connection is not reused.
            self.complete = True
            if self.exchange is not None:
                self.exchange.response_complete(self, reusable=False)
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        if self.exchange is not None:
            self.exchange.response_complete(self, reusable=self.parser.should_keep_alive())


def connect_error(exc: BaseException) -> str:
    """A failed connect in an operator's words: the TLS verdict, refused, timed out..."""
    tls = handshake_error(exc)
    if tls is not None:
        return tls
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return "timed out (TCP connect or TLS handshake)"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


class _StopParsing(Exception):
    """Ends parsing from inside a callback (surfaces as HttpParserCallbackError)."""


class IdlePool:
    """Idle keep-alive connections to one backend, most recently used first.

    New connections are made here too, so this is where a failed connect or TLS handshake
    is explained: ``last_error`` holds the cause until a connect succeeds (``/stats`` shows
    it), and each cause is logged once per backend until then, not once per request.
    """

    def __init__(self, backend: Backend, *, max_idle: int, idle_timeout: float,
                 ssl: ssl_module.SSLContext | None = None, server_name: str | None = None,
                 pool: str = "") -> None:
        self.backend = backend
        self.pool = pool                  # its name, for the log
        self.address = (backend.scheme, backend.host, backend.port)   # connections go here
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.ssl = ssl
        self.server_name = server_name      # https: SNI and the name verified; None = host
        self.idle: deque[UpstreamConnection] = deque()
        self.last_error: str | None = None
        self._logged: set[str] = set()

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        _, host, port = self.address
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: UpstreamConnection(self), host, port,
                                       ssl=self.ssl, server_hostname=self.server_name),
                timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self._failed(exc)
            raise
        if self.last_error is not None:
            self.last_error = None
            self._logged.clear()
        return conn

    def _failed(self, exc: BaseException) -> None:
        """A connect failed: remember why, and log each cause once until a connect succeeds.
        Only the failure path pays for this."""
        reason = connect_error(exc)
        self.last_error = reason
        if reason in self._logged or len(self._logged) >= MAX_LOGGED_CAUSES:
            return
        self._logged.add(reason)
        b = self.backend
        log.warning("pool %s: backend %s: cannot connect: %s", self.pool, b.name, reason,
                    extra={"event": "backend_error", "pool": self.pool, "backend": b.name,
                           "reason": reason})

    def __len__(self) -> int:
        """Idle connections held now."""
        return len(self.idle)

    def take(self, now: float) -> UpstreamConnection | None:
        """A live idle connection, or None. Expired ones are closed on the way."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed or now - conn.idle_since > self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    def give_back(self, conn: UpstreamConnection, now: float) -> None:
        conn.detach()
        if conn.closed or len(self.idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        self.idle.append(conn)

    def discard(self, conn: UpstreamConnection) -> None:
        try:
            self.idle.remove(conn)
        except ValueError:
            pass

    def sweep(self, now: float) -> None:
        """Close connections idle longer than the timeout (oldest are at the left)."""
        idle = self.idle
        while idle and now - idle[0].idle_since > self.idle_timeout:
            idle.popleft().close()

    def close_all(self) -> None:
        while self.idle:
            self.idle.pop().close()
