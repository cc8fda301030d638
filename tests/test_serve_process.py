"""``lbctl serve`` as a user runs it: a real process, real signals, real exit codes."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess

import aiohttp
import pytest
from aiohttp import web

from tests.process import ENV, LBCTL


async def get(port: int, path: str = "/") -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
            return resp.status, resp.headers.get("X-Backend", "")


async def test_sigterm_lets_in_flight_requests_finish_refuses_new_ones_and_exits_0(
        backends, serve_process, tmp_path, free_port, write_config):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request, body):
        arrived.set()
        await release.wait()
        return web.Response(text="finished", headers={"X-Backend": "slow"})
    slow_backend = await backends.start("slow", slow)
    port = free_port()
    write_config({"p": [slow_backend.url]}, port=port, named=False)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")

    in_flight = asyncio.ensure_future(get(port, "/slow"))
    await asyncio.wait_for(arrived.wait(), 10)
    proc.proc.send_signal(signal.SIGTERM)
    await proc.wait_for_log("no longer accepting")
    with pytest.raises(OSError):                       # the listener is closed
        await asyncio.open_connection("127.0.0.1", port)
    release.set()
    assert await asyncio.wait_for(in_flight, 10) == (200, "slow")
    assert await proc.wait() == 0


async def test_sighup_reloads_a_valid_config_and_keeps_serving_on_an_invalid_one(
        backends, serve_process, tmp_path, free_port, write_config):
    a, b = await backends.start("a"), await backends.start("b")
    port = free_port()
    path = tmp_path / "lb.toml"
    write_config({"p": [a.url]}, port=port, named=False)
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    assert await get(port) == (200, "a")

    write_config({"p": [b.url]}, port=port, named=False)
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)
    await proc.wait_for_log("reloaded", start=mark)
    assert [await get(port) for _ in range(3)] == [(200, "b")] * 3

    path.write_text(path.read_text().replace('algorithm = "round_robin"',
                                             'algorithm = "round_robbin"'))
    mark = len(proc.lines)
    proc.proc.send_signal(signal.SIGHUP)
    match = await proc.wait_for_log("reload rejected: .*algorithm", start=mark)
    assert "round_robin" in match.string                # the suggestion is logged
    await proc.wait_for_log("still serving the previous configuration", start=mark)
    assert await get(port) == (200, "b")
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait() == 0


async def test_port_in_use_is_one_clear_line_and_exit_1(tmp_path, write_config):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        write_config({"p": ["http://127.0.0.1:9"]}, port=port, named=False)
        result = subprocess.run([LBCTL, "serve", str(tmp_path / "lb.toml")],
                                capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "address already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("content, expected", [
    ("[listen\naddress = 1", "line 1"),
    ('[listen]\nadress = "127.0.0.1:1"\n[[routes]]\npool = "p"\n', "listen.adress"),
])
def test_bad_config_is_exit_2_without_traceback(tmp_path, content, expected):
    (tmp_path / "lb.toml").write_text(content)
    result = subprocess.run([LBCTL, "serve", str(tmp_path / "lb.toml")],
                            capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_missing_config_file_is_exit_2(tmp_path):
    result = subprocess.run([LBCTL, "serve", str(tmp_path / "nope.toml")],
                            capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "Traceback" not in result.stderr


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def test_large_bodies_stream_both_ways_with_bounded_memory(
        backends, serve_process, tmp_path, free_port, write_config):
    size = 512 * 2**20
    chunk = b"\x5a" * 2**20

    async def download(request):
        resp = web.StreamResponse(headers={"Content-Length": str(size)})
        await resp.prepare(request)
        for _ in range(size // len(chunk)):
            await resp.write(chunk)
        return resp

    async def upload(request):
        # counted while streaming, so the backend does not hold the body either
        received = 0
        async for part in request.content.iter_chunked(2**16):
            received += len(part)
        return web.Response(text=str(received))
    app = web.Application()
    app.router.add_get("/download", download)
    app.router.add_post("/upload", upload)
    big = await backends.start_app("big", app)
    port = free_port()
    write_config({"p": [big.url]}, port=port, named=False)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on")
    baseline = peak_rss_mib(proc.proc.pid)

    async def upload_body():
        for _ in range(size // len(chunk)):
            yield chunk
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"http://127.0.0.1:{port}/download") as resp:
            received = 0
            async for part in resp.content.iter_chunked(2**16):
                received += len(part)
        assert received == size
        async with session.post(f"http://127.0.0.1:{port}/upload", data=upload_body()) as resp:
            assert resp.status == 200 and int(await resp.text()) == size
    growth = peak_rss_mib(proc.proc.pid) - baseline
    # 1 GiB crossed the proxy; buffers are bounded by the pause/resume water marks,
    # so growth stays a small fraction of what was moved.
    assert growth < 64, f"proxy peak RSS grew {growth:.0f} MiB while streaming 1 GiB"
