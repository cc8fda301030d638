"""Rate limits shared through a real Redis by real ``lbctl serve`` processes: one limit for
two instances, each ``on_error`` policy when Redis is killed under load (never a 500), the
limit shared again right after Redis comes back, and a password that never shows."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from tests.process import ENV as PROCESS_ENV, LBCTL, LbctlProcess
from tests.redis_support import PASSWORD, RedisServer
from tests.support import free_port

BURST = 20
# 20 per minute, burst 20: over a burst of a second or two, at most one token comes back.
LIMIT = f'{{ rate = {BURST}, per = "1m", burst = {BURST} }}'


def write_config(path, port: int, backend_url: str, store: str, limit: str = LIMIT,
                 admin_port: int | None = None) -> str:
    admin = f'[admin]\naddress = "127.0.0.1:{admin_port}"\n' if admin_port else ""
    path.write_text(f'''
[listen]
address = "127.0.0.1:{port}"

{admin}
[store]
{store}

[[routes]]
pool = "p"
rate_limit = {limit}

[pools.p]
[[pools.p.backends]]
url = "{backend_url}"
''')
    return str(path)


def redis_store(server: RedisServer, on_error: str = "local", timeout: str = "1s") -> str:
    # A generous timeout: the machine is shared, and a slow answer would (rightly) count
    # as the store being down. The password comes from the environment.
    return (f'backend = "redis"\nurl = "{server.bare_url}"\npassword_env = "LB_REDIS_PASSWORD"\n'
            f'timeout = "{timeout}"\non_error = "{on_error}"\n')


ENV = {"LB_REDIS_PASSWORD": PASSWORD}


@pytest.fixture
def serve(serve_process):
    async def start(config: str, env: dict | None = None) -> LbctlProcess:
        proc = await serve_process("serve", config, env=ENV if env is None else env)
        await proc.wait_for_log("listening on")
        return proc
    return start


@pytest.fixture
async def own_redis():
    """A redis-server of this test's own, to kill and restart."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()


async def flush(server: RedisServer) -> None:
    client = server.client()
    await client.flushdb()
    await client.aclose()


async def burst(ports: list[int], each: int, concurrency: int = 8) -> list[list[int]]:
    """``each`` requests to every port at once, ``concurrency`` in flight per port: the
    statuses per port."""
    async def side(session: aiohttp.ClientSession, port: int) -> list[int]:
        statuses: list[int] = []
        todo = iter(range(each))

        async def worker():
            for _ in todo:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                    statuses.append(resp.status)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return statuses

    async with aiohttp.ClientSession() as session:
        return list(await asyncio.wait_for(
            asyncio.gather(*(side(session, p) for p in ports)), timeout=60))


def assert_one_limit(sides: list[list[int]], elapsed: float) -> None:
    """Two sides, one bucket: the accepted total is the burst plus what refilled while the
    burst lasted (20/min: at most one token a few seconds), never a bucket per side."""
    statuses = [s for side in sides for s in side]
    accepted = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert BURST <= accepted <= BURST + 1 + int(elapsed * BURST / 60), (accepted, elapsed)
    assert all(side.count(200) > 0 for side in sides)      # both really took part


async def test_two_instances_share_one_limit(backends, serve, tmp_path, redis_server):
    await flush(redis_server)
    a = await backends.start("a")
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        await serve(write_config(tmp_path / f"lb{i}.toml", port, a.url, redis_store(redis_server)))
    started = time.monotonic()
    sides = await burst(ports, each=2 * BURST)
    assert_one_limit(sides, time.monotonic() - started)


async def test_one_instance_alone_has_a_bucket_of_its_own_without_redis(backends, serve, tmp_path):
    # The reference: the same two instances on the local store let through one bucket each.
    a = await backends.start("a")
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        await serve(write_config(tmp_path / f"lb{i}.toml", port, a.url, 'backend = "local"'))
    sides = await burst(ports, each=2 * BURST)
    assert [side.count(200) for side in sides] == [BURST, BURST]


class Load:
    """A bounded load loop: ``workers`` clients in a loop until stopped (or ``limit``
    requests, or ``seconds``), every response recorded with the time it was sent."""

    def __init__(self, port: int, workers: int = 4, limit: int = 3000, seconds: float = 30) -> None:
        self.port, self.workers, self.limit, self.seconds = port, workers, limit, seconds
        self.records: list[tuple[float, int, dict]] = []
        self.stopped = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        deadline = time.monotonic() + self.seconds
        async with aiohttp.ClientSession() as session:
            async def worker():
                while not self.stopped.is_set() and len(self.records) < self.limit \
                        and time.monotonic() < deadline:
                    sent = time.monotonic()
                    async with session.get(f"http://127.0.0.1:{self.port}/") as resp:
                        await resp.read()
                        self.records.append((sent, resp.status, dict(resp.headers)))
            await asyncio.gather(*(worker() for _ in range(self.workers)))

    async def until(self, condition, timeout: float = 10) -> None:
        """Wait (bounded) until ``condition(records)`` holds."""
        deadline = time.monotonic() + timeout
        while not condition(self.records):
            assert time.monotonic() < deadline and not self.task.done(), "load ended first"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopped.set()
        await asyncio.wait_for(self.task, 30)


async def metric(admin_port: int, name: str) -> float:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
            text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.mark.parametrize("on_error", ["local", "open", "closed"])
