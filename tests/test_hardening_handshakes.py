"""TLS handshakes are held to the listener's limits: a connection that sends nothing, or half
a ClientHello, is closed at ``header_timeout``; connections are counted by the caps from the
accept, before their handshake ends."""

from __future__ import annotations

import asyncio
import ssl

import pytest
import trustme

from tests.gateway_support import load, pool
from tests.test_gateway_tls import client_ssl, write_pair


def tls_listener(tmp_path, url: str, limits: str):
    return load(tmp_path, f'''
[listen]
tls = {{ cert = "server.pem", key = "server-key.pem" }}

[limits]
{limits}

[[routes]]
pool = "api"
''' + pool(url))


def client_hello() -> bytes:
    """The first flight of a real TLS client, as bytes."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def watch_closes(proxy) -> asyncio.Queue:
    """A queue that gets an item each time the proxy forgets a client connection."""
    closed: asyncio.Queue = asyncio.Queue()
    forget = proxy.proxy.forget

    def forgetting(conn):
        known = conn in proxy.proxy.connections
        forget(conn)
        if known:
            closed.put_nowait(conn)
    proxy.proxy.forget = forgetting
    return closed


async def get_over_tls(port: int, ca) -> bytes:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(
        "127.0.0.1", port, ssl=client_ssl(ca), server_hostname="localhost"), 10)
    writer.write(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(-1), 10)
    writer.close()
    return raw


async def test_silent_and_half_hello_connections_close_at_the_header_timeout(backends, tmp_path):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_listener(tmp_path, a.url, 'header_timeout = "300ms"'))
    closed = watch_closes(proxy)
    port = proxy.address[1]
    silent = await asyncio.open_connection("127.0.0.1", port)
    half = await asyncio.open_connection("127.0.0.1", port)
    hello = client_hello()
    half[1].write(hello[:len(hello) // 2])
    # Closed by the proxy at 300 ms (it used to keep them for a minute): the read ends.
    for reader, writer in (silent, half):
        assert await asyncio.wait_for(reader.read(-1), 10) == b""
        writer.close()
    for _ in range(2):
        await asyncio.wait_for(closed.get(), 10)
    assert not proxy.proxy.connections
    # A real client is still served.
    assert (await get_over_tls(port, ca)).startswith(b"HTTP/1.1 200 ")


@pytest.mark.parametrize("cap", ["max_connections = 2", "max_connections_per_client = 2"])
async def test_connections_count_toward_the_caps_from_the_accept(backends, tmp_path, cap):
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    proxy = await backends.proxy(tls_listener(tmp_path, a.url, f'header_timeout = "30s"\n{cap}'))
    closed = watch_closes(proxy)
    port = proxy.address[1]
    # Two connections that never finish a handshake fill the cap...
    first = await asyncio.open_connection("127.0.0.1", port)
    second = await asyncio.open_connection("127.0.0.1", port)
    second[1].write(client_hello()[:20])
    # ...so a third, a well-behaved client, is closed before any handshake work.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await get_over_tls(port, ca)
    await asyncio.wait_for(closed.get(), 10)            # the refused one is forgotten
    assert len(proxy.proxy.connections) == 2
    # One of them leaves: the next client is served.
    first[1].close()
    await asyncio.wait_for(closed.get(), 10)
    assert (await get_over_tls(port, ca)).startswith(b"HTTP/1.1 200 ")
    second[1].close()


async def test_the_same_under_lbctl_serve_on_uvloop(backends, serve_process, tmp_path, free_port):
    """The serve process runs uvloop, whose TLS layer is its own: the same limits hold."""
    ca = trustme.CA()
    write_pair(ca, tmp_path)
    a = await backends.start("a")
    port = free_port()
    (tmp_path / "lb.toml").write_text(f'''
[listen]
address = "127.0.0.1:{port}"
tls = {{ cert = "server.pem", key = "server-key.pem" }}

[limits]
header_timeout = "300ms"
max_connections = 2

[[routes]]
pool = "api"
''' + pool(a.url))
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    silent = await asyncio.open_connection("127.0.0.1", port)
    half = await asyncio.open_connection("127.0.0.1", port)
    half[1].write(client_hello()[:40])
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await get_over_tls(port, ca)                # over the cap while both handshake
    for reader, writer in (silent, half):
        assert await asyncio.wait_for(reader.read(-1), 10) == b""
        writer.close()
    # Both were closed at the handshake deadline, freeing the cap: a client is served.
    assert (await get_over_tls(port, ca)).startswith(b"HTTP/1.1 200 ")
    assert [line for line in proc.lines if "connection limit reached" in line]
