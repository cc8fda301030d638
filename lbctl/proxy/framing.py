"""Message heads as they cross the proxy: what is stripped, what is added, how bodies are framed.

Framing is re-derived, never copied: the proxy decides ``Content-Length`` or chunked for
each hop from what it actually knows about the body (``response_framing`` is that decision
for a response, a pure function of what the request and the response head say). Hop-by-hop headers (RFC 9110 7.6.1:
``Connection`` and every header it names, Keep-Alive, Proxy-Connection, TE, Trailer,
Transfer-Encoding, Upgrade, HTTP2-Settings) never cross, in either direction; the proxy's own
``X-Forwarded-*`` headers replace whatever the client sent under those names.
"""

from __future__ import annotations

import os
import re
from http import HTTPStatus

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
    b"transfer-encoding", b"upgrade",
    # HTTP/2's upgrade settings (RFC 7540 3.2.1) belong to an h2c upgrade, which is never
    # forwarded: dropped even when the client forgot to name it in Connection.
    b"http2-settings",
})
# Set by the proxy; a client's copy is dropped first so it cannot be spoofed through.
# X-Consumer names the API key a gateway route authenticated (lbctl.gateway); a client's
# Forwarded (RFC 7239) is replaced by the X-Forwarded-* the proxy writes.
PROXY_SET = frozenset({b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                       b"x-consumer", b"forwarded"})
# Framing is re-derived per hop; Expect is answered by the proxy itself.
REDERIVED = frozenset({b"content-length", b"expect"})

_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")

NO_BODY_STATUSES = frozenset({204, 304})
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})

# ---- header names, classified once ----------------------------------------------------------
# What the proxy does with a header, by its lower-cased name. Kinds below HOP cross to the
# client in a response; only FORWARD crosses to a backend in a request (the others are
# dropped, or re-written by the proxy itself).
FORWARD = 0        # anything else
UNDERSCORED = 1    # a name with "_": dropped from requests (see refusals.py)
HOST = 2
EXPECT = 3
REQUEST_ID = 4
SET_BY_PROXY = 5   # PROXY_SET
HOP = 6            # hop-by-hop
LENGTH = 7         # Content-Length
CODING = 8         # Transfer-Encoding
CONNECTION = 9
UPGRADE = 10

_KINDS = {name: HOP for name in HOP_BY_HOP}
_KINDS.update({name: SET_BY_PROXY for name in PROXY_SET})
_KINDS.update({b"host": HOST, b"expect": EXPECT, b"x-request-id": REQUEST_ID,
               b"content-length": LENGTH, b"transfer-encoding": CODING,
               b"connection": CONNECTION, b"upgrade": UPGRADE})
# Connection tokens that name no header to drop beyond the hop-by-hop ones.
_PLAIN_TOKENS = HOP_BY_HOP | {b"close"}

# Header names as sent (case kept) -> (lower-cased, kind). Names repeat from request to
# request, so each is lower-cased and classified once; bounded, so that a client inventing
# names cannot grow it (past the bound a name is simply classified each time).
NAMES: dict[bytes, tuple[bytes, int]] = {}
NAMES_MAX = 4096


def name_info(name: bytes) -> tuple[bytes, int]:
    """``(lower-cased name, kind)`` of a header name."""
    info = NAMES.get(name)
    if info is None:
        lower = name.lower()
        kind = _KINDS.get(lower, FORWARD)
        if kind == FORWARD and b"_" in name:
            kind = UNDERSCORED
        info = (lower, kind)
        if len(NAMES) < NAMES_MAX:
            NAMES[name] = info
    return info


def lower_name(name: bytes) -> bytes:
    info = NAMES.get(name)
    return info[0] if info is not None else name_info(name)[0]


def tokens(values: list[bytes]) -> set[bytes]:
    """Lower-cased names listed in Connection header values."""
    out: set[bytes] = set()
    for value in values:
        out.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return out


def named_by_connection(values: list[bytes]) -> set[bytes]:
    """The headers Connection values name beyond the hop-by-hop ones (usually none)."""
    return tokens(values) - _PLAIN_TOKENS


def without(pieces: list[bytes], names) -> list[bytes]:
    """``pieces`` (name, ": ", value, CRLF, ...) without the headers whose lower-cased name is
    in ``names``."""
    out: list[bytes] = []
    for i in range(0, len(pieces), 4):
        if lower_name(pieces[i]) not in names:
            out += pieces[i:i + 4]
    return out


