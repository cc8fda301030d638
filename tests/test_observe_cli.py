"""``lbctl stats`` and ``lbctl backend`` against a live ``lbctl serve`` subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from collections import Counter

import aiohttp
import pytest

from tests.process import ENV, LBCTL

TOKEN = "cli-token-0123456789"


async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        LBCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def live(backends, tmp_path, free_port, serve_process):
    """A serve process in front of backends "one" and "two", admin API with a token."""
    one, two = await backends.start("one"), await backends.start("two")
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    path.write_text(
        f'[listen]\naddress = "127.0.0.1:{port}"\n\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\ntoken = "{TOKEN}"\n\n'
        f'[log]\naccess = "{tmp_path / "access.log"}"\n\n'
        f'[[routes]]\npool = "p"\n\n[pools.p]\nalgorithm = "round_robin"\n\n'
        f'[[pools.p.backends]]\nurl = "{one.url}"\nname = "one"\n\n'
        f'[[pools.p.backends]]\nurl = "{two.url}"\nname = "two"\n')
    proc = await serve_process("serve", "--log-format", "json", str(path))
    await proc.wait_for_log("admin API on")
    await proc.wait_for_log("listening on")
    return {"proc": proc, "config": str(path), "port": port, "admin": admin,
            "one": one, "two": two, "tmp": tmp_path}


async def traffic(port: int, n: int) -> Counter:
    names = Counter()
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
                names[resp.headers.get("X-Backend")] += 1
    return names


async def test_stats_once_json_against_a_live_instance(live):
    await traffic(live["port"], 6)
    code, out, err = await run("stats", "--once", "--json", "--config", live["config"])
    assert code == 0, err
    doc = json.loads(out)                              # stdout is the document and nothing else
    backends = {b["name"]: b for b in doc["pools"][0]["backends"]}
    assert backends["one"]["requests"] == backends["two"]["requests"] == 3
    assert doc["config"] == live["config"]


async def test_stats_once_prints_the_tables(live):
    await traffic(live["port"], 2)
    code, out, err = await run("stats", "--once", "--admin", f"http://127.0.0.1:{live['admin']}",
                               "--token", TOKEN)
    assert code == 0, err
    assert "pool p (round_robin, normal)" in out
    assert "one" in out and "two" in out and "up" in out


async def test_wrong_token_and_unreachable_api_are_one_line_and_exit_1(live, free_port):
    code, out, err = await run("stats", "--once", "--admin", f"http://127.0.0.1:{live['admin']}",
                               "--token", "nope")
    assert code == 1 and out == "" and "401" in err and len(err.strip().splitlines()) == 1
    code, out, err = await run("stats", "--json", "--admin", f"http://127.0.0.1:{free_port()}")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == [err.strip()] and "cannot reach the admin API" in err


async def test_backend_drain_drains_and_enable_restores(live):
    code, out, err = await run("backend", "drain", "p", "one", "--config", live["config"])
    assert code == 0, err
    assert out.strip() == "p/one: draining, weight 1, 0 in flight"
    before = len(live["one"].seen)
    assert await traffic(live["port"], 4) == {"two": 4}
    assert len(live["one"].seen) == before
    await live["proc"].wait_for_log(r'"message": "admin: p/one enabled -> draining"')
    code, _, err = await run("backend", "enable", "p", "one", "--config", live["config"])
    assert code == 0, err
    assert await traffic(live["port"], 4) == {"one": 2, "two": 2}
    code, out, err = await run("backend", "weight", "p", "two", "3", "--json",
                               "--config", live["config"])
    assert code == 0 and json.loads(out)["backend"]["weight"] == 3
    code, _, err = await run("backend", "drain", "p", "nobody", "--config", live["config"])
    assert code == 1 and "nobody" in err


async def test_event_log_is_json_lines(live):
    # Every stderr line so far is one JSON object with the documented fields.
    for line in live["proc"].lines:
        event = json.loads(line)
        assert {"time", "level", "logger", "message"} <= set(event)


async def test_sigusr1_reopens_the_access_log(live):
    log = live["tmp"] / "access.log"
    await traffic(live["port"], 1)
    live["proc"].proc.send_signal(signal.SIGUSR1)
    await live["proc"].wait_for_log("access log reopened")
    # The line written before the signal is in the file; rotation itself is covered in-process.
    assert log.exists()


async def test_admin_port_in_use_is_one_clear_line_and_exit_1(backends, tmp_path, free_port):
    one = await backends.start("one")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = taken.getsockname()[1]
        path = tmp_path / "lb.toml"
        path.write_text(
            f'[listen]\naddress = "127.0.0.1:{free_port()}"\n\n'
            f'[admin]\naddress = "127.0.0.1:{admin}"\n\n'
            f'[[routes]]\npool = "p"\n\n[pools.p]\n\n[[pools.p.backends]]\nurl = "{one.url}"\n')
        code, out, err = await run("serve", str(path))
    assert code == 1
    assert err == f"lbctl: cannot listen on admin address 127.0.0.1:{admin}: address already in use\n"


async def weights(live) -> dict[str, float]:
    code, out, err = await run("stats", "--once", "--json", "--config", live["config"])
    assert code == 0, err
    return {b["name"]: b["weight"] for b in json.loads(out)["pools"][0]["backends"]}


async def test_an_operator_weight_survives_sighup_unless_the_file_changes_that_weight(live):
    proc = live["proc"]
    code, _, err = await run("backend", "weight", "p", "two", "3", "--config", live["config"])
    assert code == 0, err
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)                # the file is unchanged
    await proc.wait_for_log("reloaded", start=mark)
    assert await weights(live) == {"one": 1, "two": 3}

    path = live["tmp"] / "lb.toml"
    path.write_text(path.read_text() + "weight = 2\n")  # the file changes two's weight
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log("reloaded", start=mark)
    line = await proc.wait_for_log("backend two weight 3 .set by an operator. replaced by the "
                                   "config file's new weight 2", start=mark)
    assert json.loads(line.string)["level"] == "warning"
    assert await weights(live) == {"one": 1, "two": 2}
