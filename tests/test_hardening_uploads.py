"""A backend that answers an upload early and closes: the client gets that answer, the rest
of its upload is read and discarded (a lingering close), never a TCP reset; and a client
sending its body in tiny chunks cannot stall anyone else.

Both run against a real ``lbctl serve`` process, so its event log is the one an operator
reads, and so the stalled loop, if any, is not the test's own.
"""

from __future__ import annotations

import asyncio
import json
import re

import aiohttp

UPLOAD = 5 * 2**20
CLIENTS = 6


async def answer_early_and_close(reader, writer):
    """Read the request head, answer at once, close with the body unread (a reset for the
    proxy, as many servers do to an upload they refuse)."""
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly")
        await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()


async def upload(port: int) -> tuple[bytes, str | None]:
    """POST 5 MB whatever happens; then read to the end. (answer, error while sending or
    reading, if any)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    error = None
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: t\r\nContent-Type: application/octet-stream\r\n"
                     b"Content-Length: %d\r\n\r\n" % UPLOAD)
        piece = b"u" * 65536
        for _ in range(UPLOAD // len(piece)):
            writer.write(piece)
            await writer.drain()
    except ConnectionError as exc:
        error = f"sending: {exc!r}"
    try:
        raw = await asyncio.wait_for(reader.read(-1), 20)
    except ConnectionError as exc:
        raw, error = b"", error or f"reading: {exc!r}"
    writer.close()
    return raw, error


async def test_an_early_answer_reaches_every_uploader_without_a_reset(
        backends, serve_process, tmp_path, free_port, write_config):
    backend = await backends.start_raw(answer_early_and_close)
    good = await backends.start("good")
    port = free_port()
    write_config({"p": [f"http://127.0.0.1:{backend}"], "q": [good.url]}, port=port)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    results = await asyncio.gather(*(upload(port) for _ in range(CLIENTS)))
    for raw, error in results:
        assert error is None, error
        assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"\r\n\r\nearly"), raw[:200]
        assert b"Connection: close" in raw
    # The proxy is fine afterwards, and said nothing alarming about it.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as resp:
            assert resp.status == 200
    assert not [line for line in proc.lines if "Traceback" in line or "ERROR" in line], \
        proc.lines


# ---- tiny chunks ----------------------------------------------------------------------

CHUNK = 16
STREAM_LIMIT = 24 * 2**20         # bytes of chunked upload at most
STREAM_SECONDS = 30.0             # and at most this long


class ChunkCounter:
    """A raw backend that parses a chunked upload and counts the chunks it receives."""

    def __init__(self) -> None:
        self.chunks = 0
        self.bytes = 0
        self.reads = 0
        self.started = asyncio.Event()

    async def __call__(self, reader, writer):
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.started.set()
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    break
                await reader.readexactly(size + 2)
                self.chunks += 1
                self.bytes += size
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d"
                         % (len(str(self.bytes)), self.bytes))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def stream_tiny_chunks(port: int, stop: asyncio.Event) -> int:
    """Send 16-byte chunks as fast as the socket takes them, many per write, until ``stop``
    (or the byte or time bound); returns how many chunks were sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /stream HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                 b"Connection: close\r\n\r\n")
    batch = (b"10\r\n" + b"c" * CHUNK + b"\r\n") * 4096      # 4,096 chunks per write
    sent = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_SECONDS
    while not stop.is_set() and sent * CHUNK < STREAM_LIMIT and loop.time() < deadline:
        writer.write(batch)
        await writer.drain()
        sent += 4096
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.endswith(b"%d" % (sent * CHUNK)), raw[:100]
    return sent


async def test_tiny_chunks_are_joined_upstream_and_stall_no_one(
        backends, serve_process, tmp_path, free_port):
    counter = ChunkCounter()
    sink = await backends.start_raw(counter)
    other = await backends.start("other")
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    path.write_text(f'''
[listen]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:{admin}"

[[routes]]
path_prefix = "/stream"
pool = "sink"

[[routes]]
pool = "other"

[pools.sink]
[[pools.sink.backends]]
url = "http://127.0.0.1:{sink}"

[pools.other]
[[pools.other.backends]]
url = "{other.url}"
''')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    stop = asyncio.Event()
    streaming = asyncio.ensure_future(stream_tiny_chunks(port, stop))
    answered = 0
    try:
        await asyncio.wait_for(counter.started.wait(), 10)
        async with aiohttp.ClientSession() as session:
            # While the stream runs: requests on other connections and the admin API are
            # answered, one after another.
            for _ in range(20):
                async with session.get(f"http://127.0.0.1:{port}/x") as resp:
                    assert resp.status == 200 and await resp.text() == "other"
                async with session.get(f"http://127.0.0.1:{admin}/stats") as resp:
                    assert resp.status == 200 and "pools" in json.loads(await resp.text())
                answered += 1
                assert not streaming.done(), "the stream ended before the others were served"
    finally:
        stop.set()
        sent = await streaming
    assert answered == 20
    # Coalesced: each slice of a read went upstream as one chunk, not 16 bytes at a time.
    assert counter.bytes == sent * CHUNK
    assert counter.chunks * 20 < sent, (counter.chunks, sent)
    assert not [line for line in proc.lines if re.search(r"Traceback|ERROR", line)], proc.lines
