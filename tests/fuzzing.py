"""Machinery shared by the fuzz test (bounded, in CI) and ``fuzz/fuzz_proxy.py`` (long runs).

A proxy and a recording backend run on their own event loop in a background thread, so a
Hypothesis test can drive them with plain blocking sockets. ``check`` sends one mutated
input and asserts the invariants that must hold whatever the bytes are.

The proxy has an api_key route on ``/admin`` followed by a catch-all, as in the auth-bypass
report: whatever the target, a request that any common backend would read as ``/admin``
or below (``backend_readings``: fragment cut, percent-decoding, path parameters stripped,
backslashes as slashes, case ignored, dot segments and repeated slashes removed) must have
come through the ``/admin`` route, and every forwarded target must be in the RFC 3986
grammar.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import socket
import string
import threading
import time
from dataclasses import replace
from urllib.parse import unquote_to_bytes

import httptools

from lbctl.config.model import ApiKey, Auth, Limits, Route, Timeouts
from lbctl.config.keys import digest_of
from lbctl.proxy.server import ProxyServer
from tests.support import backend_config, config

ADMIN_KEY = b"fuzz-admin-key-0123456789abcdef"
# RFC 3986 pchar, "/", "?" and "%": every byte a forwarded origin-form target may hold,
# written out here rather than taken from lbctl.
TARGET_BYTES = set((string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@/?%").encode())

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: fuzz\r\n\r\nok"

SEEDS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: fuzz\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n",
    b"HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"PUT /u HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
]


class Upstream:
    """What the backend received: complete requests (raw heads) and parse failures."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []
        self.errors = 0
        self.open = 0                       # backend connections still open


