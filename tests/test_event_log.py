"""``serve --log-format json``: every line is one JSON object, and the lines a log pipeline
filters on carry ``event`` with ``pool``, ``backend``, ``state`` and ``reason`` where they
apply. One real serve goes through a health flip, an ejection, a connect failure, an admin
action, a good and a bad reload, and a stop; its stderr is parsed line by line.
"""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp


TOKEN = "event-log-test-token-0123"


async def test_json_event_lines_carry_their_fields(backends, tmp_path, free_port, serve_process):
    good = await backends.start("good")
    dead = free_port()                                  # nothing listens here
    port, admin = free_port(), free_port()
    config = tmp_path / "lb.toml"
    text = (
        f'[listen]\naddress = "127.0.0.1:{port}"\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\ntoken = "{TOKEN}"\n'
        '[[routes]]\npath_prefix = "/api"\npool = "api"\n[[routes]]\npool = "web"\n'
        '[pools.api]\nalgorithm = "round_robin"\nretries = 1\n'
        '[pools.api.outlier]\nconsecutive_failures = 1\n'
        f'[[pools.api.backends]]\nurl = "{good.url}"\nname = "good"\n'
        f'[[pools.api.backends]]\nurl = "http://127.0.0.1:{dead}"\nname = "dead"\n'
        '[pools.web.health]\ninterval = "200ms"\nfall = 1\n'
        f'[[pools.web.backends]]\nurl = "{good.url}"\nname = "good"\n'
        f'[[pools.web.backends]]\nurl = "http://127.0.0.1:{dead}"\nname = "dead"\n')
    config.write_text(text)
    proc = await serve_process("serve", "--log-format", "json", str(config))
    await proc.wait_for_log('"event": "listening"')
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for path in ("/api/a", "/api/b"):
            async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                assert resp.status == 200          # the retry hides the dead backend
        await proc.wait_for_log('"state": "ejected"')
        await proc.wait_for_log('"state": "down"')
        async with session.post(f"http://127.0.0.1:{admin}/pools/web/backends/good/drain",
                                headers=headers, json={}) as resp:
            assert resp.status == 200
    await proc.wait_for_log('"event": "admin_action"')
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log('"event": "reloaded"')
    config.write_text(text.replace('pool = "web"', 'pool = "wbe"'))
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log('"problems": 1')
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0

    lines = [json.loads(line) for line in proc.lines]          # every line is JSON
    assert all({"time", "level", "logger", "message"} <= set(doc) for doc in lines)
    by_event: dict[str, list[dict]] = {}
    for doc in lines:
        by_event.setdefault(doc.get("event"), []).append(doc)

    listening = by_event["listening"][0]
    assert listening["address"] == f"127.0.0.1:{port}" and listening["config"] == str(config)
    assert by_event["admin_listening"][0]["address"] == f"127.0.0.1:{admin}"

    states = {(d["pool"], d["backend"], d["state"]): d for d in by_event["backend_state"]}
    down = states[("web", "dead", "down")]
    assert down["reason"] == "connection refused" and down["level"] == "warning"
    ejected = states[("api", "dead", "ejected")]
    assert ejected["reason"] == "1 consecutive failures (last: connect)"
    assert ejected["duration"] == 30.0

    error = next(d for d in by_event["backend_error"] if d["pool"] == "api")
    assert (error["backend"], error["reason"]) == ("dead", "connection refused")

    action = by_event["admin_action"][0]
    assert (action["pool"], action["backend"], action["state"], action["previous"]) == \
        ("web", "good", "draining", "enabled")

    assert by_event["reloaded"][0]["config"] == str(config)
    rejected = by_event["reload_rejected"]
    assert any("routes[1].pool" in d.get("reason", "") for d in rejected)
    assert by_event["stopping"][0]["connections"] >= 0
    assert by_event["stopped"][0]["clean"] is True


async def test_text_lines_are_unchanged_by_the_fields(backends, tmp_path, free_port,
                                                      serve_process):
    good = await backends.start("good")
    config = tmp_path / "lb.toml"
    config.write_text(f'[listen]\naddress = "127.0.0.1:{free_port()}"\n[[routes]]\npool = "p"\n'
                      f'[[pools.p.backends]]\nurl = "{good.url}"\n')
    proc = await serve_process("serve", str(config))
    line = (await proc.wait_for_log(r"INFO listening on .*")).group(0)
    assert line.endswith(": 1 routes, 1 pools, 1 backends")
    assert "event" not in line


