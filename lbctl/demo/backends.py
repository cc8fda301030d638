"""Demo backends: aiohttp apps that answer with their name in ``X-Backend``.

Each personality has a base latency and an error rate. The flaky one also has outages: for
``outage_for`` seconds of every ``outage_every`` it answers every request with 500 and
``/healthz`` with 503, so the proxy's health checks take it out and bring it back while the
demo runs. Delays come from a seeded ``random.Random`` so a demo run is repeatable.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Callable

from aiohttp import web


@dataclass
class Personality:
    name: str
    latency: float              # mean seconds per request
    error_rate: float           # fraction answered 500 outside outages
    outage_every: float = 0.0   # seconds from one outage's start to the next; 0 = never
    outage_for: float = 0.0     # how long each outage lasts
    outage_after: float = 0.0   # when the first one starts, from the backend's start

    def in_outage(self, elapsed: float) -> bool:
        if not self.outage_every or elapsed < self.outage_after:
            return False
        return (elapsed - self.outage_after) % self.outage_every < self.outage_for


PERSONALITIES = [
    Personality("fast", 0.005, 0.0),
    Personality("slow", 0.040, 0.0),
    # Within a 30 s demo: fine for 10 s, down for 12 s (health checks notice within a few
    # seconds and take it out), back for the rest; then again every minute.
    Personality("flaky", 0.010, 0.05, outage_every=60.0, outage_for=12.0, outage_after=10.0),
]


def demo_app(name: str, personality: Personality, seed: int = 1,
             clock: Callable[[], float] | None = None) -> web.Application:
    """``clock`` (seconds, any origin) times the outages; the event loop's by default."""
    rng = random.Random(f"{seed}:{name}")
    now = clock or (lambda: asyncio.get_running_loop().time())
    started: list[float] = []

    def in_outage() -> bool:
        if not started:
            started.append(now())
        return personality.in_outage(now() - started[0])

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        if in_outage():
            return web.Response(status=500, text=f"{name}: outage\n",
                                headers={"X-Backend": name})
        await asyncio.sleep(rng.expovariate(1.0 / personality.latency))
        if rng.random() < personality.error_rate:
            return web.Response(status=500, text=f"{name}: simulated failure\n",
                                headers={"X-Backend": name})
        return web.Response(text=f"hello from {name} ({personality.name})\n",
                            headers={"X-Backend": name})

    async def healthz(request: web.Request) -> web.Response:
        if in_outage():
            return web.Response(status=503, text="outage\n", headers={"X-Backend": name})
        return web.Response(text="ok\n", headers={"X-Backend": name})

    async def on_startup(app: web.Application) -> None:
        started.append(now())

    app = web.Application()
    app.on_startup.append(on_startup)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_backend(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port (0: any free port; ``bound_port(runner)`` tells which)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return runner.addresses[0][1]