class ProxyUnderTest:
    def __init__(self) -> None:
        self.upstream = Upstream()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("proxy under test did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        upstream = self.upstream

        async def backend(reader, writer):
            upstream.open += 1
            received = bytearray()
            start = [0]

            class Callbacks:
                def on_message_complete(self):
                    upstream.heads.append(bytes(received[start[0]:]))
                    start[0] = len(received)
                    writer.write(RESPONSE)

            parser = httptools.HttpRequestParser(Callbacks())
            try:
                while data := await reader.read(65536):
                    received.extend(data)
                    parser.feed_data(data)
            except httptools.HttpParserError:
                upstream.errors += 1
            except ConnectionError:
                pass
            finally:
                upstream.open -= 1
                writer.close()

        self.backend = await asyncio.start_server(backend, "127.0.0.1", 0)
        port = self.backend.sockets[0].getsockname()[1]
        # No upstream keep-alive: when the backend has no connection open, every exchange
        # of an example is over and recorded, so counts are attributed to the right input.
        cfg = config({"p": [backend_config(f"http://127.0.0.1:{port}", "fuzz")]},
                     routes=[Route(pool="p", path_prefix="/admin", auth=Auth(type="api_key")),
                             Route(pool="p")],
                     timeouts=Timeouts(connect=1.0, response=1.0), retries=0,
                     max_idle_connections=0,
                     limits=Limits(header_timeout=1.0, keepalive_timeout=1.0, body_timeout=1.0,
                                   max_header_size=4096, max_uri_length=1024, max_body_size=4096))
        cfg = replace(cfg, keys={"ops": ApiKey(hash="sha256:" + digest_of(ADMIN_KEY).hex(),
                                               digest=digest_of(ADMIN_KEY))})
        self.proxy = ProxyServer(cfg)
        await self.proxy.start()
        self.port = self.proxy.address[1]

    def send(self, data: bytes, timeout: float = 5.0) -> bytes:
        """Send ``data``, half-close, and read until the proxy closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass                        # the proxy may close early on a refused request
            out = bytearray()
            while True:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                out += chunk
            return bytes(out)

    def connections(self) -> int:
        return len(self.proxy.connections)

    def settle(self, timeout: float = 5.0) -> None:
        """Wait until no client or backend connection is open (bounded)."""
        deadline = time.monotonic() + timeout
        while (self.connections() or self.upstream.open) and time.monotonic() < deadline:
            time.sleep(0.002)
        assert not self.connections() and not self.upstream.open, "connections did not close"

    def close(self) -> None:
        async def stop():
            await self.proxy.close()
            self.backend.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# What the /admin route answers without its key: an answer, not a refused request, so the
# connection may stay open for the next one.
ANSWERS = (401, 403)


def check(put: ProxyUnderTest, data: bytes) -> None:
    """The invariants: complete responses only; at most one upstream request per response;
    no upstream request framed by both Content-Length and Transfer-Encoding; nothing is
    answered after an error response; the backend never sees a malformed request."""
    put.settle()
    before_heads, before_errors = len(put.upstream.heads), put.upstream.errors
    raw = put.send(data)
    put.settle()
    statuses = []
    rest = raw
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {raw[:300]!r}"
        assert head.startswith(b"HTTP/1.1 "), raw[:300]
        status = int(head[9:12])
        if status == 100:
            continue
        statuses.append(status)
        if status == 200:
            assert rest.startswith(b"ok") or not rest or rest.startswith(b"HTTP/1.1 "), raw[:300]
            if rest.startswith(b"ok"):
                rest = rest[2:]
        else:
            length = int([line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")][0])
            rest = rest[length:]
            assert status >= 400, raw[:300]
            if status in ANSWERS:
                continue                    # the /admin route's answer, not a refusal
            assert b"Connection: close" in head, raw[:300]
            assert not rest, f"bytes after an error response: {raw!r}"
    new_heads = put.upstream.heads[before_heads:]
    assert put.upstream.errors == before_errors, f"backend got a malformed request from {data!r}"
    assert len(new_heads) <= statuses.count(200), (data, raw, new_heads)
    for head in new_heads:
        head_only = head.split(b"\r\n\r\n", 1)[0].lower()
        assert head_only.count(b"\r\nhost:") == 1
        assert not (b"\r\ncontent-length:" in head_only and b"\r\ntransfer-encoding:" in head_only)
        target = head.split(b" ", 2)[1]
        assert set(target) <= TARGET_BYTES, (data, target)
        if any(under_admin(path) for path in backend_readings(target)):
            # Only the /admin route (auth: api_key) may forward it; it adds X-Consumer.
            assert b"\r\nx-consumer: ops" in head_only, (data, target)


# ---- how common backends read a path ---------------------------------------------------------

def _decode(path: bytes) -> bytes:
    return unquote_to_bytes(path)                       # every escape, %2F included


def _strip_parameters(path: bytes) -> bytes:
    return re.sub(rb";[^/]*", b"", path)                 # Tomcat, Jetty, Spring


def _backslashes(path: bytes) -> bytes:
    return path.replace(b"\\", b"/")                     # IIS, Windows


def _fold(path: bytes) -> bytes:
    return path.lower()                                  # case-insensitive backends


def _normalise(path: bytes) -> bytes:
    out: list[bytes] = []
    for segment in path.split(b"/"):
        if segment == b"..":
            if out:
                out.pop()
        elif segment not in (b"", b"."):
            out.append(segment)
    return b"/" + b"/".join(out)


READINGS = (_decode, _strip_parameters, _backslashes, _fold)


def backend_readings(target: bytes) -> set[bytes]:
    """Every path a common backend could take ``target`` for: any combination of the
    readings above, each time after the fragment is cut and the query removed."""
    path = target.split(b"#", 1)[0].split(b"?", 1)[0]
    out = {path, _normalise(path)}
    for n in range(1, len(READINGS) + 1):
        for chosen in itertools.permutations(READINGS, n):
            reading = path
            for step in chosen:
                reading = step(reading)
            out.add(_normalise(reading))
    return out


def under_admin(path: bytes) -> bool:
    return path == b"/admin" or path.startswith(b"/admin/")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))