async def test_store_state_lines_carry_their_fields(backends, tmp_path, free_port,
                                                    serve_process):
    """The shared store is down when serve starts, then a real redis-server comes up on its
    port: one ``down`` line with the reason, then ``up`` with how long it was down."""
    from tests.redis_support import RedisServer
    good = await backends.start("good")
    redis = RedisServer(password=None, port=free_port())     # skipped without redis-server
    store = f"redis://127.0.0.1:{redis.port}/0"
    config = tmp_path / "lb.toml"
    config.write_text(f'[listen]\naddress = "127.0.0.1:{free_port()}"\n'
                      f'[store]\nbackend = "redis"\nurl = "{store}"\non_error = "open"\n'
                      '[[routes]]\npool = "p"\n'
                      f'[[pools.p.backends]]\nurl = "{good.url}"\n')
    try:
        proc = await serve_process("serve", "--log-format", "json", str(config))
        await proc.wait_for_log('"event": "listening"')
        down = json.loads((await proc.wait_for_log(r'^\{.*"event": "store_state".*$')).group(0))
        assert (down["store"], down["state"], down["on_error"], down["level"]) == \
            (store, "down", "open", "warning")
        assert "refused" in down["reason"].lower()
        mark = len(proc.lines)
        await asyncio.to_thread(redis.start)
        line = (await proc.wait_for_log(r'^\{.*"event": "store_state".*$', start=mark)).group(0)
        up = json.loads(line)
        assert (up["store"], up["state"], up["level"]) == (store, "up", "info")
        assert up["down_for"] > 0
    finally:
        await asyncio.to_thread(redis.cleanup)


async def test_discovery_and_membership_lines_carry_their_fields(
        backends, tmp_path, free_port, serve_process):
    """A pool whose DNS name does not exist yet, then does; an operator adds and removes a
    backend: each line a pipeline would alert on says which pool, what and why."""
    from tests.dns_support import DnsServer
    good = await backends.start("good")
    port, admin = free_port(), free_port()
    with DnsServer() as zone:
        config = tmp_path / "lb.toml"
        config.write_text(
            f'[listen]\naddress = "127.0.0.1:{port}"\n'
            f'[admin]\naddress = "127.0.0.1:{admin}"\ntoken = "{TOKEN}"\n'
            '[[routes]]\npool = "api"\n'
            f'[pools.api.discovery]\ndns = "api.test:{good.port}"\nresolver = "{zone.address}"\n'
            'interval = "1s"\n')
        proc = await serve_process("serve", "--log-format", "json", str(config))
        await proc.wait_for_log('"event": "listening"')
        empty = json.loads((await proc.wait_for_log(r'^\{.*"event": "discovery".*$')).group(0))
        assert (empty["pool"], empty["source"], empty["target"], empty["state"]) == \
            ("api", "dns", f"api.test:{good.port}", "empty")
        assert empty["reason"] and empty["level"] == "warning"
        mark = len(proc.lines)
        zone.set_a("api.test", ["127.0.0.1"], ttl=1)
        line = (await proc.wait_for_log(r'^\{.*"event": "discovery".*"joined".*$', start=mark))
        found = json.loads(line.group(0))
        assert (found["state"], found["backends"], found["joined"], found["left"]) == \
            ("ok", 1, [f"127.0.0.1:{good.port}"], [])

        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            base = f"http://127.0.0.1:{admin}/pools/api/backends"
            async with session.post(base, json={"url": good.url, "name": "extra"}) as resp:
                assert resp.status == 201
            async with session.delete(f"{base}/extra") as resp:
                assert resp.status in (200, 202)
        await proc.wait_for_log('"state": "(removed|leaving)"')
    actions = [json.loads(line) for line in proc.lines
               if line.startswith("{") and '"admin_action"' in line]
    assert [(a["pool"], a["backend"], a["state"]) for a in actions][:1] == \
        [("api", "extra", "added")]
    assert actions[0]["url"] == good.url
    assert actions[1]["state"] in ("removed", "leaving")
