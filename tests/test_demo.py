"""``lbctl demo``: taken ports, the flaky backend's outages, and a whole short run.

The demo is run in-process with configs whose ports the test holds itself, never on the
sample's fixed ports (other programs on the machine may use those).
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import subprocess

import aiohttp
import pytest
from rich.console import Console

from lbctl.config.model import Health
from lbctl.demo.backends import PERSONALITIES, Personality, bound_port, demo_app, start_backend
from lbctl.demo.run import run_demo
from lbctl.errors import UserError
from lbctl.health.active import probe
from tests.process import ENV, LBCTL


def held_port() -> socket.socket:
    """A listening socket on a loopback port: that port is taken while it is open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


def demo_config(tmp_path, listen: int, admin: int, backends: list[int]) -> str:
    lines = ["[listen]", f'address = "127.0.0.1:{listen}"', "[admin]",
             f'address = "127.0.0.1:{admin}"', "[[routes]]", 'pool = "api"', "[pools.api]",
             'retry_on = ["connect", "reset", "5xx"]', "[pools.api.health]",
             'interval = "100ms"', 'timeout = "500ms"', "fall = 1", "rise = 1"]
    for i, port in enumerate(backends):
        lines += ["[[pools.api.backends]]", f'url = "http://127.0.0.1:{port}"',
                  f'name = "b{i}"']
    path = tmp_path / "demo.toml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_flaky_personality_has_outages_the_sample_comment_describes():
    flaky = next(p for p in PERSONALITIES if p.name == "flaky")
    assert not flaky.in_outage(9.9)
    assert flaky.in_outage(10.0) and flaky.in_outage(21.9)
    assert not flaky.in_outage(22.0) and not flaky.in_outage(69.9)
    assert flaky.in_outage(70.0)        # every minute
    assert "12 s outage every minute, starting 10 s in" in \
        " ".join(open(__file__.replace("tests/test_demo.py", "sample.toml")).read().split())


async def test_flaky_backend_fails_its_health_checks_during_an_outage(clock):
    flaky = Personality("flaky", 0.001, 0.0, outage_every=60.0, outage_for=12.0,
                        outage_after=10.0)
    runner = await start_backend(demo_app("b3", flaky, clock=clock), "127.0.0.1", 0)
    try:
        backend = type("Target", (), {"scheme": "http", "host": "127.0.0.1",
                                      "port": bound_port(runner)})()
        health = Health(path="/healthz", timeout=5.0)
        url = f"http://127.0.0.1:{backend.port}/demo"
        async with aiohttp.ClientSession() as session:
            clock.now = 5.0
            assert (await probe(backend, health)).ok
            async with session.get(url) as resp:
                assert resp.status == 200
            clock.now = 15.0
            result = await probe(backend, health)
            assert not result.ok and result.error == "status 503"
            async with session.get(url) as resp:
                assert resp.status == 500 and resp.headers["X-Backend"] == "b3"
            clock.now = 23.0
            assert (await probe(backend, health)).ok
    finally:
        await runner.cleanup()


async def test_taken_ports_of_the_sample_move_to_free_ones(tmp_path, free_port):
    """Every port the config names is taken; the demo still runs, says where it went, and
    its traffic is answered."""
    held = [held_port() for _ in range(3)]
    try:
        listen, admin, backend = (s.getsockname()[1] for s in held)
        config = demo_config(tmp_path, listen, admin, [backend, free_port()])
        out = io.StringIO()
        code = await run_demo(config, load=50, duration=1.5,
                              console=Console(file=out, width=200), free_ports=True)
        text = out.getvalue()
        assert code == 0, text
        assert f"port {backend} is taken: demo backend b0 moves to" in text
        assert f"port {listen} is taken: the proxy moves to a free port" in text
        assert f"port {admin} is taken: the admin API moves to a free port" in text
        proxy_port = int(re.search(r"proxy listening on http://127\.0\.0\.1:(\d+)", text)[1])
        assert proxy_port != listen
        served = re.search(r"demo traffic: (\d+) requests \((.*)\)", text)
        assert served and int(served[1]) > 0 and "200" in served[2], text
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize("which", ["listen", "admin", "backend"])
async def test_a_taken_port_in_the_users_own_config_names_it_and_the_key(
        tmp_path, which, free_port):
    held = held_port()
    try:
        port = held.getsockname()[1]
        ports = {"listen": free_port(), "admin": free_port(), "backend": free_port()}
        ports[which] = port
        config = demo_config(tmp_path, ports["listen"], ports["admin"], [ports["backend"]])
        with pytest.raises(UserError) as info:
            await run_demo(config, load=0, duration=1, console=Console(file=io.StringIO()))
        message = str(info.value)
        assert f"127.0.0.1:{port} is already in use" in message and config in message
        key = {"listen": "[listen] address", "admin": "[admin] address",
               "backend": "the url of backend b0"}[which]
        assert f"change {key} in" in message
        assert info.value.exit_code == 1
    finally:
        held.close()


def test_a_taken_port_is_one_line_and_exit_1_from_the_real_command(tmp_path, free_port):
    held = held_port()
    try:
        config = demo_config(tmp_path, held.getsockname()[1], free_port(), [free_port()])
        proc = subprocess.run([LBCTL, "demo", "--config", config, "--duration", "1s"],
                              capture_output=True, text=True, env=ENV, timeout=60)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines()[-1].startswith("lbctl: the proxy's address")
        assert "Traceback" not in proc.stderr
    finally:
        held.close()


async def test_the_flaky_backend_really_goes_down_in_a_run(tmp_path, free_port, monkeypatch):
    """A short demo run whose flaky backend starts its outage at once: the proxy's health
    checks mark it down, and the retries on 5xx keep its 500s from the clients."""
    import lbctl.demo.run as run
    ports = [free_port() for _ in range(2)]
    config = demo_config(tmp_path, free_port(), free_port(), ports)
    outage = Personality("flaky", 0.001, 0.0, outage_every=60.0, outage_for=60.0)
    monkeypatch.setattr(run, "PERSONALITIES", [PERSONALITIES[0], outage])
    out = io.StringIO()
    await asyncio.wait_for(run_demo(config, load=50, duration=2.0,
                                    console=Console(file=out, width=200)), 30)
    text = out.getvalue()
    assert re.search(r"b1\W+down", text), text
    served = re.search(r"demo traffic: (\d+) requests \((.*)\)", text)
    assert served and "500" not in served[2], text
