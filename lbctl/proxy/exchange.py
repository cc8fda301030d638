"""One request and its response: an ``Exchange`` holds everything that belongs to it.

The client connection's parser fills in the request head and streams the body (``Body``);
``forward.handle`` routes the exchange and tries backends; the upstream connection that
serves an attempt reports its response straight to the exchange (``response_head``,
``response_body``, ``response_complete``...), which writes it to the client inside the
callback, without a hop through a task. What observers record about the request (attempts,
the last backend and outcome, bytes relayed, the explained decision) is kept here too, so
the connection carries nothing that belongs to one request.

Field groups, in order: the request head (set by the parser and ``inspect``), the request's
routing results, the attempt in progress, the response as relayed, and the record.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING

from lbctl.proxy import framing, refusals
from lbctl.proxy.paths import PathRefused, canonical_path
from lbctl.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from lbctl.balancing import Backend, Outcome
    from lbctl.config.model import Config
    from lbctl.gateway.policy import Admission
    from lbctl.proxy.client import ClientConnection
    from lbctl.proxy.upstream import UpstreamConnection

BUFFER_HIGH = 256 * 1024       # buffered request body before reading pauses
REPLAY_LIMIT = 64 * 1024       # bodies up to this size are kept so an idempotent retry can resend them


class ClientError(Exception):
    """The client broke a rule mid-exchange (body too large, upload stalled)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class BodyTooLarge(Exception):
    """Raised from ``Body.feed`` once ``max_body_size`` is passed: parsing stops there."""


class Body:
    """A request body arriving from the client. Framing toward the backend is re-derived.

    Pieces parsed from one slice of a read are collected in ``pending`` and written upstream
    together by ``flush`` (the connection calls it after each slice): one write, and one
    chunk when re-chunked, however many chunks the client cut them into.

    While it streams, the backend may answer before the upload ends, and close: a write
    into that closed connection would fail and take the unread answer with it. So before
    each streamed write the proxy looks whether the backend has said something (a poll with
    no wait); if it has, the write waits until the loop has read it (``held``), and the
    client's reading pauses meanwhile. An early answer is then relayed, and the rest of the
    upload discarded (the client connection closes lingering)."""

    __slots__ = ("conn", "exchange", "framing", "length", "chunks", "buffered", "done", "sink",
                 "replay", "replay_size", "received", "sent_any", "on_done", "pending",
                 "poller", "held")

    def __init__(self, exchange: "Exchange", framing_: str, length: int) -> None:
        self.conn = exchange.conn         # flow control: reading pauses while the body waits
        self.exchange = exchange
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
        self.pending: list[bytes] = []    # parsed for the attached upstream, not written yet
        self.poller = None                # select.poll on the upstream socket, made when needed
        self.held: list[bytes] | None = None   # writes waiting until the backend is heard

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        limit = self.conn.server.runtime.config.limits.max_body_size
        if limit and self.received > limit:
            self.conn.stop_reading()
            self.exchange.fail_body(413, "request body too large")
            raise BodyTooLarge
        if self.replay is not None:
            if self.replay_size + len(data) <= REPLAY_LIMIT:
                self.replay.append(data)
                self.replay_size += len(data)
            else:
                self.replay = None        # too large to keep: not replayable once sent
        if self.sink is not None:
            self.pending.append(data)
            self.conn.unflushed = self
        else:
            self.chunks.append(data)
            self.buffered += len(data)
            if self.buffered > BUFFER_HIGH:
                self.conn.pause_reading("body")

    def flush(self) -> None:
        pending = self.pending
        if pending and self.sink is not None:
            self.pending = []
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            self._stream(b"%x\r\n%s\r\n" % (len(data), data) if self.framing == "chunked"
                         else data)

    def finish(self) -> None:
        self.done = True
        if self.sink is not None:
            self.flush()
            if self.framing == "chunked":
                self._stream(b"0\r\n\r\n")
        if self.on_done is not None:
            self.on_done()

    def replayable(self) -> bool:
        return not self.sent_any or self.replay is not None

    def attach(self, transport: asyncio.Transport) -> None:
        """Start (or restart, for a retry) sending the body to an upstream connection."""
        pending = self.chunks if not self.sent_any else (self.replay or [])
        self.chunks = []
        self.buffered = 0
        self.pending = []
        self.poller = None
        if self.held is not None:         # held for an attempt that ended: never sent now
            self.held = None
            self.conn.resume_reading("listen")
        self.sink = transport
        self.sent_any = True
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            transport.write(b"%x\r\n%s\r\n" % (len(data), data) if self.framing == "chunked"
                            else data)
        if self.done and self.framing == "chunked":
            transport.write(b"0\r\n\r\n")
        self.conn.resume_reading("body")

    def detach(self) -> None:
        self.sink = None
        self.pending = []
        self.poller = None
        if self.held is not None:
            self.held = None
            self.conn.resume_reading("listen")

    def _stream(self, framed: bytes) -> None:
        """Write while the body streams: never into a closed connection, never before an
        answer the backend has already sent is read."""
        sink = self.sink
        if sink.is_closing():
            # The backend went away (it may have answered early and closed): what is left
            # of the upload is discarded, never written to a closed connection.
            return
        if self.held is not None:
            self.held.append(framed)
        elif self._backend_spoke():
            self.held = [framed]
            self.conn.pause_reading("listen")
            # Two turns: the first may run before the loop polls the backend's socket, the
            # second runs after it (uvloop and asyncio alike).
            self.conn.loop.call_soon(self.conn.loop.call_soon, self._release, sink)
        else:
            sink.write(framed)

    def _backend_spoke(self) -> bool:
        poller = self.poller
        if poller is None:
            sock = self.sink.get_extra_info("socket")
            if sock is None:
                return False
            poller = self.poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def _release(self, sink: asyncio.Transport) -> None:
        """The backend's bytes have been read (and an early answer relayed): write what was
        held, to the same connection if it is still this body's and open."""
        held, self.held = self.held, None
        if held is None or sink is not self.sink:
            return
        self.conn.resume_reading("listen")
        if not sink.is_closing():
            sink.writelines(held) if len(held) > 1 else sink.write(held[0])


