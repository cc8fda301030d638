"""One request and its response: an ``Exchange`` holds everything that belongs to it.

The client connection's parser fills in the request head and streams the body (``Body``);
``forward.handle`` routes the exchange and tries backends; the upstream connection that
serves an attempt reports its response straight to the exchange (``response_head``,
``response_body``, ``response_complete``...), which writes it to the client inside the
callback, without a hop through a task, and notes what the attempt learned in ``event``
(``COMPLETE``, ``TIMED_OUT`` or the error) for ``forward.proceed`` to act on once the
callback is over. What observers record about the request (attempts, the last backend and
outcome, bytes relayed, the explained decision) is kept here too, so the connection carries
nothing that belongs to one request.

Field groups, in order: the request head (set by the parser and ``inspect``), the request's
routing results, the attempt in progress, the response as relayed, and the record.
"""

from __future__ import annotations

import asyncio
import select
from typing import TYPE_CHECKING

from lbctl.balancing import Outcome
from lbctl.proxy import framing, refusals
from lbctl.proxy.framing import (CODING, CONNECTION, EXPECT, FORWARD, HOST, LENGTH, NAMES,
                                 REQUEST_ID, UNDERSCORED, UPGRADE, lower_name, name_info)
from lbctl.proxy.paths import PathRefused, canonical_path
from lbctl.proxy.upstream import UpstreamError

if TYPE_CHECKING:
    from lbctl.balancing import Backend
    from lbctl.config.model import Config
    from lbctl.gateway.policy import Admission
    from lbctl.proxy.client import ClientConnection
    from lbctl.proxy.runtime import PoolRuntime, Runtime
    from lbctl.proxy.upstream import UpstreamConnection

BUFFER_HIGH = 256 * 1024       # buffered request body before reading pauses
REPLAY_LIMIT = 64 * 1024       # bodies up to this size are kept so an idempotent retry can resend them
OK, SERVER_ERROR = Outcome.OK, Outcome.SERVER_ERROR


