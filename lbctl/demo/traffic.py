"""Gentle built-in traffic for the demo: a bounded, paced request loop on loopback."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import aiohttp

from lbctl.config.model import Config


def targets(config: Config) -> list[tuple[str | None, str]]:
    """(Host header, path) pairs that reach each route."""
    out = []
    for route in config.routes:
        host = route.host
        if host and host.startswith("*."):
            host = "demo" + host[1:]
        path = route.path_prefix.rstrip("/") + "/demo"
        out.append((host, path))
    return out


async def drive(base_url: str, config: Config, rate: float, duration: float,
                stop: asyncio.Event, max_in_flight: int = 64, seed: int = 1) -> Counter:
    """Send about ``rate`` requests per second for ``duration`` seconds (or until ``stop``).
    Returns the count of responses by status (0 = connection error)."""
    rng = random.Random(seed)
    spots = targets(config)
    statuses: Counter = Counter()
    slots = asyncio.Semaphore(max_in_flight)
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    tasks: set[asyncio.Task] = set()
    timeout = aiohttp.ClientTimeout(total=10)

    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one(host: str | None, path: str) -> None:
            try:
                headers = {"Host": host} if host else {}
                async with session.get(base_url + path, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                statuses[0] += 1
            finally:
                slots.release()

        while not stop.is_set() and loop.time() < end:
            await slots.acquire()
            host, path = spots[rng.randrange(len(spots))]
            task = loop.create_task(one(host, path))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            try:
                await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
            except asyncio.TimeoutError:
                pass
        if tasks:
            await asyncio.wait(tasks, timeout=10)
    return statuses
