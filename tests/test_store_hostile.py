"""The Redis store against a hostile or broken server: buckets written by someone else in a
real ``redis-server`` (a key of another type, "inf", "nan", 1e308), a server that answers
the script with what it never returns, and one that is not Redis at all.

What broke before: a bucket holding "inf" or "nan" made building the rate-limit headers
raise (OverflowError, ValueError) in the request path; 1e308 put a 308-digit
``RateLimit-Reset`` on the wire; a key of another type made the script fail, marking the
whole store down and up again on every request with that key; an impostor's error reply
went into the log as it was sent, terminal escapes and 5,000 characters included.

The impostor is a small RESP server on loopback written here: it stands for a hostile
server on the store's address, not for Redis (every Redis behaviour is a real redis-server).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from lbctl.config.model import Store as StoreConfig
from lbctl.gateway.rate_limit import Limit, LimitHeaders
from lbctl.gateway.redis_store import MAX_REASON, RedisStore
from lbctl.gateway.store import LocalStore
from tests.process import LbctlProcess
from tests.test_store_serve import ENV, redis_store, write_config

LIMIT = Limit("l", 10.0, 3)


def store_config(url: str, password: str | None = None, timeout: float = 2.0) -> StoreConfig:
    return StoreConfig(backend="redis", url=url, password=password, timeout=timeout)


@pytest.fixture
async def store(redis_server):
    client = redis_server.client()
    await client.flushdb()
    store = RedisStore(store_config(redis_server.bare_url, redis_server.password),
                       fallback=LocalStore())
    await store.start()
    yield store, client
    await store.close()
    await client.aclose()


@pytest.mark.parametrize("written, allowed", [
    ("inf", False), ("1e308", False), ("9" * 400, False),   # more than a burst ahead: empty
    ("nan", True), ("-inf", True), ("hello", True), ("", True),   # no number: a full bucket
])
async def test_a_bucket_written_by_someone_else_decides_within_bounds(store, caplog, written,
                                                                      allowed):
    store, client = store
    buckets = store.limiter(LIMIT)
    await client.set("lbctl:rl:l:k", written)
    with caplog.at_level(logging.INFO, logger="lbctl.store"):
        d = await buckets.allow("k", 0.0)
    assert d.allowed is allowed and 0 <= d.remaining <= 2 and d.reset <= LIMIT.burst / LIMIT.rate
    fields = dict(LimitHeaders(LIMIT, "both").fields(d))
    assert fields[b"RateLimit-Reset"] == b"1"
    assert fields.get(b"Retry-After", b"1") == b"1"
    assert store.up and not caplog.records


async def test_a_key_of_another_type_is_taken_over_not_a_store_failure(store, caplog):
    store, client = store
    buckets = store.limiter(LIMIT)
    await client.hset("lbctl:rl:l:k", "a", "b")
    with caplog.at_level(logging.INFO, logger="lbctl.store"):
        decisions = [await buckets.allow("k", 0.0) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]    # one shared bucket
    assert await client.type("lbctl:rl:l:k") == b"string"
    assert store.up and store.errors == 0 and not caplog.records


# ---- an impostor on the store's address ------------------------------------------------------

async def impostor(script_reply: bytes):
    """A RESP server that says +OK to the connection's setup (CLIENT SETNAME, SELECT) and
    ``script_reply`` to everything else; returns (server, port, commands seen)."""
    seen: list[bytes] = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readline()
                if not head.startswith(b"*"):
                    break
                words = []
                for _ in range(int(head[1:])):
                    size = int((await reader.readline())[1:])
                    words.append((await reader.readexactly(size + 2))[:-2])
                seen.append(words[0].upper())
                writer.write(b"+OK\r\n" if words[0].upper() in (b"CLIENT", b"SELECT")
                             else script_reply)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass            # the store hung up, or the test is over
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


@pytest.mark.parametrize("reply, reason", [
    (b":5\r\n", "unexpected reply to the rate-limit script: 5"),
    (b"*2\r\n:1\r\n$3\r\nnan\r\n", "unexpected reply to the rate-limit script: [1, b'nan']"),
    (b"*2\r\n:1\r\n$3\r\ninf\r\n", "unexpected reply to the rate-limit script: [1, b'inf']"),
    (b"*2\r\n:7\r\n$1\r\n0\r\n", "unexpected reply to the rate-limit script: [7, b'0']"),
    (b"*2\r\n:0\r\n$5\r\n1e300\r\n", "unexpected reply to the rate-limit script: [0, b'1e300']"),
    (b"*3\r\n:1\r\n:1\r\n:1\r\n", "unexpected reply to the rate-limit script: [1, 1, 1]"),
    (b"-ERR \x1b[2J\x1b[31mowned" + b"A" * 5000 + b"\r\n", r"\x1b[2J\x1b[31mownedAAA"),
])
async def test_an_impostor_answering_the_script_is_a_store_down(caplog, reply, reason):
    server, port, seen = await impostor(reply)
    store = RedisStore(store_config(f"redis://127.0.0.1:{port}/0"), fallback=LocalStore())
    try:
        with caplog.at_level(logging.INFO, logger="lbctl.store"):
            await store.start()
            assert not store.up and b"EVALSHA" in seen
            d = await store.limiter(LIMIT).allow("k", 0.0)       # this instance's own bucket
        assert d.allowed and d.remaining == 2
        [line] = [r.getMessage() for r in caplog.records]
        assert "unreachable (" + reason in line
        assert line.isprintable() and len(line) < MAX_REASON + 200
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


async def test_a_server_that_is_not_redis_is_a_store_down(caplog):
    async def http(reader, writer):
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(http, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    store = RedisStore(store_config(f"redis://127.0.0.1:{port}/0"), fallback=LocalStore())
    try:
        with caplog.at_level(logging.INFO, logger="lbctl.store"):
            await store.start()
        assert not store.up
        assert 'unreachable (Protocol error, got "H" as reply type byte)' in caplog.text
    finally:
        await store.close()
        server.close()
        await server.wait_closed()


# ---- a real serve: a poisoned bucket is a 429, never a 500 -----------------------------------

async def test_serve_answers_a_poisoned_bucket_with_a_429(backends, tmp_path, free_port,
                                                         redis_server):
    backend = await backends.start("b")
    client = redis_server.client()
    await client.flushdb()
    port = free_port()
    config = write_config(tmp_path / "lb.toml", port, backend.url, redis_store(redis_server),
                          limit='{ rate = 10, per = "1s", burst = 3, headers = "both" }')
    proc = await LbctlProcess.start("serve", config, env=ENV)
    try:
        await proc.wait_for_log("listening on")
        async with aiohttp.ClientSession() as session:
            async def get():
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                    return (resp.status, resp.headers.get("Retry-After"),
                            resp.headers.get("RateLimit-Reset"))
            assert await get() == (200, None, "1")
            [key] = await client.keys("lbctl:rl:*")
            # inf and 1e308: an empty bucket at most; nan: no number, a full bucket.
            for written, expected in (("inf", (429, "1", "1")), ("1e308", (429, "1", "1")),
                                      ("nan", (200, None, "1"))):
                await client.set(key, written)
                assert await get() == expected, written
    finally:
        await client.aclose()
        proc.kill()
        await proc.proc.wait()
    assert not [line for line in proc.lines if "Traceback" in line]
