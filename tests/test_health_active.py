"""Active checks against real backends: probe verdicts and reasons, rise/fall flips with one log
line each, jitter and spread of the schedule, initial state, and the checker's life in serve."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import aiohttp
from aiohttp import web

from lbctl.balancing import Backend, make_pool
from lbctl.config.model import Health
from lbctl.health.active import JITTER, HealthChecks, first_delays, next_delay, probe
from tests.health_support import LogLines, get, load, proxy, start
from tests.support import ManualClock
from tests.support import backend_config, config

HTTP = Health(path="/healthz", interval=60.0, timeout=1.0, rise=2, fall=3)


def target(port: int) -> Backend:
    return Backend(f"b{port}", f"http://127.0.0.1:{port}", host="127.0.0.1", port=port)


# ---- one probe --------------------------------------------------------------------------

async def test_http_probe_verdicts_and_reasons(backends, free_port):
    tb, behaviour = await start(backends, "a")
    b = target(tb.port)
    ok = await probe(b, HTTP)
    assert ok.ok and ok.status == 200 and ok.error is None and ok.latency >= 0

    behaviour.status = 500
    bad = await probe(b, HTTP)
    assert (bad.ok, bad.status, bad.error) == (False, 500, "status 500")

    behaviour.status, behaviour.body = 200, "starting"
    wants_ready = replace(HTTP, expect_body=r"\bready\b")
    assert (await probe(b, wants_ready)).error == "body mismatch"
    behaviour.body = "status: ready"
    assert (await probe(b, wants_ready)).ok

    refused = await probe(target(free_port()), HTTP)
    assert (refused.ok, refused.status, refused.error) == (False, None, "connection refused")


async def test_http_probe_times_out_on_a_backend_that_never_answers(backends):
    async def hang(reader, writer):
        await reader.read(-1)
    port = await backends.start_raw(hang)
    result = await probe(target(port), replace(HTTP, timeout=0.2))
    assert (result.ok, result.error) == (False, "timeout")


async def test_status_ranges_method_host_header_and_no_redirects(backends):
    elsewhere, _ = await start(backends, "elsewhere")

    async def handler(request, body):
        if request.path == "/moved":
            raise web.HTTPFound(f"{elsewhere.url}/healthz")
        return web.Response(status=204)
    tb = await backends.start("a", handler)
    health = replace(HTTP, method="HEAD", path="/moved", host="health.internal",
                     expect_status=((200, 399),))
    result = await probe(target(tb.port), health)
    # 302 is in 200-399; the redirect is not followed: probes only go to the backend itself.
    assert result.ok and result.status == 302
    assert elsewhere.seen == []
    seen = tb.seen[-1]
    assert seen.method == "HEAD" and seen.headers["Host"] == "health.internal"
    assert (await probe(target(tb.port), replace(health, path="/x"))).status == 204


async def test_tcp_probe_connects_without_speaking_http(backends, free_port):
    connected = asyncio.Event()

    async def silent(reader, writer):
        connected.set()
        await reader.read(-1)
    port = await backends.start_raw(silent)
    tcp = Health(type="tcp", timeout=1.0)
    result = await probe(target(port), tcp)
    assert result.ok and result.status is None and connected.is_set()
    refused = await probe(target(free_port()), tcp)
    assert (refused.ok, refused.error) == (False, "connection refused")


# ---- the state machine driven by probes ------------------------------------------------

async def test_rise_fall_flips_the_pool_and_logs_one_line_per_flip(backends, clock):
    tb, behaviour = await start(backends, "a")
    b = target(tb.port)
    other = Backend("other")
    pool = make_pool("api", [b, other], "round_robin", rng=random.Random(1), clock=clock)
    checks = HealthChecks(rng=random.Random(1), wall=lambda: 1234.5)
    try:
        with LogLines() as log:
            behaviour.status = 500
            for _ in range(HTTP.fall - 1):
                await checks.probe_backend(pool, HTTP, b)
            assert b.healthy and b.eligible and log.lines == []
            await checks.probe_backend(pool, HTTP, b)                   # third failure: down
            assert not b.healthy and not b.eligible and b.state == "down"
            assert log.lines == ["pool api: backend %s is DOWN (3 failed probes, last: status 500)"
                                 % b.name]
            last = checks.of(b).last
            assert last == {"ok": False, "status": 500, "latency": last["latency"],
                            "error": "status 500", "time": 1234.5}
            await checks.probe_backend(pool, HTTP, b)                   # still down: no new line
            behaviour.status = 200
            await checks.probe_backend(pool, HTTP, b)                   # one success...
            behaviour.status = 500
            await checks.probe_backend(pool, HTTP, b)                   # ...broken streak
            behaviour.status = 200
            await checks.probe_backend(pool, HTTP, b)
            assert not b.healthy
            await checks.probe_backend(pool, HTTP, b)                   # two in a row: up
            assert b.healthy and b.eligible
            assert len(log.lines) == 2
            assert log.lines[1] == f"pool api: backend {b.name} is UP (2 successful probes, " \
                                   f"last: status 200)"
            assert pool.select() is not None
    finally:
        await checks.stop()


async def test_reasons_in_the_log_line_for_refused_and_timeout(backends, free_port):
    async def hang(reader, writer):
        await reader.read(-1)
    slow = target(await backends.start_raw(hang))
    dead = target(free_port())
    pool = make_pool("p", [slow, dead], "round_robin", rng=random.Random(1), clock=ManualClock())
    health = replace(HTTP, fall=1, timeout=0.2)
    checks = HealthChecks()
    try:
        with LogLines() as log:
            await asyncio.gather(checks.probe_backend(pool, health, slow), checks.probe_backend(pool, health, dead))
        assert sorted(log.lines) == sorted([
            f"pool p: backend {slow.name} is DOWN (1 failed probe, last: timeout)",
            f"pool p: backend {dead.name} is DOWN (1 failed probe, last: connection refused)"])
        assert pool.mode == "empty"
    finally:
        await checks.stop()


# ---- schedule ---------------------------------------------------------------------------

def test_jitter_keeps_each_gap_within_bounds_and_actually_varies():
    rng = random.Random(7)
    gaps = [next_delay(5.0, rng) for _ in range(10_000)]
    assert all(5.0 * (1 - JITTER) <= g <= 5.0 * (1 + JITTER) for g in gaps)
    # Not lockstep: the draws cover most of the band (10,000 uniform draws reach within 1%
    # of each edge with overwhelming probability).
    assert min(gaps) < 5.0 * (1 - JITTER * 0.9) and max(gaps) > 5.0 * (1 + JITTER * 0.9)
    assert abs(sum(gaps) / len(gaps) - 5.0) < 0.01


def test_first_round_of_a_big_pool_is_spread_over_the_interval():
    delays = first_delays(1000, 5.0, random.Random(3))
    slot = 5.0 / 1000
    # Backend i is probed inside the i-th slot: never two at the same instant, never all at once.
    assert all(i * slot <= d < (i + 1) * slot for i, d in enumerate(delays))
    assert len(set(delays)) == 1000
    assert delays == sorted(delays)
    assert max(delays) < 5.0


# ---- in serve ---------------------------------------------------------------------------

async def test_initial_down_takes_no_traffic_until_the_first_good_probe(backends):
    tb, _ = await start(backends, "a")
    cfg = config({"p": [backend_config(tb.url, "a")]},
                 health=replace(HTTP, initial="down", rise=3))
    server = await proxy(backends, cfg)
    port = server.address[1]
    async with aiohttp.ClientSession() as session:
        status, _, headers = await get(session, port)
    assert status == 503 and headers["Retry-After"] == "1"
    state = server.runtime.pools["p"]
    b = state.pool.by_name["a"]
    assert b.state == "down"
    await server.health.probe_backend(state.pool, state.config.health, b)     # one success is enough
    assert b.state == "up"
    assert await load(port, 2) == [(200, "a"), (200, "a")]


async def test_checks_run_in_background_restart_on_reload_and_stop_on_close(backends):
    a, _ = await start(backends, "a")
    b, _ = await start(backends, "b")
    probed: dict[str, asyncio.Event] = {"a": asyncio.Event(), "b": asyncio.Event()}

    def on_probe(pool, backend, result, flipped):
        assert result.ok
        probed[backend.name].set()
    fast = replace(HTTP, interval=0.02)
    server = await proxy(backends, config({"p": [backend_config(a.url, "a")]}, health=fast),
                         on_probe=on_probe)
    await asyncio.wait_for(probed["a"].wait(), 5)
    assert not probed["b"].is_set()            # never probes what is not configured

    server.reload(config({"p": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                         health=fast))
    await asyncio.wait_for(probed["b"].wait(), 5)
    assert len(server.health.tasks) == 2

    # A reload that drops [health] stops the probes and assumes backends up again.
    server.runtime.pools["p"].pool.set_healthy(server.runtime.pools["p"].pool.by_name["a"], False)
    server.reload(config({"p": [backend_config(a.url, "a"), backend_config(b.url, "b")]}))
    assert server.health.tasks == []
    assert all(x.state == "up" for x in server.runtime.pools["p"].pool.backends)

    server.reload(config({"p": [backend_config(a.url, "a")]}, health=fast))
    tasks = list(server.health.tasks)
    await server.close()
    assert server.health.tasks == [] and all(t.done() for t in tasks)


async def test_last_probe_is_recorded_for_stats(backends):
    tb, _ = await start(backends, "a")
    server = await proxy(backends, config({"p": [backend_config(tb.url, "a")]}, health=HTTP))
    state = server.runtime.pools["p"]
    b = state.pool.by_name["a"]
    await server.health.probe_backend(state.pool, HTTP, b)
    probe_info = server.health.of(b).last
    assert probe_info["ok"] is True and probe_info["status"] == 200 and probe_info["error"] is None
    assert isinstance(probe_info["time"], float) and probe_info["latency"] >= 0
    # The proxy keeps serving while checks exist.
    async with aiohttp.ClientSession() as session:
        assert (await get(session, server.address[1]))[:2] == (200, "a")


async def test_reload_keeps_verdicts_of_survivors_and_applies_initial_to_newcomers(backends):
    a, a_behaviour = await start(backends, "a")
    b, _ = await start(backends, "b")
    health = replace(HTTP, fall=1, initial="down")
    server = await proxy(backends, config({"p": [backend_config(a.url, "a")]}, health=health))
    state = server.runtime.pools["p"]
    ra = state.pool.by_name["a"]
    await server.health.probe_backend(state.pool, health, ra)
    assert ra.state == "up"

    server.reload(config({"p": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                         health=replace(health, rise=5)))
    pool = server.runtime.pools["p"].pool
    assert pool.by_name["a"] is ra and ra.state == "up"        # survivor: verdict kept
    assert server.health.of(ra).state.rise == 5               # new settings applied
    assert pool.by_name["b"].state == "down"                  # newcomer: initial = "down"
    assert await load(server.address[1], 3) == [(200, "a")] * 3
