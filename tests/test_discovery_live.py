"""Discovery and run-time membership on a live proxy: a real DNS server on loopback (dnslib)
whose answers change during the test, real backends on loopback addresses, real requests.

Backends found through A records share one port, so each listens on its own loopback address
(127.0.0.2, 127.0.0.3, ...: all of 127.0.0.0/8 is the loopback interface on Linux).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections import Counter
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from lbctl.config.model import Address, Admin, Discovery, Health
from lbctl.observe.snapshot import snapshot
from lbctl.proxy.runtime import PoolRuntime

from tests.dns_support import DnsServer
from tests import support
from tests.support import backend_config, config, named_app

# Long enough for a busy CI machine, short enough to keep the suite quick: every wait below
# ends as soon as its condition holds, this is only the bound.
MARGIN = 5.0
INTERVAL = 0.3


@pytest.fixture
def zone():
    with DnsServer() as z:
        yield z


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def shared_port(hosts: list[str]) -> int:
    """A port free on every one of ``hosts`` (checked by binding each)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind((hosts[0], 0))
        port = probe.getsockname()[1]
        taken = [probe]
        try:
            for host in hosts[1:]:
                s = socket.socket()
                taken.append(s)
                s.bind((host, port))
            return port
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise RuntimeError("no port free on every loopback address")


