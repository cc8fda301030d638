"""Connections to backends: the response-parsing protocol and per-backend idle pools.

An ``UpstreamConnection`` serves one exchange at a time for the client connection that
holds it and reports parser events straight to that client (``response_head``,
``response_body``...), so response bytes are written to the client inside the callback,
without a hop through a task. A connection goes back to its backend's idle pool only after
a clean, complete exchange; one that saw an error, a timeout, stray bytes or an incomplete
message is closed, never reused.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lbctl.balancing.backend import Backend

if TYPE_CHECKING:
    from lbctl.proxy.client import ClientConnection


class UpstreamError(Exception):
    """The backend failed an exchange. ``before_response``: no response byte was received."""

    def __init__(self, reason: str, before_response: bool, status: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.before_response = before_response
        self.status = status              # a 5xx head held back for a retry (retry_on "5xx")


class UpstreamConnection(asyncio.Protocol):
    """One TCP connection to a backend, speaking HTTP/1.1 with keep-alive."""

    def __init__(self, idle_pool: "IdlePool") -> None:
        self.idle_pool = idle_pool
        self.transport: asyncio.Transport | None = None
        self.client: ClientConnection | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.response_started = False     # any byte of a response received in this exchange
        self.headers: list[tuple[bytes, bytes]] = []
        self.reason = b""
        self.interim = False              # inside a 1xx response (not forwarded)
        self.complete = False
        self.tunnel = False
        self.head_request = False
        self.exchanges = 0

    # ---- exchange lifecycle (called by the client side) --------------------------------

    def attach(self, client: ClientConnection, head_request: bool) -> None:
        self.client = client
        self.response_started = False
        self.headers = []
        self.reason = b""
        self.interim = False
        self.complete = False
        self.head_request = head_request
        self.exchanges += 1

    def detach(self) -> None:
        self.client = None

    def close(self) -> None:
        """Abort: an upstream connection is closed only when it must not be reused."""
        if not self.closed:
            self.closed = True
            self.client = None
            if self.transport is not None:
                self.transport.abort()

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            # Bytes on an idle connection: the backend is confused; never reuse it.
            self.close()
            return
        if self.tunnel:
            client.tunnel_from_upstream(data)
            return
        self.response_started = True
        # What the parser callbacks write to the client goes out as one write, after parsing.
        client.hold_writes()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            if self.client is not None:
                self.client.upstream_upgraded(data[offset:])
        except httptools.HttpParserCallbackError:
            # Raised by our own callback (the client went away while writing): stop here.
            self.close()
        except httptools.HttpParserError as exc:
            if self.client is not None:
                self.client.upstream_failed(UpstreamError(f"invalid response: {exc}", False))
            self.close()
        finally:
            try:
                client.flush_writes()
            except Exception:
                # The client went away: the same as a write failing inside a callback.
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.parser = None                # a reference cycle through its callbacks (client.py)
        self.idle_pool.discard(self)
        client = self.client
        self.client = None
        if client is None:
            return
        if self.tunnel:
            client.end_tunnel()
            client.close()
        elif not self.complete:
            client.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_reading("upstream")

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.resume_reading("upstream")

    # ---- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response to one request (bytes beyond the declared length, a body
            # after 204/304): never relay it, never reuse this connection.
            raise _StopParsing

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.complete:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # Interim responses (100 Continue, 103) are not forwarded: the proxy answers
            # Expect itself and the final response follows on this connection.
            self.interim = True
            self.headers = []
            return
        if self.client is not None and not self.client.response_head(
                self, status, self.reason, self.headers, self.parser.should_keep_alive()):
            raise _StopParsing
        if self.head_request:
            # httptools cannot be told a response answers HEAD, so it would wait for the
            # declared body. The exchange ends at the head, and the connection is not reused.
            self.complete = True
            if self.client is not None:
                self.client.response_complete(self, reusable=False)
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        if self.client is not None:
            self.client.response_body(body)

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.complete = True
        if self.client is not None:
            self.client.response_complete(self, reusable=self.parser.should_keep_alive())


class _StopParsing(Exception):
    """Ends parsing from inside a callback (surfaces as HttpParserCallbackError)."""


class IdlePool:
    """Idle keep-alive connections to one backend, most recently used first."""

    def __init__(self, backend: Backend, *, max_idle: int, idle_timeout: float,
                 ssl: ssl_module.SSLContext | None = None, server_name: str | None = None) -> None:
        self.backend = backend
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self.ssl = ssl
        self.server_name = server_name      # https: SNI and the name verified; None = host
        self.idle: deque[UpstreamConnection] = deque()

    async def connect(self, timeout: float) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        b = self.backend
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamConnection(self), b.host, b.port, ssl=self.ssl,
                                   server_hostname=self.server_name),
            timeout)
        return conn

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
