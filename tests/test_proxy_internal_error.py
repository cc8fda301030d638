"""A bug inside the request flow (injected here: nothing a client sends is known to cause
one) costs that one request a 500 and its connection, never a silent cut or the process:
in the callbacks that start a request, and in the tasks that wait for a backend."""

from __future__ import annotations

import asyncio

import pytest

from lbctl.proxy import forward
from lbctl.proxy.router import Router
from tests.support import backend_config, config, raw_exchange


async def get(port: int, path: str) -> bytes:
    return await raw_exchange(port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())


@pytest.fixture
async def proxied(backends):
    a = await backends.start("a")
    instance = await backends.proxy(config({"p": [backend_config(a.url)]}))
    return instance.proxy.address[1]


async def test_a_bug_while_starting_a_request_is_a_500_and_a_close(proxied, monkeypatch,
                                                                   caplog):
    match = Router.match

    def broken(self, host, path):
        if path == "/boom":
            raise RuntimeError("injected")
        return match(self, host, path)
    monkeypatch.setattr(Router, "match", broken)
    answer = await asyncio.wait_for(get(proxied, "/boom"), 10)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nconnection: close\r\n" in answer.lower() and b"x-request-id: " in answer.lower()
    assert "internal error while handling a request" in caplog.text
    # Everyone else is served as before.
    ok = await asyncio.wait_for(raw_exchange(
        proxied, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"), 10)
    assert ok.startswith(b"HTTP/1.1 200 ")


async def test_a_bug_while_waiting_for_a_backend_is_a_500_and_a_close(proxied, monkeypatch):
    async def broken(*args, **kwargs):
        raise RuntimeError("injected")
    monkeypatch.setattr(forward, "_connect", broken)
    answer = await asyncio.wait_for(get(proxied, "/"), 10)
    assert answer.startswith(b"HTTP/1.1 500 ")
    assert b"\r\nconnection: close\r\n" in answer.lower()
