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


def connection_tokens(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    """Lower-cased names listed in every Connection header."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b",") if t.strip())
    return tokens


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


def upstream_request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], *,
                          client_ip: str, proto: bytes, host: bytes, request_id: bytes,
                          framing: str, length: int, upgrade: bytes | None,
                          strip=(), add=()) -> bytes:
    """The head sent to a backend. ``framing``: "none", "length" or "chunked".

    ``client_ip`` is the X-Forwarded-For value; ``strip`` lower-cased names of client
    headers not to forward (credentials), ``add`` (name, value) pairs the gateway adds."""
    named = connection_tokens(headers)
    # Host is written once, from the value the proxy routed by (an HTTP/1.0 client may
    # have sent none, and a backend speaking 1.1 requires one).
    out = [method, b" ", target, b" HTTP/1.1\r\nHost: ", host, b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower in PROXY_SET or lower in REDERIVED or lower in named \
                or lower == b"x-request-id" or lower == b"host" or lower in strip:
            continue
        out += (name, b": ", value, b"\r\n")
    for name, value in add:
        out += (name, b": ", value, b"\r\n")
    out += (b"X-Forwarded-For: ", client_ip.encode(), b"\r\nX-Forwarded-Proto: ", proto,
            b"\r\nX-Forwarded-Host: ", host, b"\r\nX-Request-ID: ", request_id, b"\r\n")
    _framing_fields(out, framing, length, upgrade)
    out.append(b"\r\n")
    return b"".join(out)


def _framing_fields(out: list[bytes], framing: str, length: int, upgrade: bytes | None) -> bool:
    """Append the fields the proxy derives itself; True when an Upgrade was announced."""
    if framing == "length":
        out += (b"Content-Length: ", b"%d" % length, b"\r\n")
    elif framing == "chunked":
        out.append(b"Transfer-Encoding: chunked\r\n")
    if upgrade is not None:
        out += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
        return True
    return False


def body_fields(headers: list[tuple[bytes, bytes]]) -> tuple[int, list[bytes]]:
    """A response's Content-Length (-1: none) and its Transfer-Encoding values."""
    length = -1
    codings = []
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            length = int(value)              # llhttp has validated it
        elif lower == b"transfer-encoding":
            codings.append(value)
    return length, codings


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


def client_response_head(status: int, reason: bytes, headers: list[tuple[bytes, bytes]], *,
                         framing: str, length: int, keep_alive: bool, http10: bool,
                         upgrade: bytes | None = None) -> bytes:
    """The head sent to the client. ``framing``: "none", "length", "chunked" or "close"."""
    named = connection_tokens(headers)
    out = [b"HTTP/1.1 %d " % status, reason or _reason(status), b"\r\n"]
    for name, value in headers:
        lower = name.lower()
        if lower in HOP_BY_HOP or lower == b"content-length" or lower in named:
            continue
        out += (name, b": ", value, b"\r\n")
    upgrading = _framing_fields(out, framing, length, upgrade)
    if not upgrading and not keep_alive:
        out.append(b"Connection: close\r\n")
    elif not upgrading and http10:
        out.append(b"Connection: keep-alive\r\n")
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
