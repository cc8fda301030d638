"""Demo backends: aiohttp apps that answer with their name in ``X-Backend``.

Each personality has a base latency and an error rate; ``/healthz`` answers 200 unless the
backend was told to fail its checks. Delays come from a seeded ``random.Random`` so a demo
run is repeatable.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from aiohttp import web


@dataclass
class Personality:
    name: str
    latency: float          # mean seconds per request
    error_rate: float       # fraction answered 500


PERSONALITIES = [
    Personality("fast", 0.005, 0.0),
    Personality("slow", 0.040, 0.0),
    Personality("flaky", 0.010, 0.15),
]


def demo_app(name: str, personality: Personality, seed: int = 1) -> web.Application:
    rng = random.Random(f"{seed}:{name}")

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        await asyncio.sleep(rng.expovariate(1.0 / personality.latency))
        if rng.random() < personality.error_rate:
            return web.Response(status=500, text=f"{name}: simulated failure\n",
                                headers={"X-Backend": name})
        return web.Response(text=f"hello from {name} ({personality.name})\n",
                            headers={"X-Backend": name})

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers={"X-Backend": name})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def start_backend(app: web.Application, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
