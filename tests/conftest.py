"""Shared fixtures, the one place each is defined.

* ``backends``: real aiohttp backends on loopback, and in-process instances of ``serve`` in
  front of them (``tests.support.Backends``), all closed after the test;
* ``free_port``: a function giving a loopback port with nothing listening;
* ``clock``: a clock the test moves by hand (``tests.support.ManualClock``);
* ``write_config``: a function writing a serve config file into the test's directory;
* ``serve_process``: a function starting ``lbctl serve`` (or any command) as a real process,
  each one killed after the test;
* ``sends``: every attempt a pool is told of, as (virtual time, backend name).

Every test has a time limit (``timeout`` in pyproject.toml): a hang fails that test with a
traceback.
"""

from __future__ import annotations

from typing import Callable

import pytest

from lbctl.balancing import Pool
from tests.process import LbctlProcess
from tests.support import Backends, ManualClock, free_port as _free_port


@pytest.fixture
async def backends():
    group = Backends()
    yield group
    await group.close()


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Call it for a loopback port with nothing listening (bound, then released)."""
    return _free_port


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def write_config(tmp_path):
    """``write_config(pools, health, port=..., extra=..., named=..., name=...)``: a serve
    config file in the test's directory; returns its path (a str, as a command line takes it).

    ``pools`` maps each pool to its backend URLs; the first pool gets the one route. Every
    pool is round_robin, with its ``[health]`` body from ``health`` when given; ``extra`` is
    top-level TOML put after ``[listen]``. Backends are named POOL-1, POOL-2... unless
    ``named`` is False (then their name is their address, the config's default). Writing the
    same ``name`` again replaces the file (a reload)."""

    def write(pools: dict[str, list[str]], health: dict[str, str] | None = None, *,
              port: int = 8080, extra: str = "", named: bool = True, name: str = "lb.toml") -> str:
        health = health or {}
        lines = ["[listen]", f'address = "127.0.0.1:{port}"', "", extra, "",
                 "[[routes]]", f'pool = "{next(iter(pools))}"']
        for pool, urls in pools.items():
            lines += ["", f"[pools.{pool}]", 'algorithm = "round_robin"']
            if pool in health:
                lines += [f"[pools.{pool}.health]", health[pool]]
            for i, url in enumerate(urls, 1):
                lines += [f"[[pools.{pool}.backends]]", f'url = "{url}"']
                if named:
                    lines.append(f'name = "{pool}-{i}"')
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return str(path)
    return write


@pytest.fixture
async def serve_process():
    """``await serve_process("serve", path)``: ``lbctl`` as a real process (an
    ``LbctlProcess``), killed after the test if still running."""
    started: list[LbctlProcess] = []

    async def start(*args: str, env: dict | None = None) -> LbctlProcess:
        proc = await LbctlProcess.start(*args, env=env)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.kill()
        await proc.proc.wait()


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