class Exchange:
    """One request on a client connection, from its first byte to the end of its response."""

    __slots__ = (
        "conn", "transport",
        # the request head
        "method", "target", "path", "http10", "headers", "keep_alive", "host", "body",
        "upgrade", "expect_continue", "error",
        # decided before the first attempt
        "request_id", "admitted", "retry_5xx",
        # the attempt in progress
        "upstream", "head_waiter", "done_waiter", "failure",
        # the response as relayed to the client
        "status", "response_begun", "relay", "response_keep", "ends_at_close", "reusable",
        "held", "tunnel_done",
        # what observers record
        "attempts", "backend", "outcome", "upstream_time", "sent", "sent_mark", "decision",
    )

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn
        self.transport = conn.transport
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
        self.request_id: bytes | None = None
        self.admitted: Admission | None = None  # the gateway's: resolved client, rewrites
        self.retry_5xx = None             # callable: may this attempt's 5xx be retried?
        self.upstream: UpstreamConnection | None = None
        self.head_waiter: asyncio.Future | None = None
        self.done_waiter: asyncio.Future | None = None
        self.failure = (502, "no backend could serve the request")   # if attempts run out
        self.status = 0                   # the status the client got (0: none yet)
        self.response_begun = False       # the response head went to the client
        self.relay = "none"               # how body bytes are relayed (framing.response_framing)
        self.response_keep = True         # the client connection stays open after it
        self.ends_at_close = False        # the backend's body ends when it closes
        self.reusable = False             # the upstream connection may serve another exchange
        self.held: list[bytes] | None = None   # response bytes held while one upstream read is parsed
        self.tunnel_done: asyncio.Future | None = None
        self.attempts = 0
        self.backend: Backend | None = None     # of the last attempt
        self.outcome: Outcome | None = None     # of the last attempt
        self.upstream_time: float | None = None  # the last attempt's time to a response head
        self.sent = 0                     # response body bytes relayed to the client
        self.sent_mark = 0                # ``sent`` when the current attempt started
        self.decision: bytes | None = None   # X-LB-Decision for this response, when explained

    def header(self, lower_name: bytes) -> bytes | None:
        for name, value in self.headers:
            if name.lower() == lower_name:
                return value
        return None

    # ---- the request head ----------------------------------------------------------------

    def inspect(self, version: str, config: Config, default_host: bytes) -> None:
        """Check the head and derive what the proxy needs: host, canonical path (by the
        config's ``[paths]``), body framing. A refusal is left in ``error``."""
        paths, max_body = config.paths, config.limits.max_body_size
        self.headers = refusals.drop_underscored(self.headers)
        problem = refusals.request_problem(self.method, version, self.target, self.headers)
        if problem is not None:
            self.error = problem
            return
        content_length = None
        chunked = False
        for name, value in self.headers:
            lower = name.lower()
            if lower == b"host":
                self.host = value.strip()
            elif lower == b"content-length":
                content_length = int(value)      # llhttp has validated it
            elif lower == b"transfer-encoding":
                chunked = True
            elif lower == b"expect" and value.lower() == b"100-continue":
                self.expect_continue = True
            elif lower == b"upgrade":
                self.upgrade = value
        if not self.host:
            self.host = default_host             # HTTP/1.0 without Host
        target = self.target
        if target.startswith((b"http://", b"https://")):
            # absolute-form: route and forward in origin-form (refusals matched it to Host)
            target = refusals.split_absolute(target)[1]
        if target != b"*":
            q = target.find(b"?")
            raw_path = (target[:q] if q >= 0 else target).decode("latin-1")
            try:
                path = canonical_path(raw_path, paths)
            except PathRefused as exc:
                self.error = (400, str(exc))
                return
            self.path = path
            if path != raw_path:
                target = path.encode("latin-1") + (target[q:] if q >= 0 else b"")
        self.target = target
        if max_body and content_length is not None and content_length > max_body:
            # Refused before any 100 Continue, so the client need not send the body.
            self.error = (413, "request body too large")
            return
        if chunked:
            self.body = Body(self, "chunked", 0)
        elif content_length:
            self.body = Body(self, "length", content_length)

    def fail_body(self, status: int, message: str) -> None:
        """The body went wrong after the head was accepted: refuse the request if nothing was
        sent for it yet, otherwise cut the connection (the response cannot be completed)."""
        conn = self.conn
        self.keep_alive = False
        if conn.current is not self:
            self.error = (status, message)          # still queued: answered in its turn
        elif not self.response_begun and self.head_waiter is not None \
                and not self.head_waiter.done():
            self.head_waiter.set_exception(ClientError(status, message))
        elif conn.transport is not None:
            conn.transport.abort()

    def replayable(self) -> bool:
        """Safe to send again: the backend cannot have acted on it twice, the body is at hand."""
        return self.method in framing.IDEMPOTENT and (self.body is None or self.body.replayable())

    # ---- the response, reported by the upstream connection --------------------------------

    def response_head(self, up: UpstreamConnection, status: int, reason: bytes,
                      headers: list[tuple[bytes, bytes]]) -> bool:
        """Relay a response head; False when it was refused (the upstream stops parsing)."""
        if up is not self.upstream:
            return False
        self.status = status
        if status >= 500 and self.retry_5xx is not None and self.retry_5xx():
            # retry_on "5xx": hold this answer back and try another backend instead.
            self.upstream_failed(UpstreamError(f"backend answered {status}", True, status))
            return False
        length, codings = framing.body_fields(headers)
        chunked = bool(codings)
        if chunked and refusals.transfer_coding_problem(codings) is not None:
            # gzip-then-chunked and the like: re-framing would hand the client bytes whose
            # coding it was never told about. Nothing has been sent: 502.
            self.upstream_failed(UpstreamError("invalid response: unsupported transfer coding",
                                               False))
            return False
        upgrading = status == 101 and self.upgrade is not None
        if status == 101 and not upgrading:
            # Switching to a protocol nobody asked this backend for: never relayed.
            self.upstream_failed(UpstreamError("invalid response: 101 to a request without "
                                               "Upgrade", False))
            return False
        body = self.body
        announced, self.relay, keep, self.ends_at_close = framing.response_framing(
            status, length, chunked, self.method == b"HEAD", self.http10, upgrading,
            self.keep_alive,
            # a body the backend did not wait for cannot be skipped safely
            self.conn.last_before_close() or (body is not None and not body.done))
        self.response_keep = keep
        self.response_begun = True
        if self.admitted is not None and self.admitted.response_headers:
            headers = headers + self.admitted.response_headers     # RateLimit-*
        if self.decision is not None:
            headers = [*headers, (b"X-LB-Decision", self.decision)]
        upgrade = None
        if upgrading:
            upgrade = next((v for n, v in headers if n.lower() == b"upgrade"), self.upgrade)
        self._send(framing.client_response_head(
            status, reason, headers, framing=announced, length=max(length, 0), keep_alive=keep,
            http10=self.http10, upgrade=upgrade))
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(status)
        return True

    def response_body(self, data: bytes) -> None:
        self.conn.progress += 1
        if not self.response_begun:
            return
        self.sent += len(data)
        if self.relay == "chunked":
            self._send(b"%x\r\n%s\r\n" % (len(data), data))
        elif self.relay != "none":
            self._send(data)

    def response_complete(self, up: UpstreamConnection, reusable: bool) -> None:
        if up is not self.upstream:
            return
        if self.relay == "chunked":
            self._send(b"0\r\n\r\n")
        self.reusable = reusable and not self.ends_at_close
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
        if self.response_begun and self.ends_at_close:
            # A response delimited by the backend closing: this *is* its end.
            self.response_complete(up, reusable=False)
            return
        self.upstream_failed(UpstreamError(
            "backend closed the connection" if not up.response_started else "backend closed mid-response",
            before_response=not up.response_started))

    def upstream_upgraded(self, tail: bytes) -> None:
        """The backend switched protocols: from here the two connections are a tunnel."""
        up = self.upstream
        if up is None or self.status != 101:
            self.upstream_failed(UpstreamError("unexpected upgrade", False))
            return
        up.tunnel = True
        self.tunnel_done = self.conn.loop.create_future()
        if tail:
            self._send(tail)
        self.conn.start_tunnel(up)
        self.response_complete(up, reusable=False)

    def end_tunnel(self) -> None:
        if self.tunnel_done is not None and not self.tunnel_done.done():
            self.tunnel_done.set_result(None)

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
