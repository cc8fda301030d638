"""Start lbctl's proxy from config objects built in code, for the benchmark only.

Used by ``bench/proxy.py`` while ``lbctl.config.loader`` does not exist yet; once it does,
the harness runs the real ``lbctl serve CONFIG.toml`` and this file can go.

    python bench/lbctl_launch.py PORT BACKEND_URL [BACKEND_URL ...]

Runs ``ProxyServer`` on uvloop with every default feature (round_robin over the backends,
retries = 1, default limits and timeouts) until SIGTERM or SIGINT, then drains and exits 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from lbctl.config.model import Address, BackendConfig, Config, Listen, PoolConfig, Route
from lbctl.proxy.server import ProxyServer


def build_config(port: int, urls: list[str]) -> Config:
    backends = []
    for url in urls:
        hostport = url.split("://", 1)[1].rstrip("/")
        host, _, p = hostport.rpartition(":")
        backends.append(BackendConfig(url=url, name=hostport, scheme="http", host=host,
                                      port=int(p)))
    pool = PoolConfig(name="bench", backends=tuple(backends))
    return Config(path="<bench>", listen=Listen(Address("127.0.0.1", port)),
                  routes=(Route(pool="bench"),), pools=Config.freeze({"bench": pool}))


async def run(config: Config) -> int:
    loop = asyncio.get_running_loop()
    server = ProxyServer(config)
    await server.start()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.drain(config.limits.drain_timeout)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    config = build_config(int(argv[0]), argv[1:])
    import uvloop                 # as ``lbctl serve`` does when uvloop is installed
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