def forward_pieces(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """A request's headers a backend gets, as pieces: hop-by-hop ones, those the proxy sets
    or re-derives, and those Connection names, left out."""
    pieces: list[bytes] = []
    connection = []
    for name, value in headers:
        kind = name_info(name)[1]
        if kind == FORWARD:
            pieces += (name, b": ", value, b"\r\n")
        elif kind == CONNECTION:
            connection.append(value)
    named = named_by_connection(connection) if connection else None
    return without(pieces, named) if named else pieces


class RequestIds:
    """X-Request-ID: kept when the client sent a well-formed one, otherwise generated.

    Generated ids are a per-process random prefix and a counter: unique without a syscall
    per request.
    """

    def __init__(self) -> None:
        self._counter = 0
        # Drawn here, not at import: the workers of an instance are forked from one template
        # process, and each needs a prefix of its own.
        self._prefix = os.urandom(6).hex().encode()

    def resolve(self, sent: bytes | None) -> bytes:
        if sent is not None and _REQUEST_ID.fullmatch(sent):
            return sent
        self._counter += 1
        return b"%s-%x" % (self._prefix, self._counter)


def upstream_request_head(method: bytes, target: bytes, pieces: list[bytes], *,
                          client_ip: bytes, proto: bytes, host: bytes, request_id: bytes,
                          framing: str, length: int, upgrade: bytes | None,
                          strip=(), add=()) -> bytes:
    """The head sent to a backend. ``framing``: "none", "length" or "chunked".

    ``pieces``: the client's headers that cross (``forward_pieces``); ``client_ip`` is the
    X-Forwarded-For value; ``strip`` lower-cased names of client headers not to forward
    (credentials), ``add`` (name, value) pairs the gateway adds."""
    # Host is written once, from the value the proxy routed by (an HTTP/1.0 client may
    # have sent none, and a backend speaking 1.1 requires one).
    out = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    out += without(pieces, strip) if strip else pieces
    for name, value in add:
        out += (name, b": ", value, b"\r\n")
    out += (b"X-Forwarded-For: ", client_ip, b"\r\nX-Forwarded-Proto: ", proto,
            b"\r\nX-Forwarded-Host: ", host, b"\r\nX-Request-ID: ", request_id, b"\r\n")
    if framing == "length":
        out += (b"Content-Length: ", b"%d" % length, b"\r\n")
    elif framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


def response_framing(status: int, length: int, chunked: bool, head: bool, http10: bool,
                     upgrade: bool, keep_alive: bool, must_close: bool
                     ) -> tuple[str, str, bool, bool]:
    """How a response crosses to the client: ``(announced, relayed, keep_alive, ends_at_close)``.

    In: the response's status, its Content-Length (-1: none) and whether it is chunked;
    whether the request was HEAD, came from an HTTP/1.0 client, asked for the Upgrade this
    101 grants; whether the client wants the connection kept, and whether it must close
    anyway (draining, or a request body the backend did not wait for).

    ``announced`` is the framing the head declares ("none", "length", "chunked", "close");
    ``relayed`` how body bytes are written ("none" for HEAD, no-body statuses and a 101:
    "chunked" re-chunks them, "length" and "close" copy them); ``ends_at_close`` that the
    backend's body ends only when it closes its connection (re-chunked for HTTP/1.1 clients).
    """
    if upgrade:
        return "none", "none", not must_close, False   # the connection becomes a tunnel
    keep = keep_alive and not must_close
    if head or status in NO_BODY_STATUSES:
        return ("length" if head and length >= 0 else "none"), "none", keep, False
    if length >= 0 and not chunked:
        return "length", "length", keep, False
    if not http10:
        return "chunked", "chunked", keep, not chunked
    return "close", "close", False, not chunked        # HTTP/1.0 client, length unknown


_STATUS_LINES: dict[tuple[int, bytes], bytes] = {}


def status_line(status: int, reason: bytes) -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``, made once per status and reason (bounded, like NAMES)."""
    line = _STATUS_LINES.get((status, reason))
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or _reason(status))
        if len(_STATUS_LINES) < NAMES_MAX:
            _STATUS_LINES[(status, reason)] = line
    return line


def client_response_head(status: int, reason: bytes, pieces: list[bytes], *,
                         framing: str, length: int, keep_alive: bool, http10: bool,
                         upgrade: bytes | None = None, extra=()) -> bytes:
    """The head sent to the client. ``pieces``: the backend's headers that cross, as the
    upstream connection collected them (hop-by-hop ones and Content-Length already left
    out); ``extra`` (name, value) pairs the proxy adds. ``framing``: "none", "length",
    "chunked" or "close"."""
    out = [status_line(status, reason)]
    out += pieces
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    if framing == "length":
        out += (b"Content-Length: ", b"%d" % length, b"\r\n")
    elif framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n\r\n")
    elif not keep_alive:
        out.append(b"Connection: close\r\n\r\n")
    elif http10:
        out.append(b"Connection: keep-alive\r\n\r\n")
    else:
        out.append(b"\r\n")
    return b"".join(out)


def error_response(status: int, message: str, *, keep_alive: bool, request_id: bytes | None = None,
                   extra: tuple[tuple[bytes, bytes], ...] = (), head_only: bool = False) -> bytes:
    """A complete small response generated by the proxy itself (404, 502, 503, 504...)."""
    body = f"{status} {HTTPStatus(status).phrase}: {message}\n".encode()
    out = [b"HTTP/1.1 %d " % status, _reason(status), b"\r\nContent-Type: text/plain; charset=utf-8\r\n",
           b"Content-Length: %d\r\n" % len(body)]
    if request_id:
        out += (b"X-Request-ID: ", request_id, b"\r\n")
    for name, value in extra:
        out += (name, b": ", value, b"\r\n")
    out.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if not head_only:
        out.append(body)
    return b"".join(out)


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"
