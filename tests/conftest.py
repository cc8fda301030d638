"""Shared fixtures: real aiohttp backends on loopback and an in-process proxy in front of them."""

from __future__ import annotations

import pytest

from lbctl.balancing import Pool

from tests.support import Backends


@pytest.fixture
async def backends():
    group = Backends()
    yield group
    await group.close()


@pytest.fixture
def sends(monkeypatch):
    """Every attempt the pool is told of, as (virtual time, backend name)."""
    log = []
    original = Pool.on_start

    def on_start(self, b):
        log.append((self.clock(), b.name))
        original(self, b)

    monkeypatch.setattr(Pool, "on_start", on_start)
    return log


@pytest.fixture(scope="session")
def redis_server():
    """One real redis-server (password required) for the whole session; stopped by PID."""
    from tests.redis_support import RedisServer
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()
