"""Discovery end to end with real processes: ``lbctl serve`` following a real DNS server on
loopback, ``lbctl backend add/remove`` against it, a SIGHUP, and ``lbctl check``."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp
import pytest

from tests.dns_support import DnsServer
from tests.process import ENV, LBCTL
from tests.support import free_port

MARGIN = 10.0


@pytest.fixture
def zone():
    with DnsServer() as z:
        yield z


async def lbctl(*args: str) -> tuple[int, str, str]:
    """A short lbctl command, without blocking the loop the test backends run on."""
    proc = await asyncio.create_subprocess_exec(LBCTL, *args, env=ENV,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def get(session, port: int) -> tuple[int, str]:
    async with session.get(f"http://127.0.0.1:{port}/") as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Backend", "")


async def stats(session, admin: int) -> dict:
    async with session.get(f"http://127.0.0.1:{admin}/stats?history=0") as resp:
        return await resp.json()


async def until_stats(session, admin: int, predicate, what: str) -> dict:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MARGIN
    while True:
        doc = await stats(session, admin)
        if predicate(doc):
            return doc
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}: {doc}")
        await asyncio.sleep(0.05)


def write_config(tmp_path, zone, static_url: str, port: int, admin: int, dns_port: int) -> str:
    path = tmp_path / "lb.toml"
    path.write_text(f"""
[listen]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:{admin}"

[[routes]]
pool = "api"

[pools.api]
algorithm = "round_robin"

[pools.api.discovery]
dns = "api.test:{dns_port}"
resolver = "{zone.address}"
interval = "300ms"
timeout = "500ms"

[[pools.api.backends]]
url = "{static_url}"
name = "static"
""")
    return str(path)


async def test_serve_follows_dns_and_operators_add_and_remove_backends(
        backends, serve_process, zone, tmp_path):
    static = await backends.start("static")
    found = await backends.start("found")
    extra = await backends.start("extra")
    zone.set_a("api.test", ["127.0.0.1"])
    port, admin = free_port(), free_port()
    config = write_config(tmp_path, zone, static.url, port, admin, found.port)
    proc = await serve_process("serve", config)
    # The first lookup is done before listening: both backends are counted.
    await proc.wait_for_log(r"listening on .*: 1 routes, 1 pools, 2 backends")
    admin_url = f"http://127.0.0.1:{admin}"
    async with aiohttp.ClientSession() as session:
        seen = {(await get(session, port))[1] for _ in range(4)}
        assert seen == {"static", "found"}

        code, out, err = await lbctl("backend", "add", "api", extra.url, "--name", "extra",
                                     "--weight", "2", "--admin", admin_url)
        assert code == 0, err
        assert out.strip() == f"api/extra: added ({extra.url}, weight 2), up"
        seen = {(await get(session, port))[1] for _ in range(6)}
        assert seen == {"static", "found", "extra"}
        doc = await stats(session, admin)
        assert {b["name"]: b["source"] for b in doc["pools"][0]["backends"]} == \
            {"static": "static", f"127.0.0.1:{found.port}": "dns", "extra": "admin"}
        assert doc["pools"][0]["discovery"]["state"] == "ok"

        # A SIGHUP keeps what operators added, and says so.
        mark = len(proc.lines)
        proc.proc.send_signal(signal.SIGHUP)
        await proc.wait_for_log(r"reload: pool api: keeps backend extra added at run time; "
                                r"a restart forgets it", start=mark)
        await proc.wait_for_log(r"reloaded ", start=mark)
        assert {(await get(session, port))[1] for _ in range(6)} == {"static", "found", "extra"}

        code, out, err = await lbctl("backend", "remove", "api", "extra", "--admin", admin_url)
        assert code == 0, err
        assert out.strip() == "api/extra: removed"
        code, out, err = await lbctl("backend", "remove", "api", f"127.0.0.1:{found.port}",
                                     "--admin", admin_url)
        assert code == 1 and "comes from dns discovery" in err
        assert {(await get(session, port))[1] for _ in range(6)} == {"static", "found"}

        # The resolver stops answering: the discovered backend stays, and /stats says why.
        zone.silent = True
        doc = await until_stats(session, admin,
                                lambda d: d["pools"][0]["discovery"]["state"] == "failing",
                                "a failed lookup")
        assert doc["pools"][0]["discovery"]["last_error"] == "timeout after 0.5s"
        assert {(await get(session, port))[1] for _ in range(4)} == {"static", "found"}
        async with session.get(f"{admin_url}/metrics") as resp:
            metrics = await resp.text()
        assert 'lbctl_discovery_lookups_total{pool="api",result="failed",source="dns"}' in metrics
    await proc.wait_for_log(r"pool api: dns api\.test:\d+: lookup failed \(timeout after 0\.5s\); "
                            r"keeping the last good set of 1 backend")


async def test_check_resolves_discovery_and_reports_a_failed_lookup_on_its_own_line(
        backends, zone, tmp_path):
    static = await backends.start("static")
    found = await backends.start("found")
    zone.set_a("api.test", ["127.0.0.1"])
    config = write_config(tmp_path, zone, static.url, free_port(), free_port(), found.port)

    code, out, err = await lbctl("check", config, "--json")
    assert code == 0, out + err
    doc = json.loads(out)
    pool = doc["pools"][0]
    assert (pool["healthy"], pool["total"]) == (2, 2)
    assert pool["discovery"] == {"source": "dns", "target": f"api.test:{found.port}",
                                 "result": "found", "error": None, "found": 1}

    zone.silent = True
    code, out, err = await lbctl("check", config)
    assert code == 1, out + err                 # like a backend down: WARNING
    lines = out.splitlines()
    assert lines[0].startswith("LBCTL WARNING - api 1/1 up")
    assert f"WARNING: api: discovery dns api.test:{found.port}: lookup failed (timeout after " \
           "0.5s)" in lines
    assert "LOOKUP FAILED" in out

    # Without the static backend the same failure leaves the pool with nothing: CRITICAL.
    text = open(config).read()
    open(config, "w").write(text[:text.index("[[pools.api.backends]]")])
    code, out, err = await lbctl("check", config, "-q")
    assert code == 2 and out.startswith("LBCTL CRITICAL - api 0/0 up")

    zone.silent = False
    zone.remove("api.test")                     # NXDOMAIN: reported, judged by the counts
    code, out, err = await lbctl("check", config)
    assert code == 2
    assert f"CRITICAL: api: discovery dns api.test:{found.port}: NXDOMAIN: no backends " \
           "discovered" in out.splitlines()
