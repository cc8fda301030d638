"""``lbctl simulate --from-admin``: a scenario from a running serve's /stats, never a change."""

from __future__ import annotations

import asyncio
import json
import subprocess

import aiohttp
import pytest
from aiohttp import web

from lbctl.observe.accounting import BOUNDS
from lbctl.simulate.live import samples_of, scenario_from_stats
from tests.process import ENV, LBCTL

TOKEN = "a-long-enough-admin-token-for-tests"


def sleeping(seconds: float):
    async def handler(request, body):
        await asyncio.sleep(seconds)
        return web.Response(text="ok")
    return handler


async def simulate(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [LBCTL, "simulate", *args],
                                   capture_output=True, text=True, env=ENV, timeout=120)


async def test_from_admin_builds_the_live_pool_and_only_suggests(backends, serve_process,
                                                                free_port, tmp_path):
    fast1 = await backends.start("fast1", sleeping(0.002))
    fast2 = await backends.start("fast2", sleeping(0.002))
    slow = await backends.start("slow", sleeping(0.100))
    port, admin = free_port(), free_port()
    config = tmp_path / "lb.toml"
    config.write_text(
        f'[listen]\naddress = "127.0.0.1:{port}"\n[admin]\naddress = "127.0.0.1:{admin}"\n'
        f'token = "{TOKEN}"\n[[routes]]\npool = "api"\n[pools.api]\nalgorithm = "round_robin"\n'
        f'[[pools.api.backends]]\nurl = "{fast1.url}"\nname = "fast1"\nweight = 2\n'
        f'[[pools.api.backends]]\nurl = "{fast2.url}"\nname = "fast2"\n'
        f'[[pools.api.backends]]\nurl = "{slow.url}"\nname = "slow"\n')
    before = config.read_bytes()
    proc = await serve_process("serve", str(config))
    await proc.wait_for_log("listening on", timeout=15)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async def one():
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
                return resp.status
        statuses = []
        for _ in range(40):                      # 320 requests, 8 at a time
            statuses += await asyncio.gather(*(one() for _ in range(8)))
        assert set(statuses) == {200}
        url = f"http://127.0.0.1:{admin}"
        async with session.get(f"{url}/stats",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            doc = await resp.json()
    backend = doc["pools"][0]["backends"][2]
    # /stats now carries the histogram the twin samples from.
    assert backend["latency_histogram"]["le"] == [*BOUNDS, None]
    assert sum(backend["latency_histogram"]["counts"]) == backend["requests"]

    result = await simulate("--from-admin", url, "--token", TOKEN, "--requests", "20000")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "live twin of pool 'api'" in text and "3 backends" in text
    # round_robin sends the slow backend a third of the traffic; the twin finds better.
    assert f"change {config}:" in text and "[pools.api]" in text, text
    assert 'algorithm = "' in text and '# was "round_robin"' in text
    assert "Nothing was changed." in text
    assert config.read_bytes() == before

    doc_json = await simulate("--from-admin", url, "--token", TOKEN, "--requests", "20000",
                              "--json")
    results = json.loads(doc_json.stdout)["results"]
    assert {b["name"] for b in results[0]["backends"]} == {"fast1", "fast2", "slow"}

    refused = await simulate("--from-admin", url)
    assert refused.returncode == 1 and "answered 401" in refused.stderr
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/stats",
                               headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            assert (await resp.json())["pools"][0]["algorithm"] == "round_robin"


async def test_an_unreachable_admin_api_is_one_line_exit_1(free_port):
    result = await simulate("--from-admin", f"127.0.0.1:{free_port()}")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("lbctl: --from-admin 127.0.0.1:")
    assert "cannot reach the admin API" in result.stderr and "Traceback" not in result.stderr


def test_histogram_samples_and_estimates():
    histogram = {"le": [0.01, 0.1, None], "counts": [2, 1, 0]}
    assert samples_of(histogram) == pytest.approx([0.0025, 0.0075, 0.055])
    doc = {"uptime": 120.0, "window": 60, "config": None, "pools": [{
        "name": "api", "algorithm": "p2c", "backends": [
            {"name": "a", "state": "up", "weight": 2.0, "backup": False,
             "latency_histogram": {"le": [0.01, 0.1, None], "counts": [600, 0, 0]}},
            {"name": "b", "state": "down", "weight": 1.0, "backup": False,
             "latency_histogram": {"le": [0.01, 0.1, None], "counts": [0, 60, 0]}}]}]}
    sc = scenario_from_stats(doc, "test")
    # Only the up backend; 600 attempts over the 60 s window: 10 req/s.
    assert [b.name for b in sc.backends] == ["a"] and sc.backends[0].weight == 2.0
    assert sc.workload.rate == 10.0 and sc.configured == "p2c"
    assert "b not up, left out" in sc.title
    # Little's law: 10 req/s x 5 ms = 0.05 in flight; the floor of 4 applies.
    assert sc.backends[0].concurrency == 4
    assert sc.proxy.timeouts.response == 30.0         # serve's defaults without the config