async def test_redis_killed_under_load(backends, serve, tmp_path, own_redis, on_error):
    a = await backends.start("a")
    port, admin_port = free_port(), free_port()
    proc = await serve(write_config(tmp_path / "lb.toml", port, a.url,
                                    redis_store(own_redis, on_error),
                                    limit='{ rate = 1, per = "1m", burst = 5 }',
                                    admin_port=admin_port))
    await proc.wait_for_log(r"store redis://127\.0\.0\.1:\d+/0: up")
    load = Load(port)
    load.start()
    try:
        # The shared bucket is used up: Redis is deciding.
        await load.until(lambda records: sum(1 for r in records if r[1] == 429) >= 10)
        assert await metric(admin_port, "lbctl_store_up") == 1
        own_redis.kill()
        line = len(proc.lines)
        await proc.wait_for_log(r"store redis://\S+: down", start=0)
        noticed = time.monotonic()
        await load.until(lambda records: sum(1 for r in records if r[0] > noticed) >= 60)
    finally:
        await load.stop()
    statuses = [status for _, status, _ in load.records]
    assert 500 not in statuses and not {502, 504} & set(statuses)
    after = [(status, headers) for sent, status, headers in load.records if sent > noticed]
    if on_error == "local":
        # This instance's own bucket, new and full: 5 more, then 429s with the limit's headers.
        assert [s for s, _ in after].count(200) <= 5 + 1
        assert {s for s, _ in after} <= {200, 429} and 429 in {s for s, _ in after}
        assert all("RateLimit" in h for _, h in after)
    elif on_error == "open":
        assert {s for s, _ in after} == {200}
        assert all("RateLimit" not in h for _, h in after)      # nothing was counted
    else:
        assert {s for s, _ in after} == {503}
        assert all(h.get("Retry-After") == "1" for _, h in after)
    assert await metric(admin_port, "lbctl_store_up") == 0
    assert await metric(admin_port, "lbctl_store_errors_total") >= 1
    # Logged once, however many requests hit the dead store.
    assert sum(1 for text in proc.lines[line:] if ": down (" in text) == 1


async def test_redis_restarted_shares_the_limit_again_within_a_second(
        backends, serve, tmp_path, own_redis):
    a = await backends.start("a")
    ports = [free_port(), free_port()]
    procs = [await serve(write_config(tmp_path / f"lb{i}.toml", port, a.url,
                                      redis_store(own_redis)))
             for i, port in enumerate(ports)]
    own_redis.kill()
    # Each instance notices at its next request.
    await burst(ports, each=2)
    for proc in procs:
        await proc.wait_for_log(r"store \S+: down")
    own_redis.start()               # same port, empty (no persistence), as after a crash
    back = time.monotonic()
    for proc in procs:
        await proc.wait_for_log(r"store \S+: up again", timeout=max(0.1, back + 1.0 - time.monotonic()))
    started = time.monotonic()
    sides = await burst(ports, each=2 * BURST)
    assert_one_limit(sides, time.monotonic() - started)


async def test_the_password_never_shows(backends, serve, tmp_path, redis_server):
    await flush(redis_server)
    a = await backends.start("a")
    port, admin_port = free_port(), free_port()
    # The password in the URL this time.
    config = write_config(tmp_path / "lb.toml", port, a.url,
                          f'backend = "redis"\nurl = "{redis_server.url}"\ntimeout = "1s"',
                          admin_port=admin_port)
    proc = await serve(config, env={})
    await proc.wait_for_log("store redis://127.0.0.1:")
    assert (await burst([port], each=3))[0] == [200, 200, 200]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin_port}/stats") as resp:
            stats = await resp.text()
        async with session.get(f"http://127.0.0.1:{admin_port}/metrics") as resp:
            metrics = await resp.text()
    assert json.loads(stats)["store"] == {"backend": "redis", "url": redis_server.bare_url,
                                          "up": True, "errors": 0, "on_error": "local"}
    # A wrong password is a logged failure that does not show the wrong one either.
    wrong = "wrong-" + PASSWORD[::-1]
    bad = write_config(tmp_path / "bad.toml", free_port(), a.url,
                       f'backend = "redis"\nurl = "{redis_server.url.replace(PASSWORD, wrong)}"\n'
                       f'timeout = "1s"')
    bad_proc = await serve(bad, env={})
    await bad_proc.wait_for_log("authentication failed")
    effective = await (await asyncio.create_subprocess_exec(
        *_lbctl("validate", "--effective", config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=PROCESS_ENV)).communicate()
    broken = tmp_path / "broken.toml"
    broken.write_text(open(config).read().replace("/0\"", "/zero\""))
    invalid = await (await asyncio.create_subprocess_exec(
        *_lbctl("validate", str(broken)), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=PROCESS_ENV)).communicate()
    for proc_ in (proc, bad_proc):
        proc_.kill()
        await proc_.proc.wait()
    texts = {"serve log": "\n".join(proc.lines), "bad serve log": "\n".join(bad_proc.lines),
             "/stats": stats, "/metrics": metrics, "validate --effective": effective[0].decode(),
             "validate (invalid url)": invalid[0].decode()}
    assert "store.url had a password, not shown" in texts["validate --effective"]
    assert "store.url: expected a Redis URL" in texts["validate (invalid url)"]
    for where, text in texts.items():
        assert PASSWORD not in text and wrong not in text, where


def _lbctl(*args: str) -> list[str]:
    return [LBCTL, *args]
