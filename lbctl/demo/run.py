"""Run the demo: backends on the ports the config names, the proxy, traffic, and the same
live dashboard ``lbctl stats`` shows."""

from __future__ import annotations

import asyncio
import signal
import time
from importlib import resources

from rich.console import Console
from rich.live import Live

from lbctl.config.kinds import is_loopback
from lbctl.config.loader import load_config
from lbctl.demo.backends import PERSONALITIES, demo_app, start_backend
from lbctl.demo.traffic import drive
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.observe.render import dashboard
from lbctl.observe.snapshot import snapshot
from lbctl.serve.instance import Instance


def packaged_config() -> str:
    return str(resources.files("lbctl.demo") / "sample.toml")


async def run_demo(config_path: str, *, load: float, duration: float | None,
                   console: Console) -> int:
    config = load_config(config_path)
    listen = config.listen.address
    if not is_loopback(listen.host):
        raise UserError(f"{config_path}: the demo listens on loopback only, not {listen}")
    runners = []
    started_at = time.time()
    instance = None
    try:
        seen = {}
        for pool in config.pools.values():
            for i, b in enumerate(pool.backends):
                if not is_loopback(b.host) or (b.host, b.port) in seen:
                    continue
                personality = PERSONALITIES[len(seen) % len(PERSONALITIES)]
                seen[(b.host, b.port)] = b.name
                try:
                    runners.append(await start_backend(demo_app(b.name, personality),
                                                       b.host, b.port))
                except OSError as exc:
                    raise UserError(f"cannot start demo backend {b.name} on {b.host}:{b.port}: "
                                    f"{exc.strerror or exc}", exit_code=Exit.RUNTIME) from None
                console.print(f"demo backend [bold]{b.name}[/] ({personality.name}) "
                              f"on http://{b.host}:{b.port}")
        instance = Instance(config)
        await instance.start()
        host, port = instance.address[:2]
        base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        console.print(f"proxy listening on [bold]{base}[/]  (try: curl -i {base}/)")
        if instance.admin is not None:
            ahost, aport = instance.admin.bound
            console.print(f"admin API on [bold]http://{ahost}:{aport}[/]  "
                          f"(try: lbctl stats --admin http://{ahost}:{aport})")

        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        traffic = None
        if load > 0:
            traffic = loop.create_task(drive(base, config, load, duration or 1e9, stop))
        end = loop.time() + duration if duration else float("inf")

        def view():
            return dashboard(snapshot(instance.runtime, instance.observer, instance.health,
                                      loop.time(), started_at=started_at))

        with Live(view(), console=console,
                  refresh_per_second=2, transient=False, auto_refresh=False) as live:
            while not stop.is_set() and loop.time() < end:
                try:
                    await asyncio.wait_for(stop.wait(), min(1.0, max(end - loop.time(), 0.01)))
                except asyncio.TimeoutError:
                    pass
                live.update(view(), refresh=True)
        stop.set()
        if traffic is not None:
            statuses = await traffic
            summary = ", ".join(f"{count} x {status or 'error'}"
                                for status, count in sorted(statuses.items()))
            console.print(f"demo traffic: {sum(statuses.values())} requests ({summary})")
        return Exit.OK
    finally:
        if instance is not None:
            await instance.drain(2.0)
        for runner in runners:
            await runner.cleanup()
