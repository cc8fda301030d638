"""The client side of the proxy: one ``ClientConnection`` per accepted TCP connection.

httptools parses requests in ``data_received``; complete heads are queued in order (so
pipelined requests are answered in order) and a single handler task per connection takes
them one at a time (``forward.handle``). Body bytes stream to the current upstream from
inside the parser callback; they are buffered only until an upstream connection exists, or
while a pipelined request waits its turn, and reading pauses when that buffer fills.

Response bytes arrive through ``response_head``/``response_body``/``response_complete``,
called by the upstream connection's parser, and are written to the client at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING

import httptools

from lbctl.proxy import checks, framing
from lbctl.proxy.deadline import Deadline
from lbctl.proxy.paths import PathRefused, canonical_path
from lbctl.proxy.upstream import UpstreamConnection, UpstreamError

if TYPE_CHECKING:
    from lbctl.proxy.server import ProxyServer

log = logging.getLogger("lbctl.proxy")

BUFFER_HIGH = 256 * 1024       # buffered request body before reading pauses
REPLAY_LIMIT = 64 * 1024       # bodies up to this size are kept so an idempotent retry can resend them
MAX_PIPELINE = 16              # queued pipelined requests before reading pauses


class _StopParsing(Exception):
    """Raised inside a parser callback to stop at a refused request (no byte after it is read)."""


class ClientError(Exception):
    """The client broke a rule mid-exchange (body too large, upload stalled)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Body:
    """A request body arriving from the client. Framing toward the backend is re-derived."""

    __slots__ = ("conn", "framing", "length", "chunks", "buffered", "done", "sink", "replay",
                 "replay_size", "received", "sent_any", "on_done")

    def __init__(self, conn: "ClientConnection", framing_: str, length: int) -> None:
        self.conn = conn
        self.framing = framing_           # "length" | "chunked"
        self.length = length
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.done = False
        self.sink: asyncio.Transport | None = None
        self.replay: list[bytes] | None = []
        self.replay_size = 0
        self.received = 0
        self.sent_any = False
        self.on_done = None               # called once the whole body has been received

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        limit = self.conn.server.runtime.config.limits.max_body_size
        if limit and self.received > limit:
            self.conn.body_too_large(self)
            raise _StopParsing
        if self.replay is not None:
            if self.replay_size + len(data) <= REPLAY_LIMIT:
                self.replay.append(data)
                self.replay_size += len(data)
            else:
                self.replay = None        # too large to keep: not replayable once sent
        if self.sink is not None:
            self._write(data)
        else:
            self.chunks.append(data)
            self.buffered += len(data)
            if self.buffered > BUFFER_HIGH:
                self.conn.pause_reading("body")

    def finish(self) -> None:
        self.done = True
        if self.sink is not None and self.framing == "chunked":
            self.sink.write(b"0\r\n\r\n")
        if self.on_done is not None:
            self.on_done()

    def replayable(self) -> bool:
        return not self.sent_any or self.replay is not None

    def attach(self, transport: asyncio.Transport) -> None:
        """Start (or restart, for a retry) sending the body to an upstream connection."""
        pending = self.chunks if not self.sent_any else (self.replay or [])
        self.chunks = []
        self.buffered = 0
        self.sink = transport
        self.sent_any = True
        for data in pending:
            self._write(data)
        if self.done and self.framing == "chunked":
            transport.write(b"0\r\n\r\n")
        self.conn.resume_reading("body")

    def detach(self) -> None:
        self.sink = None

    def _write(self, data: bytes) -> None:
        if self.framing == "chunked":
            self.sink.write(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.sink.write(data)


class Request:
    """One parsed request head, plus its body when it has one."""

    __slots__ = ("method", "target", "path", "http10", "headers", "keep_alive", "host",
                 "body", "upgrade", "expect_continue", "error", "admitted")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        self.path = "/"
        self.http10 = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.host = b""
        self.body: Body | None = None
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.error: tuple[int, str] | None = None   # set when the request must be refused
        self.admitted = None      # lbctl.gateway Admission: resolved client, header rewrites

    def header(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None


class ClientConnection(asyncio.Protocol):
    """An accepted client connection: parsing, the ordered handler, and response writing."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.parser = httptools.HttpRequestParser(self)
        self.parsing: Request | None = None
        self.url_parts: list[bytes] = []
        self.queue: deque[Request] = deque()
        self.waiter: asyncio.Future | None = None
        self.task: asyncio.Task | None = None
        self.read_pauses: set[str] = set()
        self.write_paused = False
        self.closed = False
        self.draining = False
        self.stop_parsing = False
        self.idle = Deadline(self.loop)               # keep-alive: waiting for the next request
        self.response_deadline = Deadline(self.loop)  # set by forward.py for each exchange
        self.head_timer: asyncio.TimerHandle | None = None
        # The exchange in progress (one at a time per client connection).
        self.current: Request | None = None
        self.upstream: UpstreamConnection | None = None
        self.head_waiter: asyncio.Future | None = None
        self.done_waiter: asyncio.Future | None = None
        self.response_begun = False
        self.resp_framing = "none"
        self.resp_keep = True
        self.up_eof = False               # the backend's body ends when it closes
        self.up_reusable = False
        self.status = 0
        self.upgrade_tail = b""
        self.tunnel: UpstreamConnection | None = None
        self.tunnel_done: asyncio.Future | None = None
        self.retry_5xx = None             # callable: may this attempt's 5xx be retried?
        self.in_head = False
        self.head_size = 0                # bytes of the request head so far (431 past the limit)
        self.progress = 0                 # bytes moved in either direction, for idle watchdogs
        self.held: list[bytes] | None = None   # response bytes held while one upstream read is parsed
        self.sent_bytes = 0               # response body bytes relayed (for accounting)
        self.decision: bytes | None = None   # X-LB-Decision for this response, when explained

    # ---- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"
        server = self.server
        server.connections.add(self)
        server.per_client[self.peer] += 1
        limits = server.runtime.config.limits
        per_client = limits.max_connections_per_client
        if len(server.connections) > limits.max_connections or \
                (per_client and server.per_client[self.peer] > per_client):
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
                self._refuse(*checks.parser_error(self.parser, exc))
        if self.in_head and self.head_timer is None:
            # A head that began in this read and is still incomplete: its deadline counts
            # from now, the loop time of its first byte. A head that arrived whole (the usual
            # case) never needs a timer at all.
            limits = self.server.runtime.config.limits
            self.head_timer = self.loop.call_later(limits.header_timeout, self._head_timeout)

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
            self._fail_body(partial, 400, "request body cut short")
        if self.current is None and not self.queue:
            return False                    # nothing complete to answer: close
        self.draining = True                # answer what was read, then close
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        server = self.server
        if self in server.connections:
            server.connections.discard(self)
            server.per_client[self.peer] -= 1
            if server.per_client[self.peer] <= 0:
                del server.per_client[self.peer]
        self._cancel_timers()
        # The parser holds this protocol's bound callbacks: a reference cycle that only the
        # garbage collector would free. Nothing is parsed after connection_lost, so break it
        # and let the connection go as soon as its handler task ends.
        self.parser = None
        if self.tunnel is not None:
            self.tunnel.close()
            self.end_tunnel()
        if self.task is not None and not self.task.done():
            self.task.cancel()
        elif self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True
        up = self.tunnel or self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        up = self.tunnel or self.upstream
        if up is not None and up.transport is not None and not up.closed:
            up.transport.resume_reading()

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

    # ---- httptools request callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        self.parsing = Request()
        self.url_parts = []
        self.in_head = True
        self.idle.stop()

    def on_url(self, url: bytes) -> None:
        self.url_parts.append(url)
        self.head_size = sum(map(len, self.url_parts))
        if self.head_size > self.server.runtime.config.limits.max_uri_length:
            self._refuse(414, "request target too long")
            raise _StopParsing

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.parsing
        if not self.in_head:        # trailers arrive after the head: dropped, never forwarded
            return
        req.headers.append((name, value))
        self.head_size += len(name) + len(value) + 4
        limits = self.server.runtime.config.limits
        if self.head_size > limits.max_header_size or len(req.headers) > limits.max_headers:
            self._refuse(431, "request header fields too large")
            raise _StopParsing

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        req = self.parsing
        parser = self.parser
        req.method = parser.get_method()
        req.target = b"".join(self.url_parts)
        req.http10 = parser.get_http_version() == "1.0"
        req.keep_alive = parser.should_keep_alive()
        self._inspect(req, parser.get_http_version())
        self.queue.append(req)
        if len(self.queue) > MAX_PIPELINE:
            self.pause_reading("pipeline")
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self.task is None:
            self.task = self.loop.create_task(self._run())
        if req.error is not None:
            # Nothing after a refused head is read: not its body, not a pipelined request.
            req.keep_alive = False
            self.stop_parsing = True
            self.pause_reading("refused")
            raise _StopParsing

    def on_body(self, body: bytes) -> None:
        self.progress += 1
        if self.parsing is not None and self.parsing.body is not None:
            self.parsing.body.feed(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        if req is not None and req.body is not None:
            req.body.finish()
        self.parsing = None

    def _inspect(self, req: Request, version: str) -> None:
        """Check the head and derive what the proxy needs: host, canonical path, body framing."""
        req.headers = checks.drop_underscored(req.headers)
        problem = checks.request_problem(req.method, version, req.target, req.headers)
        if problem is not None:
            req.error = problem
            return
        content_length = None
        chunked = False
        for name, value in req.headers:
            lower = name.lower()
            if lower == b"host":
                req.host = value.strip()
            elif lower == b"content-length":
                content_length = int(value)      # llhttp has validated it
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"expect" and value.lower() == b"100-continue":
                req.expect_continue = True
            elif lower == b"upgrade":
                req.upgrade = value
        if not req.host:
            req.host = self.server.default_host  # HTTP/1.0 without Host
        target = req.target
        if target.startswith((b"http://", b"https://")):
            # absolute-form: route and forward in origin-form (checks matched it to Host)
            target = checks.split_absolute(target)[1]
        if target != b"*":
            q = target.find(b"?")
            raw_path = (target[:q] if q >= 0 else target).decode("latin-1")
            try:
                path = canonical_path(raw_path, self.server.runtime.config.paths)
            except PathRefused as exc:
                req.error = (400, str(exc))
                return
            req.path = path
            if path != raw_path:
                target = path.encode("latin-1") + (target[q:] if q >= 0 else b"")
        req.target = target
        max_body = self.server.runtime.config.limits.max_body_size
        if max_body and content_length is not None and content_length > max_body:
            # Refused before any 100 Continue, so the client need not send the body.
            req.error = (413, "request body too large")
            return
        if chunked:
            req.body = Body(self, "chunked", 0)
        elif content_length:
            req.body = Body(self, "length", content_length)
        if req.upgrade is not None and not self.parser.should_upgrade():
            req.upgrade = None

    def body_too_large(self, body: Body) -> None:
        """A streamed body passed ``max_body_size``: answer 413 if nothing was sent yet."""
        self.stop_parsing = True
        self.pause_reading("refused")
        for req in (self.current, *self.queue):
            if req is not None and req.body is body:
                self._fail_body(req, 413, "request body too large")

    def _fail_body(self, req: Request, status: int, message: str) -> None:
        """A body went wrong after its head was accepted: refuse the request if nothing was
        sent for it yet, otherwise cut the connection (the response cannot be completed)."""
        req.keep_alive = False
        if req is not self.current:
            req.error = (status, message)           # still queued: answered in its turn
        elif not self.response_begun and self.head_waiter is not None \
                and not self.head_waiter.done():
            self.head_waiter.set_exception(ClientError(status, message))
        elif self.transport is not None:
            self.transport.abort()

    # ---- the handler task ----------------------------------------------------------------

    async def _run(self) -> None:
        from lbctl.proxy.forward import handle
        try:
            while not self.closed:
                if not self.queue:
                    if self.draining:
                        break
                    self._arm_idle_timer()
                    self.waiter = self.loop.create_future()
                    await self.waiter
                    self.waiter = None
                    continue
                req = self.current = self.queue.popleft()
                if len(self.queue) <= MAX_PIPELINE:
                    self.resume_reading("pipeline")
                try:
                    keep = await handle(self, req)
                finally:
                    self.current = None
                if not keep or (self.draining and not self.queue):
                    break
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug must cost one connection, not the process
            log.exception("internal error while handling a request from %s", self.peer)
        finally:
            self.task = None
            self.close()

    def close(self) -> None:
        """Close after what is buffered has been written."""
        self._cancel_timers()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.upstream is not None:
            self.upstream.close()

    def last_before_close(self) -> bool:
        """Draining: every request already read is answered; the last says Connection: close."""
        return self.draining and not self.queue

    def start_drain(self) -> None:
        """SIGTERM: finish the request in progress, then close; close at once if idle."""
        self.draining = True
        if self.current is None and not self.queue and self.parsing is None:
            self.close()

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

    def _refuse(self, status: int, message: str) -> None:
        """A request that cannot be parsed: answer it in order, then close; read no more."""
        self.stop_parsing = True
        self.pause_reading("refused")
        req, self.parsing = self.parsing, None
        if req is not None and not self.in_head:
            # The head was accepted and queued; its body turned out malformed.
            self._fail_body(req, status, message)
            return
        req = req or Request()
        req.error = (status, message)
        req.keep_alive = False
        self.queue.append(req)
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)
        elif self.task is None:
            self.task = self.loop.create_task(self._run())

    # ---- callbacks from the upstream connection --------------------------------------------

    def response_head(self, up: UpstreamConnection, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]], up_keep_alive: bool) -> bool:
        """Relay a response head; False when it was refused (the upstream stops parsing)."""
        req = self.current
        if req is None or up is not self.upstream:
            return False
        self.status = status
        if status >= 500 and self.retry_5xx is not None and self.retry_5xx():
            # retry_on "5xx": hold this answer back and try another backend instead.
            self.upstream_failed(UpstreamError(f"backend answered {status}", True, status))
            return False
        length = -1
        codings = []
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length = int(value)              # llhttp has validated it
            elif lower == b"transfer-encoding":
                codings.append(value)
        chunked = bool(codings)
        if chunked and checks.transfer_coding_problem(codings) is not None:
            # gzip-then-chunked and the like: re-framing would hand the client bytes whose
            # coding it was never told about. Nothing has been sent: 502.
            self.upstream_failed(UpstreamError("invalid response: unsupported transfer coding",
                                               False))
            return False
        upgrade = None
        if status == 101 and req.upgrade is not None:
            upgrade = next((v for n, v in headers if n.lower() == b"upgrade"), req.upgrade)
            framing_, keep = "none", True
        elif req.method == b"HEAD" or status in framing.NO_BODY_STATUSES:
            framing_ = "length" if length >= 0 and req.method == b"HEAD" else "none"
            keep = req.keep_alive
        elif length >= 0 and not chunked:
            framing_, keep = "length", req.keep_alive
        elif not req.http10:
            framing_, keep = "chunked", req.keep_alive
        else:
            framing_, keep = "close", False        # HTTP/1.0 client, length unknown
        if self.last_before_close() or (req.body is not None and not req.body.done):
            keep = False   # a body the backend did not wait for cannot be skipped safely
        self.up_eof = length < 0 and not chunked and framing_ not in ("none",) and \
            req.method != b"HEAD" and status not in framing.NO_BODY_STATUSES and upgrade is None
        self.resp_framing = "none" if req.method == b"HEAD" else framing_
        self.resp_keep = keep
        self.response_begun = True
        if req.admitted is not None and req.admitted.response_headers:
            headers = headers + req.admitted.response_headers     # RateLimit-*
        if self.decision is not None:
            headers = [*headers, (b"X-LB-Decision", self.decision)]
        self._send(framing.client_response_head(
            status, reason, headers, framing=framing_, length=max(length, 0), keep_alive=keep,
            http10=req.http10, request_id=None, upgrade=upgrade))
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        return True

    def response_body(self, data: bytes) -> None:
        self.progress += 1
        if not self.response_begun:
            return
        self.sent_bytes += len(data)
        if self.resp_framing == "chunked":
            self._send(b"%x\r\n%s\r\n" % (len(data), data))
        elif self.resp_framing != "none":
            self._send(data)

    def response_complete(self, up: UpstreamConnection, reusable: bool) -> None:
        if up is not self.upstream:
            return
        if self.resp_framing == "chunked":
            self._send(b"0\r\n\r\n")
        self.up_reusable = reusable and not self.up_eof
        waiter = self.done_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def upstream_failed(self, error: UpstreamError) -> None:
        for waiter in (self.head_waiter, self.done_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_exception(error)
                return

    def upstream_lost(self, up: UpstreamConnection) -> None:
        if up is not self.upstream:
            return
        if self.response_begun and self.up_eof:
            # A response delimited by the backend closing: this *is* its end.
            self.response_complete(up, reusable=False)
            return
        self.upstream_failed(UpstreamError(
            "backend closed the connection" if not up.response_started else "backend closed mid-response",
            before_response=not up.response_started))

    def upstream_upgraded(self, tail: bytes) -> None:
        up = self.upstream
        if up is None or self.status != 101:
            self.upstream_failed(UpstreamError("unexpected upgrade", False))
            return
        up.tunnel = True
        self.tunnel = up
        self.tunnel_done = self.loop.create_future()
        if tail:
            self._send(tail)
        if self.upgrade_tail and up.transport is not None:
            up.transport.write(self.upgrade_tail)
        self.upgrade_tail = b""
        self.resume_reading("upgrade")
        self.response_complete(up, reusable=False)

    # ---- response writes: one upstream read becomes one write to the client ---------------
    # A small response arrives in one read and would otherwise cost a send() for its head,
    # one for its body and one for a chunked terminator; on loopback each send() carries the
    # whole TCP delivery, so collecting them into one writev is the cheapest byte moved.

    def hold_writes(self) -> None:
        self.held = []

    def flush_writes(self) -> None:
        """Write what was held, in order, as one writev. Raises like ``transport.write``
        (e.g. on a transport already closed), so the caller treats it as a failed write."""
        held, self.held = self.held, None
        if held:
            if len(held) == 1:
                self.transport.write(held[0])
            else:
                self.transport.writelines(held)

    def _send(self, data: bytes) -> None:
        if self.held is not None:
            self.held.append(data)
        else:
            self.transport.write(data)

    def tunnel_from_upstream(self, data: bytes) -> None:
        self.transport.write(data)

    def end_tunnel(self) -> None:
        if self.tunnel_done is not None and not self.tunnel_done.done():
            self.tunnel_done.set_result(None)