class _Event:
    """What an attempt learned that is not an error: see ``COMPLETE``, ``TIMED_OUT``."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


COMPLETE = _Event("COMPLETE")      # the response ended (or, upgraded, its tunnel closed)
TIMED_OUT = _Event("TIMED_OUT")    # no head within the response timeout, or a stalled body


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
        self.on_done = None               # on_done(exchange) once the whole body is received
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
            self.on_done(self.exchange)

    def replayable(self) -> bool:
        return not self.sent_any or self.replay is not None

    def attach(self, transport: asyncio.Transport, head: bytes) -> None:
        """Start (or restart, for a retry) sending the body to an upstream connection, after
        the request's ``head``: what has arrived of the body goes in the same write."""
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
        out = [head]
        if self.framing == "chunked":
            if pending:                   # what arrived so far, as one chunk
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                out.append(b"%x\r\n%s\r\n" % (len(data), data))
            if self.done:
                out.append(b"0\r\n\r\n")
        else:
            out += pending
        if len(out) == 1:
            transport.write(head)
        else:
            transport.writelines(out)     # one writev
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
        "method", "target", "path", "http10", "headers", "pieces", "sent_id", "keep_alive",
        "host", "body", "upgrade", "expect_continue", "error",
        # decided before the first attempt
        "begun", "runtime", "request_id", "admitted", "state", "key", "deadline", "select",
        "tried", "task",
        # the attempt in progress
        "trying", "idle_pool", "upstream", "started", "latency", "result", "ok", "event",
        "watching", "seen", "retry_5xx", "failure",
        # the response as relayed to the client
        "status", "response_begun", "relay", "response_keep", "ends_at_close", "reusable",
        "held", "tunnel", "ended",
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
        self.pieces: list[bytes] = []     # the headers a backend gets (set by inspect)
        self.sent_id: bytes | None = None   # the client's X-Request-ID, if any
        self.keep_alive = True
        self.host = b""
        self.body: Body | None = None
        self.upgrade: bytes | None = None
        self.expect_continue = False
        self.error: tuple[int, str] | None = None   # set when the request must be refused
        self.begun = 0.0                  # loop time its handling began (forward.start)
        self.runtime: Runtime | None = None   # the one current when it began, to its end
        self.request_id: bytes | None = None
        self.admitted: Admission | None = None  # the gateway's: resolved client, rewrites
        self.state: PoolRuntime | None = None   # its pool; key, deadline, select: set with it
        self.tried: list[Backend] = []    # backends of the attempts so far
        self.task: asyncio.Task | None = None   # a wait a callback cannot make (connect)
        self.trying: Backend | None = None      # the attempt in progress (None: none)
        self.upstream: UpstreamConnection | None = None   # ...once connected
        self.latency: float | None = None  # its time to a response head (None: no head yet)
        self.result: Outcome | None = None  # its outcome should it end now
        self.ok = False                   # it ended cleanly (the pool's load feedback)
        self.event = None                 # what it learned, for forward.proceed to act on
        self.watching = False             # its response body is watched for stalls
        self.retry_5xx = None             # callable: may this attempt's 5xx be retried?
        self.failure = (502, "no backend could serve the request")   # if attempts run out
        self.status = 0                   # the status the client got (0: none yet)
        self.response_begun = False       # the response head went to the client
        self.relay = "none"               # how body bytes are relayed (framing.response_framing)
        self.response_keep = True         # the client connection stays open after it
        self.ends_at_close = False        # the backend's body ends when it closes
        self.reusable = False             # the upstream connection may serve another exchange
        self.held: list[bytes] | None = None   # response bytes held while one upstream read is parsed
        self.tunnel = False               # upgraded: the attempt lasts until the tunnel closes
        self.ended = False                # answered, or abandoned by the client
        self.attempts = 0
        self.backend: Backend | None = None     # of the last attempt
        self.outcome: Outcome | None = None     # of the last attempt
        self.upstream_time: float | None = None  # the last attempt's time to a response head
        self.sent = 0                     # response body bytes relayed to the client
        self.sent_mark = 0                # ``sent`` when the current attempt started
        self.decision: bytes | None = None   # X-LB-Decision for this response, when explained

    def header(self, lower_name: bytes) -> bytes | None:
        names = NAMES
        for name, value in self.headers:
            info = names.get(name)
            if (info[0] if info is not None else name_info(name)[0]) == lower_name:
                return value
        return None

    def drop_headers(self, lower_names) -> None:
        """Forward none of these request headers (``lower_names``: lower-cased)."""
        self.headers = [(n, v) for n, v in self.headers if lower_name(n) not in lower_names]
        self.pieces = framing.without(self.pieces, lower_names)

    # ---- the request head ----------------------------------------------------------------

    def inspect(self, version: str, config: Config, default_host: bytes) -> None:
        """Check the head and derive what the proxy needs: host, canonical path (by the
        config's ``[paths]``), body framing, the headers a backend gets. One walk over the
        headers, each name classified once (``framing.NAMES``). A refusal is left in
        ``error``."""
        paths, max_body = config.paths, config.limits.max_body_size
        names = NAMES
        hosts: list[bytes] = []
        codings: list[bytes] = []
        connection: list[bytes] | None = None
        pieces: list[bytes] = []          # what crosses to a backend (framing.forward_pieces)
        content_length = None
        has_length = underscored = False
        for name, value in self.headers:
            info = names.get(name) or name_info(name)
            kind = info[1]
            if kind == FORWARD:
                pieces += (name, b": ", value, b"\r\n")
            elif kind == HOST:
                hosts.append(value)
            elif kind == LENGTH:
                content_length = int(value)      # llhttp has validated it
                has_length = value.strip() != b"0"
            elif kind == CODING:
                codings.append(value)
            elif kind == UNDERSCORED:
                underscored = True
            elif kind == REQUEST_ID:
                if self.sent_id is None:
                    self.sent_id = value
            elif kind == CONNECTION:
                if connection is None:
                    connection = []
                connection.append(value)
            elif kind == EXPECT:
                if value.lower() == b"100-continue":
                    self.expect_continue = True
            elif kind == UPGRADE:
                self.upgrade = value
        if underscored:
            self.headers = refusals.drop_underscored(self.headers)
        if connection is not None:
            named = framing.named_by_connection(connection)
            if named:
                pieces = framing.without(pieces, named)
        self.pieces = pieces
        problem = refusals.request_problem(self.method, version, self.target, hosts, codings,
                                           has_length, self.upgrade is not None)
        if problem is not None:
            self.error = problem
            return
        if hosts:
            self.host = hosts[0].strip()
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
        if codings:
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
        elif self.upstream is not None and self.latency is None:
            # Waiting for its answer: the attempt ends as the client's failure. Acted on at
            # the loop's next turn, out of the parser callback that found it.
            if self.event is None:
                self.event = ClientError(status, message)
            conn.loop.call_soon(conn.proceed, self)
        elif conn.transport is not None:
            conn.transport.abort()

    def replayable(self) -> bool:
        """Safe to send again: the backend cannot have acted on it twice, the body is at hand."""
        return self.method in framing.IDEMPOTENT and (self.body is None or self.body.replayable())

    # ---- the response, reported by the upstream connection --------------------------------

    def response_head(self, up: UpstreamConnection, status: int, reason: bytes) -> bool:
        """Relay a response head, as ``up`` collected it (its headers that cross as pieces,
        Content-Length, Transfer-Encoding, Connection and Upgrade apart); False when it was
        refused (the upstream stops parsing)."""
        if up is not self.upstream or self.event is not None:
            return False                    # not this attempt's, or the attempt has failed
        self.status = status
        if status >= 500 and self.retry_5xx is not None and self.retry_5xx():
            # retry_on "5xx": hold this answer back and try another backend instead.
            self.upstream_failed(UpstreamError(f"backend answered {status}", True, status))
            return False
        length, codings = up.length, up.codings
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
        pieces = up.pieces
        if up.connection is not None:
            named = framing.named_by_connection(up.connection)
            if named:
                pieces = framing.without(pieces, named)
        extra = ()
        if self.admitted is not None and self.admitted.response_headers:
            extra = self.admitted.response_headers     # RateLimit-*
        if self.decision is not None:
            extra = [*extra, (b"X-LB-Decision", self.decision)]
        upgrade = None
        if upgrading:
            upgrade = up.upgrade if up.upgrade is not None else self.upgrade
        self._send(framing.client_response_head(
            status, reason, pieces, framing=announced, length=max(length, 0), keep_alive=keep,
            http10=self.http10, upgrade=upgrade, extra=extra))
        # The attempt has its answer: the response timeout is over.
        conn = self.conn
        conn.response_deadline.stop()
        self.retry_5xx = None
        self.latency = conn.loop.time() - self.started
        self.result = SERVER_ERROR if status >= 500 else OK
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
        if self.event is None:
            self.event = COMPLETE

    def upstream_failed(self, error: UpstreamError) -> None:
        if self.event is None:              # the first thing learned decides
            self.event = error

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
        self.tunnel = True
        if tail:
            self._send(tail)
        self.conn.start_tunnel(up)
        self.response_complete(up, reusable=False)

    def end_tunnel(self) -> None:
        """Either side of the tunnel closed: the attempt, and the connection, end."""
        if self.tunnel:
            self.tunnel = False
            self.response_keep = False
            self.event = COMPLETE

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
