"""End to end: a backend killed under load stops receiving traffic (after ``fall`` failed
probes, or after N passive failures), comes back gradually after it recovers, and the logs
tell the story, one line per change. No client sees an error meanwhile: retries cover the
requests that met the dead backend before it was taken out."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp

from lbctl.config.model import Health, Outlier
from tests.health_support import LogLines, get, kill, load, proxy, revive, start
from tests.support import backend_config, config


class LoadLoop:
    """Sequential requests through the proxy until stopped (bounded, in case a test breaks)."""

    def __init__(self, port: int, limit: int = 20_000) -> None:
        self.port, self.limit = port, limit
        self.results: list[tuple[int, str]] = []
        self.stopped = False
        self.progress = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async with aiohttp.ClientSession() as session:
            while not self.stopped and len(self.results) < self.limit:
                status, who, _ = await get(session, self.port)
                self.results.append((status, who))
                self.progress.set()

    async def more(self, n: int) -> list[tuple[int, str]]:
        """Wait for ``n`` further requests to complete; return them."""
        start = len(self.results)
        while len(self.results) < start + n:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), 10)
        return self.results[start:start + n]

    async def stop(self) -> None:
        self.stopped = True
        await asyncio.wait_for(self.task, 10)


async def test_killed_backend_leaves_after_fall_probes_and_ramps_back_after_rise(backends):
    a, _ = await start(backends, "a")
    b, _ = await start(backends, "b")
    # A generous timeout: a loaded test machine must not fail a probe before the kill.
    health = Health(path="/healthz", interval=0.05, timeout=2.0, rise=2, fall=2)
    probes: list[tuple[str, bool, bool]] = []
    flips = {"down": asyncio.Event(), "up": asyncio.Event()}

    def on_probe(pool, backend, result, flipped):
        if backend.name == "b":
            probes.append((backend.name, result.ok, flipped))
            if flipped:
                flips["up" if backend.healthy else "down"].set()
    cfg = config({"p": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                 algorithm="weighted", slow_start=30.0, retries=1, health=health)
    with LogLines() as log:
        server = await proxy(backends, cfg, on_probe=on_probe)
        rb = server.runtime.pools["p"].pool.by_name["b"]
        traffic = LoadLoop(server.address[1])
        assert Counter(who for _, who in await traffic.more(20)) == {"a": 10, "b": 10}

        killed_at = len(probes)         # before: probes fail as soon as the listener closes
        await kill(b)
        await asyncio.wait_for(flips["down"].wait(), 10)
        # Out at the end of a streak of exactly `fall` failed probes, all after the kill
        # (one probe may have been in flight at the kill).
        assert probes[-health.fall:] == [("b", False, False)] * (health.fall - 1) + \
            [("b", False, True)]
        assert health.fall <= len(probes) - killed_at <= health.fall + 1
        started_at_flip = rb.started
        assert {who for _, who in await traffic.more(50)} == {"a"}
        assert rb.started == started_at_flip            # not even a connect attempt

        await revive(b)
        await asyncio.wait_for(flips["up"].wait(), 10)
        assert rb.eligible and rb.effective_weight < rb.weight     # ramping, not at full weight
        share = Counter(who for _, who in await traffic.more(110))["b"] / 110
        # Slow start begins at 10% of the weight: about 1/11 of the traffic, not half.
        assert 0 < share < 0.2
        await traffic.stop()

    assert all(status == 200 for status, _ in traffic.results)   # no client saw the outage
    assert log.matching("backend b") == [
        "pool p: backend b is DOWN (2 failed probes, last: connection refused)",
        "pool p: backend b is UP (2 successful probes, last: status 200)"]


async def test_killed_backend_is_ejected_after_n_passive_failures_and_readmitted(backends, clock):
    a, _ = await start(backends, "a")
    b, _ = await start(backends, "b")
    outlier = Outlier(consecutive_failures=3, ejection_time=10.0)
    cfg = config({"p": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                 outlier=outlier, retries=1)
    with LogLines() as log:
        server = await proxy(backends, cfg, clock=clock)
        rb = server.runtime.pools["p"].pool.by_name["b"]
        port = server.address[1]
        assert Counter(who for _, who in await load(port, 10)) == {"a": 5, "b": 5}

        await kill(b)
        before = rb.started
        results = await load(port, 20)
        assert results == [(200, "a")] * 20             # each failed attempt was retried on a
        # The first attempt may meet a kept-alive connection that the kill reset; either
        # way, exactly `consecutive_failures` attempts reached b before it was ejected.
        assert rb.started - before == outlier.consecutive_failures
        assert rb.state == "ejected"
        assert log.matching("EJECTED") == [
            "pool p: backend b EJECTED for 10s after 3 consecutive failures (last: connect)"]

        await revive(b)
        clock.advance(10.0)
        assert Counter(who for _, who in await load(port, 10)) == {"a": 5, "b": 5}
        assert rb.state == "up"