async def start_at(backends, name: str, host: str, port: int, handler=None) -> support.TestBackend:
    """A backend answering with its name, on ``host:port``."""
    ref: list = [None]
    runner = web.AppRunner(named_app(name, ref, handler), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    backend = support.TestBackend(name, port, runner)
    ref[0] = backend
    backends.items.append(backend)
    return backend


def with_discovery(cfg, pool: str = "api", **kw):
    pools = dict(cfg.pools)
    pools[pool] = replace(pools[pool], discovery=Discovery(**kw))
    return replace(cfg, pools=cfg.freeze(pools))


async def until(predicate, what: str, timeout: float = MARGIN) -> None:
    """Wait for an observable condition (the sweep, traffic); fail naming it at the bound."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Client:
    def __init__(self, session, proxy) -> None:
        self.session = session
        self.proxy = proxy
        self.base = f"http://127.0.0.1:{proxy.address[1]}"

    async def get(self, path: str = "/") -> tuple[int, str]:
        async with self.session.get(self.base + path) as resp:
            await resp.read()
            return resp.status, resp.headers.get("X-Backend", "")

    async def names(self, n: int, path: str = "/") -> Counter:
        seen = Counter()
        for _ in range(n):
            status, name = await self.get(path)
            assert status == 200
            seen[name] += 1
        return seen

    async def admin(self, method: str, path: str, **kw) -> tuple[int, dict]:
        url = "http://127.0.0.1:%d%s" % (self.proxy.admin.bound[1], path)
        async with self.session.request(method, url, **kw) as resp:
            return resp.status, await resp.json()


def pool_state(proxy, pool: str = "api") -> PoolRuntime:
    return proxy.runtime.pools[pool]


def dns_config(zone, port, **pool_options):
    return with_discovery(config({"api": []}, **pool_options),
                          dns=Address("api.test", port), resolver=Address("127.0.0.1", zone.port),
                          interval=INTERVAL, timeout=0.5)


# ---- A records ------------------------------------------------------------------------------

async def test_a_new_record_gets_traffic_with_slow_start_and_survivors_keep_state(
        backends, session, zone):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    await start_at(backends, "b2", "127.0.0.2", port)
    b3 = await start_at(backends, "b3", "127.0.0.3", port)
    zone.set_a("api.test", ["127.0.0.2"])
    proxy = await backends.proxy(dns_config(zone, port, algorithm="weighted", slow_start=60.0))
    client = Client(session, proxy)
    # The first lookup was done before listening: the first request already has a backend.
    assert await client.names(3) == {"b2": 3}
    survivor = pool_state(proxy).pool.by_name["127.0.0.2:%d" % port]
    assert survivor.effective_weight == 1.0           # present at start: no ramp

    zone.set_a("api.test", ["127.0.0.2", "127.0.0.3"])
    watcher = proxy.discovery.watchers["api"]
    await watcher.wait(lambda w: len(w.discovered) == 2, timeout=INTERVAL + MARGIN)
    pool = pool_state(proxy).pool
    assert pool.by_name["127.0.0.2:%d" % port] is survivor     # the same live object...
    assert survivor.started == 3                                # ...with its counters
    newcomer = pool.by_name["127.0.0.3:%d" % port]
    assert newcomer.effective_weight < 0.2                      # joined with slow start
    await client.names(30)
    assert 1 <= len(b3.seen) < 10                               # some traffic, ramping


async def test_a_removed_record_drains_its_request_in_flight_and_gets_no_new_ones(
        backends, session, zone, caplog):
    caplog.set_level(logging.INFO)
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request, body):
        arrived.set()
        await release.wait()
        return web.Response(text="b2", headers={"X-Backend": "b2"})
    b2 = await start_at(backends, "b2", "127.0.0.2", port, slow)
    await start_at(backends, "b3", "127.0.0.3", port)
    zone.set_a("api.test", ["127.0.0.2", "127.0.0.3"])
    proxy = await backends.proxy(dns_config(zone, port))
    client = Client(session, proxy)
    pending = asyncio.ensure_future(client.get())       # round robin: 127.0.0.2 first
    await asyncio.wait_for(arrived.wait(), MARGIN)

    zone.set_a("api.test", ["127.0.0.3"])
    watcher = proxy.discovery.watchers["api"]
    await watcher.wait(lambda w: len(w.discovered) == 1, timeout=INTERVAL + MARGIN)
    state = pool_state(proxy)
    name = "127.0.0.2:%d" % port
    assert name not in state.pool.by_name and [b.name for b in state.leaving] == [name]
    stats = snapshot(proxy.runtime, proxy.observer, proxy.health, proxy.loop.time(),
                     discovery=proxy.discovery)
    leaving = [b for b in stats["pools"][0]["backends"] if b["name"] == name]
    assert leaving[0]["state"] == "leaving" and leaving[0]["inflight"] == 1
    assert leaving[0]["source"] == "dns"                # where it came from, while it drains

    assert await client.names(6) == {"b3": 6}           # nothing new for the leaving one
    assert len(b2.seen) == 1
    release.set()
    assert await asyncio.wait_for(pending, MARGIN) == (200, "b2")   # it finished normally
    await until(lambda: not state.leaving, "the drained backend to be dropped")
    assert any(f"backend {name} left" in r.getMessage() for r in caplog.records)


async def test_nxdomain_empties_the_discovered_part_and_static_backends_keep_serving(
        backends, session, zone):
    port = shared_port(["127.0.0.2"])
    await start_at(backends, "found", "127.0.0.2", port)
    static = await backends.start("static")
    zone.set_a("api.test", ["127.0.0.2"])
    cfg = with_discovery(config({"api": [backend_config(static.url, "static")]}),
                         dns=Address("api.test", port), resolver=Address("127.0.0.1", zone.port),
                         interval=INTERVAL, timeout=0.5)
    proxy = await backends.proxy(cfg)
    client = Client(session, proxy)
    assert await client.names(4) == {"static": 2, "found": 2}
    zone.remove("api.test")
    watcher = proxy.discovery.watchers["api"]
    await watcher.wait(lambda w: w.status.state == "empty", timeout=INTERVAL + MARGIN)
    assert [b.name for b in pool_state(proxy).pool.backends] == ["static"]
    assert await client.names(6) == {"static": 6}


async def test_a_resolver_that_stops_answering_keeps_the_last_good_set(
        backends, session, zone, caplog):
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    await start_at(backends, "b2", "127.0.0.2", port)
    await start_at(backends, "b3", "127.0.0.3", port)
    zone.set_a("api.test", ["127.0.0.2", "127.0.0.3"])
    proxy = await backends.proxy(dns_config(zone, port))
    client = Client(session, proxy)
    zone.silent = True
    watcher = proxy.discovery.watchers["api"]
    await watcher.wait(lambda w: w.status.failures >= 2, timeout=2 * (INTERVAL + 0.5) + MARGIN)
    assert await client.names(6) == {"b2": 3, "b3": 3}
    failed = [r for r in caplog.records if "lookup failed" in r.getMessage()]
    assert len(failed) == 1 and "keeping the last good set of 2 backends" in failed[0].getMessage()


# ---- SRV ------------------------------------------------------------------------------------

async def test_an_srv_weight_change_shifts_the_share(backends, session, zone):
    a, b = await backends.start("a"), await backends.start("b")
    zone.set_a("a.test", ["127.0.0.1"])
    zone.set_a("b.test", ["127.0.0.1"])
    zone.set_srv("_http._tcp.api.test", [(1, 10, a.port, "a.test"), (1, 10, b.port, "b.test")])
    cfg = with_discovery(config({"api": []}, algorithm="weighted"),
                         srv="_http._tcp.api.test", resolver=Address("127.0.0.1", zone.port),
                         interval=INTERVAL, timeout=0.5)
    proxy = await backends.proxy(cfg)
    client = Client(session, proxy)
    assert await client.names(40) == {"a": 20, "b": 20}
    zone.set_srv("_http._tcp.api.test", [(1, 10, a.port, "a.test"), (1, 30, b.port, "b.test")])
    watcher = proxy.discovery.watchers["api"]
    await watcher.wait(lambda w: w.status.changes >= 2, timeout=INTERVAL + MARGIN)
    # Smooth weighted round-robin: 1:3 is exact over whole cycles of 4.
    assert await client.names(40) == {"a": 10, "b": 30}
    # A higher priority value makes a backup: all traffic to the primary.
    zone.set_srv("_http._tcp.api.test", [(1, 10, a.port, "a.test"), (2, 30, b.port, "b.test")])
    await watcher.wait(lambda w: w.status.changes >= 3, timeout=INTERVAL + MARGIN)
    assert await client.names(8) == {"a": 8}


# ---- files ----------------------------------------------------------------------------------

def replace_file(path, document) -> None:
    """The safe way: a temporary file in the same directory, renamed over the old one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(document if isinstance(document, str) else json.dumps(document))
    os.replace(tmp, path)


async def test_a_watched_file_replaced_atomically_takes_effect_and_a_broken_one_is_ignored(
        backends, session, tmp_path, caplog):
    a, b = await backends.start("a"), await backends.start("b")
    path = tmp_path / "backends.json"
    replace_file(path, [{"url": a.url, "name": "a"}])
    cfg = with_discovery(config({"api": []}), file=str(path), interval=INTERVAL)
    proxy = await backends.proxy(cfg)
    client = Client(session, proxy)
    assert await client.names(2) == {"a": 2}
    watcher = proxy.discovery.watchers["api"]

    replace_file(path, [{"url": a.url, "name": "a"}, {"url": b.url, "name": "b", "weight": 2}])
    await watcher.wait(lambda w: len(w.discovered) == 2, timeout=INTERVAL + MARGIN)
    assert await client.names(4) == {"a": 2, "b": 2}

    replace_file(path, '[{"url": "%s", "name": "a"},\n {"url": "%s", "weight": 0}]' % (a.url, b.url))
    await watcher.wait(lambda w: w.status.failures >= 1, timeout=INTERVAL + MARGIN)
    assert await client.names(4) == {"a": 2, "b": 2}            # the last good set
    [event] = [r.getMessage() for r in caplog.records if "lookup failed" in r.getMessage()]
    assert event == (f"pool api: file {path}: lookup failed ([1].weight: expected a number "
                     "from 0.01 to 1000, found 0); keeping the last good set of 2 backends")
    assert watcher.status.as_dict()["last_error"].startswith("[1].weight")


# ---- health checks follow membership --------------------------------------------------------

async def test_a_discovered_backend_is_probed_and_can_go_down(backends, session, zone):
    async def sick(request, body):
        return web.Response(status=500 if request.path == "/healthz" else 200,
                            headers={"X-Backend": "sick"})
    port = shared_port(["127.0.0.2", "127.0.0.3"])
    await start_at(backends, "well", "127.0.0.2", port)
    await start_at(backends, "sick", "127.0.0.3", port, sick)
    zone.set_a("api.test", ["127.0.0.2"])
    health = Health(interval=0.1, timeout=1.0, rise=1, fall=1)
    proxy = await backends.proxy(dns_config(zone, port, health=health))
    flipped = asyncio.Event()
    proxy.health.on_probe = lambda pool, b, result, flip: flipped.set() if flip else None
    zone.set_a("api.test", ["127.0.0.2", "127.0.0.3"])
    await proxy.discovery.watchers["api"].wait(lambda w: len(w.discovered) == 2,
                                               timeout=INTERVAL + MARGIN)
    await asyncio.wait_for(flipped.wait(), MARGIN)
    sick_b = pool_state(proxy).pool.by_name["127.0.0.3:%d" % port]
    assert not sick_b.healthy
    assert await Client(session, proxy).names(4) == {"well": 4}


# ---- the admin API --------------------------------------------------------------------------

def with_admin(cfg):
    return replace(cfg, admin=Admin(Address("127.0.0.1", 0)))


async def test_admin_add_and_remove_under_load_fail_no_request(backends, session):
    a = await backends.start("a")
    reached = asyncio.Event()

    async def new(request, body):
        reached.set()
        return web.Response(text="new", headers={"X-Backend": "new"})
    added = await backends.start("new", new)
    proxy = await backends.proxy(with_admin(config({"api": [backend_config(a.url, "a")]})))
    client = Client(session, proxy)
    statuses: Counter = Counter()
    stop = asyncio.Event()

    async def load():
        # Bounded in count and time, whatever happens to the rest of the test.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        for _ in range(3000):
            if stop.is_set() or loop.time() > deadline:
                return
            statuses[(await client.get())[0]] += 1

    loaders = [asyncio.ensure_future(load()) for _ in range(4)]
    try:
        status, doc = await client.admin("POST", "/pools/api/backends",
                                         json={"url": added.url, "name": "new", "weight": 2})
        assert status == 201
        assert (doc["backend"]["name"], doc["backend"]["source"], doc["backend"]["weight"]) == \
            ("new", "admin", 2.0)
        await asyncio.wait_for(reached.wait(), MARGIN)
        status, doc = await client.admin("DELETE", "/pools/api/backends/new")
        assert status in (200, 202) and doc["backend"]["state"] in ("removed", "leaving")
        state = pool_state(proxy)
        await until(lambda: "new" not in state.pool.by_name and not state.leaving,
                    "the removed backend to be gone")
        seen = len(added.seen)
        served = sum(statuses.values())
        await until(lambda: sum(statuses.values()) >= served + 20, "more traffic")
        assert len(added.seen) == seen          # nothing new after it was gone
    finally:
        stop.set()
        await asyncio.gather(*loaders)
    assert set(statuses) == {200}, statuses     # zero failed requests
    assert sum(statuses.values()) > 40


async def test_admin_membership_errors(backends, session, zone):
    a = await backends.start("a")
    zone.set_a("api.test", ["127.0.0.1"])
    cfg = with_admin(with_discovery(config({"api": [backend_config(a.url, "a")]}),
                                    dns=Address("api.test", a.port),
                                    resolver=Address("127.0.0.1", zone.port), interval=60.0))
    client = Client(session, await backends.proxy(cfg))
    discovered = "127.0.0.1:%d" % a.port
    cases = [
        ("POST", "/pools/nope/backends", {"json": {"url": a.url}}, 404, "no pool named 'nope'"),
        ("POST", "/pools/api/backends", {"data": "{}"}, 415, "application/json"),
        ("POST", "/pools/api/backends", {"data": "{", "headers": {"Content-Type":
                                                                  "application/json"}},
         400, "expected a JSON body"),
        ("POST", "/pools/api/backends", {"json": {"url": "ftp://x:1"}}, 400, "url: expected a URL"),
        ("POST", "/pools/api/backends", {"json": {"url": a.url, "weight": 0}}, 400,
         "weight: expected a number from 0.01 to 1000, found 0"),
        ("POST", "/pools/api/backends", {"json": {"url": a.url, "extra": 1}}, 400,
         "extra: unknown key"),
        ("POST", "/pools/api/backends", {"json": {"url": a.url, "name": "a"}}, 409,
         "already has a backend named 'a' (static)"),
        ("POST", "/pools/api/backends", {"json": {"url": a.url}}, 409,
         f"already has a backend named '{discovered}' (dns)"),
        ("DELETE", f"/pools/api/backends/{discovered}", {}, 409, "comes from dns discovery"),
        ("DELETE", "/pools/api/backends/zzz", {}, 404, "has no backend named 'zzz'"),
        ("PUT", "/pools/api/backends/a", {"json": {}}, 405, "expected GET or DELETE"),
        ("GET", "/pools/api/backends", {}, 405, "needs POST"),
    ]
    for method, path, kw, status, text in cases:
        got, doc = await client.admin(method, path, **kw)
        assert (got, text in doc.get("error", "")) == (status, True), (method, path, got, doc)
    got, doc = await client.admin("GET", f"/pools/api/backends/{discovered}")
    assert got == 200 and doc["backend"]["source"] == "dns"


async def test_a_reload_keeps_runtime_additions_and_restores_removed_static_backends(
        backends, session, caplog):
    caplog.set_level(logging.INFO)
    a, b, c = await backends.start("a"), await backends.start("b"), await backends.start("c")
    cfg = with_admin(config({"api": [backend_config(a.url, "a"), backend_config(b.url, "b")]}))
    proxy = await backends.proxy(cfg)
    client = Client(session, proxy)
    assert (await client.admin("POST", "/pools/api/backends",
                               json={"url": c.url, "name": "c"}))[0] == 201
    assert (await client.admin("DELETE", "/pools/api/backends/b"))[0] == 200
    assert await client.names(4) == {"a": 2, "c": 2}
    added = pool_state(proxy).pool.by_name["c"]
    proxy.reload(cfg)
    assert await client.names(6) == {"a": 2, "b": 2, "c": 2}
    assert pool_state(proxy).pool.by_name["c"] is added         # kept, with its state
    messages = [r.getMessage() for r in caplog.records]
    assert "reload: pool api: backend b removed at run time is back: the config file lists it" \
        in messages
    assert "reload: pool api: keeps backend c added at run time; a restart forgets it unless " \
           "the config file lists it" in messages
    stats = (await client.admin("GET", "/stats"))[1]
    assert {x["name"]: x["source"] for x in stats["pools"][0]["backends"]} == \
        {"a": "static", "b": "static", "c": "admin"}


async def test_a_pool_whose_first_lookup_fails_starts_empty_and_fills_when_answers_come(
        backends, session, zone):
    port = shared_port(["127.0.0.2"])
    await start_at(backends, "b2", "127.0.0.2", port)
    zone.set_a("api.test", ["127.0.0.2"])
    zone.servfail = True
    proxy = await backends.proxy(dns_config(zone, port))
    client = Client(session, proxy)
    assert (await client.get())[0] == 503           # nothing to send it to, said at once
    zone.servfail = False
    await proxy.discovery.watchers["api"].wait(lambda w: len(w.discovered) == 1,
                                               timeout=INTERVAL + MARGIN)
    assert await client.names(2) == {"b2": 2}


async def test_a_request_from_before_a_reload_retries_onto_a_backend_added_since(
        backends, session):
    """A request keeps the runtime it started with; its retry may choose a backend that joined
    the (shared) pool after a reload and a run-time addition. It is served, not dropped."""
    arrived, release = asyncio.Event(), asyncio.Event()

    async def reset_when_released(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        arrived.set()
        await release.wait()
        writer.transport.abort()                # closed before any response byte: a reset
    port = await backends.start_raw(reset_when_released)
    new = await backends.start("new")
    cfg = with_admin(config({"api": [backend_config(f"http://127.0.0.1:{port}", "a")]}))
    proxy = await backends.proxy(cfg)
    client = Client(session, proxy)
    # One raw request on its own connection: what the proxy answers, with no client retry.
    pending = asyncio.ensure_future(support.raw_exchange(
        proxy.address[1], b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        timeout=MARGIN))
    await asyncio.wait_for(arrived.wait(), MARGIN)
    proxy.reload(cfg)                           # the same pool object, a new runtime
    status, _ = await client.admin("POST", "/pools/api/backends",
                                   json={"url": new.url, "name": "new"})
    assert status == 201
    release.set()
    [(status, headers, _)] = support.split_responses(await asyncio.wait_for(pending, MARGIN))
    assert (status, headers.get("x-backend")) == (200, "new")
