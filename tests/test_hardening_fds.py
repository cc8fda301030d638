"""Out of file descriptors is the proxy's problem, never a backend's.

Real ``lbctl serve`` processes with a low open-files limit: set before it starts (the limit
is then what caps its connections, and it says so), or lowered while it runs with
``prlimit`` (then its own connects to a healthy backend fail with EMFILE). Either way no
backend is marked down, ejected or charged with a failure, and clients get 503.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource

import aiohttp
from aiohttp import web

from tests.process import ENV, LBCTL, LbctlProcess


async def start_limited(path: str, soft: int, hard: int | None = None) -> LbctlProcess:
    """``lbctl serve path`` with RLIMIT_NOFILE at ``soft`` (and ``hard``, by default the same)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft if hard is None else hard))
    proc = await asyncio.create_subprocess_exec(
        LBCTL, "serve", path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=ENV, preexec_fn=limit)
    return LbctlProcess(proc)


class Holding:
    """A backend: /healthz answers at once; /hold answers only when released, one at a time
    and with Connection: close (so the proxy closes that upstream connection); /ok at once."""

    def __init__(self) -> None:
        self.arrived: asyncio.Queue = asyncio.Queue()
        self.releases: asyncio.Queue = asyncio.Queue()

    def app(self) -> web.Application:
        async def hold(request):
            self.arrived.put_nowait(request.path)
            await self.releases.get()
            return web.Response(text="held", headers={"Connection": "close"})

        async def ok(request):
            return web.Response(text="ok")
        app = web.Application()
        app.router.add_get("/hold", hold)
        app.router.add_get("/healthz", ok)
        app.router.add_get("/ok", ok)
        return app


def serve_config(path, port: int, admin: int, backend: str) -> str:
    path.write_text(f'''
[listen]
address = "127.0.0.1:{port}"

[admin]
address = "127.0.0.1:{admin}"

[[routes]]
pool = "p"

[pools.p]
retries = 0
[pools.p.health]
path = "/healthz"
interval = "100ms"
fall = 1
rise = 1
[pools.p.outlier]
consecutive_failures = 1
failure_on = ["connect", "reset", "timeout", "5xx", "truncated", "invalid"]
[[pools.p.backends]]
url = "{backend}"
name = "n1"
''')
    return str(path)


async def stats_backend(admin: int) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{admin}/stats") as resp:
            return json.loads(await resp.text())["pools"][0]["backends"][0]


def blamed(lines: list[str]) -> list[str]:
    return [line for line in lines if any(word in line for word in
                                          ("is DOWN", "EJECTED", "Traceback"))]


async def request(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
    await writer.drain()
    return reader, writer


async def test_a_low_limit_caps_connections_with_503_and_says_so(
        backends, tmp_path, free_port):
    holding = Holding()
    backend = await backends.start_app("n1", holding.app())
    port, admin = free_port(), free_port()
    path = serve_config(tmp_path / "lb.toml", port, admin, backend.url)
    proc = await start_limited(path, 128)
    try:
        match = await proc.wait_for_log(r"open files limit 128 \(hard 128\) is below the \d+ "
                                        r"that max_connections 10000 needs: at most (\d+) client")
        cap = int(match.group(1))
        await proc.wait_for_log("listening on")
        assert 10 < cap < 64
        # More connections than the process has descriptors: cap of them held at the backend,
        # the rest answered 503 at once, one after another.
        held = [await request(port, "/hold") for _ in range(cap)]
        for _ in range(cap):
            await asyncio.wait_for(holding.arrived.get(), 10)
        for _ in range(128):
            reader, writer = await request(port, "/ok")
            answer = await asyncio.wait_for(reader.read(-1), 10)
            writer.close()
            assert answer.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in answer
        for _ in held:
            holding.releases.put_nowait(None)
        for reader, writer in held:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 200 ")
            writer.close()
        warnings = [line for line in proc.lines if "connection limit reached" in line]
        assert len(warnings) == 1 and "open-files limit (128)" in warnings[0], proc.lines
        assert not blamed(proc.lines), proc.lines
        assert (await stats_backend(admin))["state"] == "up"
    finally:
        proc.kill()
        await proc.proc.wait()


async def test_running_out_of_descriptors_is_a_503_and_never_the_backends_fault(
        backends, serve_process, tmp_path, free_port):
    holding = Holding()
    backend = await backends.start_app("n1", holding.app())
    port, admin = free_port(), free_port()
    proc = await serve_process("serve", serve_config(tmp_path / "lb.toml", port, admin,
                                                     backend.url))
    await proc.wait_for_log("listening on")
    pid = proc.proc.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    # Leave the process no descriptor beyond a few above those it holds now.
    top = max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (top + 4, hard))
    clients, out_of_resources = [], None
    try:
        for _ in range(40):
            reader, writer = await request(port, "/hold")
            clients.append((reader, writer))
            arrived = asyncio.ensure_future(holding.arrived.get())
            answered = asyncio.ensure_future(reader.read(65536))
            done, _ = await asyncio.wait((arrived, answered), timeout=10,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done, "neither held by the backend nor answered"
            if answered in done:
                arrived.cancel()
                try:
                    data = answered.result()
                except ConnectionError:
                    data = b""
                if data.startswith(b"HTTP/1.1 503 ") and b"out of resources" in data:
                    out_of_resources = data
                    break
                # Dropped when accepted (no descriptor for it even then): one held request
                # ends with a close, freeing one descriptor, and the next client tries.
                assert data == b"", data
                holding.releases.put_nowait(None)
            else:
                answered.cancel()
        assert out_of_resources is not None
        assert b"Retry-After: 1" in out_of_resources
        # Probes cannot be made either: said once, and not a verdict on the backend.
        await proc.wait_for_log(r"backend n1 not probed: Too many open files \(in this "
                                r"process\); its health is left as it was")
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (soft, hard))
        for _ in clients:
            holding.releases.put_nowait(None)
        for _, writer in clients:
            writer.close()
    exhausted = [line for line in proc.lines if "out of resources while connecting" in line]
    assert len(exhausted) == 1 and "Too many open files (errno EMFILE)" in exhausted[0]
    assert not blamed(proc.lines), proc.lines
    # Descriptors back: the backend serves, and nothing was counted against it.
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/ok") as resp:
            assert resp.status == 200
    seen = await stats_backend(admin)
    assert seen["state"] == "up" and not seen["ejections"]
    assert seen["connect_errors"] == 0 and seen["failures"] == 0, seen


async def test_the_limit_is_raised_toward_what_max_connections_needs(tmp_path, write_config,
                                                                    free_port):
    """Started with a soft limit below its needs and a hard limit above: raised, and said."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 6065     # room to raise it here
    path = write_config({"p": ["http://127.0.0.1:9"]}, port=free_port(),
                        extra="[limits]\nmax_connections = 3000\n")
    proc = await start_limited(path, 256, hard)
    try:
        line = await proc.wait_for_log("open files limit")
        assert "open files limit raised from 256 to 6065 (hard " in line.string
        assert line.string.endswith("): room for max_connections 3000 and an upstream "
                                    "connection each")
        with open(f"/proc/{proc.proc.pid}/limits") as limits:
            row = next(r for r in limits if r.startswith("Max open files"))
        assert row.split()[3] == "6065"
    finally:
        proc.kill()
        await proc.proc.wait()
