"""CPU cost of observability per request, measured in-process (steadier than req/s on a
shared machine): the per-attempt hook, the per-request hook, and an access-log line.

    python bench/observe_cost.py

Compare the microseconds printed with the benchmark's CPU time per request (``us/req`` in
``bench/proxy.py``) to get the share of the proxy's work.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lbctl.balancing import Backend  # noqa: E402
from lbctl.config.model import (Address, Admin, BackendConfig, Config, Listen, Log,  # noqa: E402
                                PoolConfig, Route)
from lbctl.balancing import Outcome  # noqa: E402
from lbctl.proxy.exchange import Exchange  # noqa: E402

N = 200_000


class FakeServer:
    def __init__(self, config, loop) -> None:
        from lbctl.proxy.runtime import build_runtime
        import random
        self.loop = loop
        self.runtime = build_runtime(config, clock=loop.time, rng=random.Random(1))


class FakeConn:
    def __init__(self, server) -> None:
        self.server = server
        self.loop = server.loop
        self.peer = "127.0.0.1"
        self.transport = None


def config(metrics: bool, access: str = "off") -> Config:
    b = BackendConfig(url="http://127.0.0.1:1", name="b1", scheme="http", host="127.0.0.1", port=1)
    pools = Config.freeze({"p": PoolConfig(name="p", backends=(b,))})
    return Config(path="<bench>", listen=Listen(Address("127.0.0.1", 0)),
                  routes=(Route(pool="p"),), pools=pools,
                  admin=Admin(Address("127.0.0.1", 0), metrics=metrics),
                  log=Log(access=access, format="json"))


async def measure(metrics: bool, access: str = "off") -> float:
    from lbctl.observe.observer import Observer
    loop = asyncio.get_running_loop()
    cfg = config(metrics, access)
    server = FakeServer(cfg, loop)
    observer = Observer(cfg)
    server.observer = observer
    conn = FakeConn(server)
    req = Exchange(conn)
    req.method, req.target, req.path, req.host = b"GET", b"/x", "/x", b"h"
    req.headers = [(b"Host", b"h"), (b"User-Agent", b"wrk")]
    req.status, req.request_id = 200, b"abc-1"
    state = server.runtime.pools["p"]
    backend: Backend = state.pool.backends[0]

    end = observer.request_end
    start = time.process_time()
    for _ in range(N):
        req.begun = started = loop.time()
        req.attempts = 1
        req.sent += 28
        observer.attempt(req, state, backend, Outcome.OK, started, 0.0001)
        if end is not None:
            end(req, False)
    elapsed = time.process_time() - start
    observer.close()
    return elapsed / N * 1e6


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        log = str(Path(tmp) / "access.log")
        for _ in range(2):                                 # second pass: warm
            off = await measure(False)
            on = await measure(True)
            logged = await measure(True, log)
        print(f"metrics off (hooks are no-ops):   {off:6.2f} us/request")
        print(f"metrics on:                       {on:6.2f} us/request (+{on - off:.2f})")
        print(f"metrics on + JSON access log:     {logged:6.2f} us/request (+{logged - off:.2f})")


if __name__ == "__main__":
    asyncio.run(main())
