"""Upgrades: only the configured protocols are tunnelled (websocket by default); an Upgrade
the backend declines leaves an ordinary HTTP/1.1 connection, never a hung one; h2c and
HTTP2-Settings never reach a backend."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from lbctl.config.model import Listen
from tests.support import backend_config, config, split_responses

# What `curl --http2 http://...` sends, then a second request on the same connection.
H2C = (b"GET /first HTTP/1.1\r\nHost: t\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n"
       b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
       b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
WEBSOCKET = (b"GET /chat HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
             b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
SECOND = b"GET /second HTTP/1.1\r\nHost: t\r\n\r\n"


class Heads:
    """A raw backend that answers every request head with 200 (no upgrade) and keeps the
    heads it received; ``answer`` can be replaced per test."""

    def __init__(self, answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno") -> None:
        self.heads: list[bytes] = []
        self.answer = answer

    async def __call__(self, reader, writer):
        try:
            while True:
                self.heads.append(await reader.readuntil(b"\r\n\r\n"))
                writer.write(self.answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()


async def exchange(port: int, *requests: bytes, answers: int) -> list[tuple[int, dict, bytes]]:
    """Send ``requests`` on one connection, each once the answers before it are in, and
    read until ``answers`` whole responses arrived (or the proxy closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = b""
    try:
        for sent, request in enumerate(requests, 1):
            writer.write(request)
            await writer.drain()
            wanted = answers if sent == len(requests) else sent
            while not _complete(got, wanted):
                data = await asyncio.wait_for(reader.read(65536), 10)
                if not data:
                    break
                got += data
        return split_responses(got)
    finally:
        writer.close()


def _complete(raw: bytes, count: int) -> bool:
    """Whether ``raw`` holds ``count`` whole Content-Length responses."""
    rest = raw
    for _ in range(count):
        head, sep, rest = rest.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        if len(rest) < length:
            return False
        rest = rest[length:]
    return True


async def proxy_for(backends, heads: Heads, **listen):
    port = await backends.start_raw(heads)
    cfg = config({"p": [backend_config(f"http://127.0.0.1:{port}", "b")]}, retries=0)
    if listen:
        cfg = dataclasses.replace(cfg, listen=dataclasses.replace(cfg.listen, **listen))
    return await backends.proxy(cfg)


async def test_curl_http2_upgrade_is_a_plain_request_and_the_connection_goes_on(backends):
    heads = Heads(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    proxy = await proxy_for(backends, heads)
    answers = await exchange(proxy.address[1], H2C, SECOND, answers=2)
    assert [status for status, _, _ in answers] == [200, 200]
    first, second = heads.heads
    assert first.startswith(b"GET /first ") and second.startswith(b"GET /second ")
    for name in (b"upgrade", b"http2-settings", b"h2c"):
        assert name not in first.lower()
    assert b"connection:" not in first.lower()


async def test_a_declined_websocket_upgrade_carries_on_as_http11(backends):
    heads = Heads()
    proxy = await proxy_for(backends, heads)
    answers = await exchange(proxy.address[1], WEBSOCKET, SECOND, answers=2)
    assert [(status, body) for status, _, body in answers] == [(200, b"no"), (200, b"no")]
    assert b"upgrade: websocket" in heads.heads[0].lower()     # it was asked for
    assert heads.heads[1].startswith(b"GET /second ")


async def test_a_declined_upgrade_with_a_request_pipelined_behind_it(backends):
    heads = Heads()
    proxy = await proxy_for(backends, heads)
    answers = await exchange(proxy.address[1], WEBSOCKET + SECOND, answers=2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert [h.split(b" ")[1] for h in heads.heads] == [b"/chat", b"/second"]


async def test_http2_settings_never_crosses_even_unnamed(backends):
    heads = Heads()
    proxy = await proxy_for(backends, heads)
    request = b"GET / HTTP/1.1\r\nHost: t\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n"
    [(status, _, _)] = await exchange(proxy.address[1], request, answers=1)
    assert status == 200 and b"http2-settings" not in heads.heads[0].lower()


async def test_upgrades_off_forwards_websocket_as_a_plain_request(backends):
    heads = Heads()
    proxy = await proxy_for(backends, heads, upgrades=())
    answers = await exchange(proxy.address[1], WEBSOCKET, SECOND, answers=2)
    assert [status for status, _, _ in answers] == [200, 200]
    assert b"upgrade" not in heads.heads[0].lower()


async def test_a_101_nobody_asked_for_is_a_502(backends):
    heads = Heads(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                  b"Upgrade: h2c\r\n\r\n")
    proxy = await proxy_for(backends, heads)
    [(status, _, _)] = await exchange(proxy.address[1], H2C, answers=1)
    assert status == 502


@pytest.mark.parametrize("value, ok", [
    ('["websocket"]', True), ("[]", True), ('["WebSocket", "foo/2"]', True),
    ('["h2c"]', False), ('["websocket", "websocket"]', False), ('["a b"]', False),
    ('"websocket"', False),
])
def test_upgrades_are_validated(tmp_path, value, ok):
    from lbctl.config import load_config
    from lbctl.config.loader import ConfigError
    path = tmp_path / "lb.toml"
    path.write_text(f'''[listen]
upgrades = {value}

[[routes]]
pool = "p"

[pools.p]
[[pools.p.backends]]
url = "http://127.0.0.1:9"
''')
    if ok:
        assert isinstance(load_config(path).listen, Listen)
    else:
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert [(p.where, p.message.split(",")[0]) for p in info.value.problems] == [
            ("listen.upgrades", 'expected an array of protocol names like ["websocket"] '
                                '(may be empty; not "h2c")')]
