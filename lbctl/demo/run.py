"""Run the demo: backends on the ports the config names, the proxy, traffic, and the same
live dashboard ``lbctl stats`` shows.

With the packaged sample (``free_ports``), a port that is taken is replaced by a free one and
the demo says so: a newcomer's first command must not fail because something else on the
machine uses 8080. With the user's own config, a taken port is an error that names the port
and the key to change, since their config is what they asked for.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import time
from dataclasses import replace
from importlib import resources

from rich.console import Console
from rich.live import Live

from lbctl.config.kinds import is_loopback, split_store_url
from lbctl.config.loader import load_config
from lbctl.config.model import Address, Config
from lbctl.demo.backends import PERSONALITIES, bound_port, demo_app, start_backend
from lbctl.demo.traffic import drive
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.observe.render import dashboard
from lbctl.observe.snapshot import snapshot
from lbctl.serve.instance import Instance


def packaged_config() -> str:
    return str(resources.files("lbctl.demo") / "sample.toml")


def _taken(where: str, address: Address, key: str, config_path: str) -> UserError:
    return UserError(f"{where} {address} is already in use: change {key} in {config_path} "
                     f"(or stop what uses the port)", exit_code=Exit.RUNTIME)


def _port_in_use(address: Address) -> bool:
    """Whether binding address would fail now (as the proxy binds: with SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address.host, address.port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def _moved_backends(config: Config, moved: dict[tuple[str, int], int]) -> Config:
    """``config`` with the demo backends that had to move pointing at their new ports."""
    pools = {}
    for name, pool in config.pools.items():
        backends = []
        for b in pool.backends:
            port = moved.get((b.host, b.port))
            if port is not None:
                b = replace(b, port=port, url=f"{b.scheme}://{Address(b.host, port)}")
            backends.append(b)
        pools[name] = replace(pool, backends=tuple(backends))
    return replace(config, pools=Config.freeze(pools))


def _on_this_machine(config, config_path: str) -> None:
    """Everything the demo sends (its traffic, through the proxy, and the health probes)
    stays on this machine: a backend elsewhere, or one found by discovery, is refused."""
    for name, pool in config.pools.items():
        if pool.discovery is not None:
            raise UserError(f"{config_path}: pools.{name}.discovery: the demo runs its own "
                            "backends on loopback; use lbctl serve for discovered ones")
        for i, b in enumerate(pool.backends):
            if not is_loopback(b.host):
                raise UserError(f"{config_path}: pools.{name}.backends[{i}].url: the demo "
                                f"sends traffic on loopback only, not to {b.host}; use lbctl "
                                "serve for backends elsewhere")
    if config.store.backend == "redis":
        address = split_store_url(config.store.url)
        if address.scheme != "unix" and not is_loopback(address.host):
            raise UserError(f"{config_path}: store.url: the demo talks to this machine only, "
                            f"not to {address.host}; use lbctl serve with a shared store")


async def run_demo(config_path: str, *, load: float, duration: float | None,
                   console: Console, free_ports: bool = False) -> int:
    config = load_config(config_path)
    listen = config.listen.address
    if not is_loopback(listen.host):
        raise UserError(f"{config_path}: the demo listens on loopback only, not {listen}")
    _on_this_machine(config, config_path)
    runners = []
    started_at = time.time()
    instance = None
    try:
        seen = {}
        moved: dict[tuple[str, int], int] = {}
        for pool in config.pools.values():
            for i, b in enumerate(pool.backends):
                if not is_loopback(b.host) or (b.host, b.port) in seen:
                    continue
                personality = PERSONALITIES[len(seen) % len(PERSONALITIES)]
                seen[(b.host, b.port)] = b.name
                port = b.port
                try:
                    runner = await start_backend(demo_app(b.name, personality), b.host, port)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise UserError(f"cannot start demo backend {b.name} on "
                                        f"{b.host}:{b.port}: {exc.strerror or exc}",
                                        exit_code=Exit.RUNTIME) from None
                    if not free_ports:
                        raise _taken(f"demo backend {b.name}'s address",
                                     Address(b.host, b.port),
                                     f"the url of backend {b.name}", config_path) from None
                    runner = await start_backend(demo_app(b.name, personality), b.host, 0)
                    port = moved[(b.host, b.port)] = bound_port(runner)
                    console.print(f"port {b.port} is taken: demo backend {b.name} moves to "
                                  f"{port}")
                runners.append(runner)
                console.print(f"demo backend [bold]{b.name}[/] ({personality.name}) "
                              f"on http://{Address(b.host, port)}")
        if moved:
            config = _moved_backends(config, moved)
        for who, section in (("the proxy", "listen"), ("the admin API", "admin")):
            current = getattr(config, section)
            if current is None or not _port_in_use(current.address):
                continue
            if not free_ports:
                raise _taken(f"{who}'s address", current.address, f"[{section}] address",
                             config_path)
            console.print(f"port {current.address.port} is taken: {who} moves to a free port")
            config = replace(config, **{section: replace(
                current, address=Address(current.address.host, 0))})
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
        if not console.is_terminal:
            console.line()          # a file gets the last frame without its line end
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
