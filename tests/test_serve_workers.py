"""``lbctl serve`` with a master and 2 workers, as real processes on loopback.

Which worker answered is read from the access log (``"worker": N``, written by the workers
to the master's stdout, read here as a stream) or, for requests still in flight, from the
X-Request-ID the proxy sends the backend: each worker's generated ids carry a prefix of
their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from tests.process import ENV, LBCTL, LbctlProcess


class Served:
    """A running ``lbctl serve --workers N`` and what it writes: the event log (stderr) and
    the access log (JSON lines on stdout)."""

    def __init__(self, proc: LbctlProcess, port: int, admin: int, path) -> None:
        self.proc = proc
        self.port = port
        self.admin = admin
        self.path = path
        self.access: list[dict] = []
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        stdout = self.proc.proc.stdout
        while line := await stdout.readline():
            async with self._changed:
                self.access.append(json.loads(line))
                self._changed.notify_all()

    async def logged(self, count: int, timeout: float = 10.0) -> list[dict]:
        """The first ``count`` access-log lines, once written."""
        async def enough():
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.access) >= count)
        await asyncio.wait_for(enough(), timeout)
        return self.access[:count]

    async def logged_for(self, path: str, count: int, timeout: float = 10.0) -> list[dict]:
        """The access-log lines of requests for ``path``, once there are ``count``."""
        def found():
            return [line for line in self.access if line["path"] == path]

        async def enough():
            async with self._changed:
                await self._changed.wait_for(lambda: len(found()) >= count)
        await asyncio.wait_for(enough(), timeout)
        return found()

    async def stats(self, query: str = "?history=0") -> dict:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.admin}/stats{query}") as resp:
                assert resp.status == 200
                return await resp.json()

    async def metrics(self) -> str:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{self.admin}/metrics") as resp:
                assert resp.status == 200
                return await resp.text()

    async def act(self, pool: str, backend: str, action: str, body: dict | None = None) -> int:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                    f"http://127.0.0.1:{self.admin}/pools/{pool}/backends/{backend}/{action}",
                    json=body if body is not None else {}) as resp:
                return resp.status

    def signal(self, sig: int) -> int:
        """Send ``sig`` to the master; the event log's length before it (for ``start=``)."""
        mark = len(self.proc.lines)
        self.proc.proc.send_signal(sig)
        return mark


def write(path, port: int, admin: int, pools: dict[str, list[str]], *, workers: int = 2,
          pool_extra: str = "", extra: str = "", route_extra: str = "",
          server_extra: str = "") -> None:
    """A config with [server] workers, an admin API and a JSON access log on stdout."""
    lines = [f'[listen]\naddress = "127.0.0.1:{port}"\n',
             f"[server]\nworkers = {workers}\n{server_extra}",
             f'[admin]\naddress = "127.0.0.1:{admin}"\n',
             '[log]\naccess = "stdout"\n', extra,
             f'[[routes]]\npool = "{next(iter(pools))}"\n{route_extra}\n']
    for pool, urls in pools.items():
        lines.append(f'[pools.{pool}]\nalgorithm = "round_robin"\n{pool_extra}\n')
        for i, url in enumerate(urls, 1):
            lines.append(f'[[pools.{pool}.backends]]\nurl = "{url}"\nname = "{pool}-{i}"\n')
    path.write_text("\n".join(lines))


@pytest.fixture
async def lb(serve_process, tmp_path, free_port):
    """``await lb(pools, ...)``: write the config and start serve; returns a ``Served``."""
    started: list[Served] = []

    async def start(pools: dict[str, list[str]], **options) -> Served:
        port, admin = free_port(), free_port()
        path = tmp_path / "lb.toml"
        write(path, port, admin, pools, **options)
        proc = await serve_process("serve", str(path))
        await proc.wait_for_log("listening on", timeout=30)
        served = Served(proc, port, admin, path)
        started.append(served)
        return served
    yield start
    for served in started:
        served._reader.cancel()


async def fresh(port: int, path: str = "/", headers: dict | None = None) -> tuple[int, str]:
    """One request on a new connection (so the kernel picks a worker for it)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
            return resp.status, await resp.text()


def prefix(request_id: str) -> str:
    """The generating worker's part of an X-Request-ID (``<prefix>-<counter>``)."""
    return request_id.rpartition("-")[0]


# ---- both workers serve; one view of them ----------------------------------------------------

async def test_two_workers_both_serve_and_stats_count_every_request(backends, lb):
    a, b = await backends.start("a"), await backends.start("b")
    served = await lb({"p": [a.url, b.url]})
    sent = 40
    results = [await fresh(served.port) for _ in range(sent)]
    assert {status for status, _ in results} == {200}

    lines = await served.logged(sent)
    by_worker = Counter(line["worker"] for line in lines)
    assert set(by_worker) == {1, 2}, by_worker            # both workers served
    # Request ids are generated per worker, so they never repeat across workers.
    assert len({line["request_id"] for line in lines}) == sent

    doc = await served.stats()
    assert doc["pid"] == served.proc.proc.pid                # the master's view
    assert doc["frontend"]["requests"] == sent
    assert doc["frontend"]["responses"]["2xx"] == sent
    assert sum(bk["requests"] for bk in doc["pools"][0]["backends"]) == sent
    rows = {row["index"]: row for row in doc["workers"]}
    assert set(rows) == {1, 2}
    assert {i: rows[i]["requests"] for i in rows} == dict(by_worker)
    assert served.proc.proc.pid not in {row["pid"] for row in rows.values()}
    assert all(row["state"] == "serving" for row in rows.values())

    metrics = await served.metrics()
    assert f'lbctl_http_responses_total{{class="2xx"}} {float(sent)}' in metrics
    attempts = sum(float(m) for m in re.findall(
        r'^lbctl_requests_total\{.*class="2xx".*\} (\S+)$', metrics, re.M))
    assert attempts == sent
    assert 'lbctl_workers{state="serving"} 2.0' in metrics
    assert 'lbctl_worker_restarts_total{worker="1"} 0.0' in metrics

    # lbctl stats reads the same whole-instance figures.
    result = await asyncio.to_thread(subprocess.run, [
        LBCTL, "stats", "--once", "--json", "--admin", f"127.0.0.1:{served.admin}"],
        capture_output=True, text=True, timeout=30, env=ENV)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["frontend"]["requests"] == sent


async def test_health_probes_once_per_interval_for_the_instance(backends, lb):
    probes: dict[str, list[float]] = {"a": [], "b": []}
    enough = asyncio.Event()

    def recording(name):
        async def handler(request, body):
            if request.path == "/healthz":
                probes[name].append(time.monotonic())
                if min(len(p) for p in probes.values()) >= 8:
                    enough.set()
            return web.Response(text=name)
        return handler
    a = await backends.start("a", recording("a"))
    b = await backends.start("b", recording("b"))
    interval = 0.2
    served = await lb({"p": [a.url, b.url]},
                      pool_extra=f'[pools.p.health]\ninterval = "{interval}s"\ntimeout = "1s"\n')
    await asyncio.wait_for(enough.wait(), 30)
    doc = await served.stats()
    for backend, name in zip(doc["pools"][0]["backends"], ("a", "b")):
        seen = len(probes[name])
        # The master's own count of its probes is what each backend received (a probe may
        # be on its way): no worker probes on its own.
        assert seen - 1 <= backend["probes"]["ok"] <= seen, (backend["probes"], seen)
    for times in probes.values():
        # One prober: probes start an interval apart, give or take its 10% jitter (a busy
        # machine only makes them later), so 8 probes span at least 7 x 0.9 intervals, less
        # what a probe's arrival may lag its start. A prober per worker as well would fit
        # them in under half of that.
        assert times[7] - times[0] >= 7 * 0.9 * interval - 0.1, times


async def test_admin_drain_reaches_every_worker(backends, lb):
    a, b = await backends.start("a"), await backends.start("b")
    served = await lb({"p": [a.url, b.url]})
    # Draining p-1: when the POST has answered, no worker sends it anything new.
    assert await served.act("p", "p-1", "drain") == 200
    results = [await fresh(served.port) for _ in range(30)]
    assert [text for _, text in results] == ["b"] * 30
    lines = await served.logged(30)
    assert {line["worker"] for line in lines} == {1, 2}
    assert (await served.stats())["pools"][0]["backends"][0]["state"] == "draining"

    assert await served.act("p", "p-1", "enable") == 200
    results = [await fresh(served.port) for _ in range(30)]
    assert {text for _, text in results} == {"a", "b"}


async def test_admin_weight_reaches_every_worker(backends, lb, tmp_path):
    a, b = await backends.start("a"), await backends.start("b")
    served = await lb({"p": [a.url, b.url]})
    served.path.write_text(served.path.read_text().replace('"round_robin"', '"weighted"'))
    mark = served.signal(signal.SIGHUP)
    await served.proc.wait_for_log("reloaded", start=mark)
    # Weights 1000 and 1: smooth weighted round robin gives p-2 one turn in 1,001, so in
    # each worker the next requests all go to p-1. A worker still at 1 and 1 would
    # alternate.
    assert await served.act("p", "p-1", "weight", {"weight": 1000}) == 200
    results = [await fresh(served.port) for _ in range(30)]
    lines = await served.logged(30)
    assert {line["worker"] for line in lines} == {1, 2}
    assert [text for _, text in results] == ["a"] * 30
    backend = (await served.stats())["pools"][0]["backends"][0]
    assert backend["weight"] == 1000


# ---- lifecycle ---------------------------------------------------------------------------------

async def load_loop(port: int, stop: asyncio.Event, *, clients: int = 8,
                    max_requests: int = 5_000, new_connections: bool = False) -> list:
    """Bounded load: at most ``max_requests``, ending when ``stop`` is set. Returns
    (start time, outcome) per request, the outcome a status or an exception's name."""
    results: list = []
    budget = iter(range(max_requests))
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(force_close=new_connections)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        async def client():
            for _ in budget:
                if stop.is_set():
                    return
                started = time.monotonic()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/") as resp:
                        await resp.read()
                        results.append((started, resp.status))
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    results.append((started, type(exc).__name__))
        await asyncio.gather(*(client() for _ in range(clients)))
    return results


async def test_a_killed_worker_is_replaced_and_the_others_connections_are_untouched(
        backends, lb):
    ids: list[str] = []

    async def echo(request, body):
        ids.append(request.headers["X-Request-ID"])
        return web.Response(text="a")
    a = await backends.start("a", echo)
    served = await lb({"p": [a.url]})
    # A keep-alive connection, and which worker holds it.
    reader, writer = await asyncio.open_connection("127.0.0.1", served.port)

    async def on_kept() -> bytes:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200")
        return await reader.readexactly(1)
    await on_kept()
    kept_prefix = prefix(ids[-1])
    doc = await served.stats()
    kept_worker = next(row for row in doc["workers"] if row["connections"] == 1)
    victim = next(row for row in doc["workers"] if row["index"] != kept_worker["index"])

    stop = asyncio.Event()
    load = asyncio.ensure_future(load_loop(served.port, stop, new_connections=True))
    await served.logged(50)                                  # the load is flowing
    mark = len(served.proc.lines)
    os.kill(victim["pid"], signal.SIGKILL)
    await served.proc.wait_for_log(
        rf"worker {victim['index']} \(pid {victim['pid']}\) killed by SIGKILL", start=mark)
    noticed = time.monotonic()
    match = await served.proc.wait_for_log(rf"worker {victim['index']} replaced: pid (\d+)",
                                           start=mark)
    await served.logged(len(served.access) + 50)             # more after the replacement
    stop.set()
    results = await load

    # Every request started once the master had seen the death was served; the few that
    # failed were on the killed worker's connections at the time.
    assert [r for t, r in results if t >= noticed and r != 200] == []
    failed = [r for _, r in results if r != 200]
    assert len(failed) <= 8, Counter(failed)
    # The other worker's kept connection never noticed.
    await on_kept()
    assert prefix(ids[-1]) == kept_prefix
    doc = await served.stats()
    rows = {row["index"]: row for row in doc["workers"]}
    assert rows[victim["index"]]["pid"] == int(match.group(1)) != victim["pid"]
    assert rows[victim["index"]]["restarts"] == 1
    assert rows[kept_worker["index"]]["pid"] == kept_worker["pid"]
    assert f'lbctl_worker_restarts_total{{worker="{victim["index"]}"}} 1.0' in \
        await served.metrics()
    # Both workers serve again.
    for _ in range(20):
        assert await fresh(served.port, "/after") == (200, "a")
    assert {line["worker"] for line in await served.logged_for("/after", 20)} == {1, 2}
    writer.close()
    served.signal(signal.SIGTERM)
    assert await served.proc.wait() == 0


async def test_twenty_reloads_valid_and_invalid_under_load_lose_no_request(backends, lb):
    a, b = await backends.start("a"), await backends.start("b")
    served = await lb({"p": [a.url]})
    good = served.path.read_text()
    stop = asyncio.Event()
    loads = [asyncio.ensure_future(load_loop(served.port, stop)),
             asyncio.ensure_future(load_loop(served.port, stop, clients=4,
                                             new_connections=True))]
    current = a.url
    try:
        for i in range(20):
            if i % 2:                   # odd: an invalid file, rejected by every worker
                served.path.write_text(good.replace("round_robin", "round_robbin"))
                mark = served.signal(signal.SIGHUP)
                await served.proc.wait_for_log("still serving the previous configuration",
                                               start=mark)
            else:                       # even: the backend swaps between b and a
                target = (b.url, a.url)[(i // 2) % 2]
                good, current = good.replace(current, target), target
                served.path.write_text(good)
                mark = served.signal(signal.SIGHUP)
                await served.proc.wait_for_log("reloaded", start=mark)
    finally:
        stop.set()
        results = [r for load in loads for r in await load]
    assert Counter(r for _, r in results) == {200: len(results)}
    assert len(results) > 40
    # The last valid config (backend a) is what every worker serves now.
    texts = [(await fresh(served.port, "/after"))[1] for _ in range(20)]
    assert texts == ["a"] * 20
    assert {line["worker"] for line in await served.logged_for("/after", 20)} == {1, 2}
    served.signal(signal.SIGTERM)
    assert await served.proc.wait() == 0


async def test_sigterm_drains_slow_requests_on_both_workers_and_exits_0(backends, lb):
    release = asyncio.Event()
    workers_holding: set[str] = set()
    both = asyncio.Event()

    async def slow(request, body):
        workers_holding.add(prefix(request.headers["X-Request-ID"]))
        if len(workers_holding) == 2:
            both.set()
        await release.wait()
        return web.Response(text="finished")
    a = await backends.start("a", slow)
    served = await lb({"p": [a.url]})
    in_flight = []
    while not both.is_set() and len(in_flight) < 64:      # new connections until both hold one
        in_flight.append(asyncio.ensure_future(fresh(served.port)))
        try:
            await asyncio.wait_for(asyncio.shield(both.wait()), 0.05)
        except asyncio.TimeoutError:
            pass
    await asyncio.wait_for(both.wait(), 10)
    mark = served.signal(signal.SIGTERM)
    await served.proc.wait_for_log("no longer accepting", start=mark)
    with pytest.raises(OSError):                             # nobody accepts any more
        await asyncio.open_connection("127.0.0.1", served.port)
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*in_flight), 15)
    assert results == [(200, "finished")] * len(in_flight)
    assert await served.proc.wait() == 0
    await served.proc.wait_for_log("stopped$", start=mark)


async def test_port_in_use_and_a_second_serve_fail_with_one_line(backends, lb, tmp_path,
                                                                  free_port):
    a = await backends.start("a")
    # A port something else listens on.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = tmp_path / "taken.toml"
        write(path, port, free_port(), {"p": [a.url]})
        result = await asyncio.to_thread(run_in_session, [LBCTL, "serve", str(path)])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"lbctl: cannot listen on 127.0.0.1:{port}: address already in use"]
    # A second serve on the port of a running instance does not join its workers' group.
    served = await lb({"p": [a.url]})
    second = tmp_path / "second.toml"
    write(second, served.port, free_port(), {"p": [a.url]})
    for workers in ("2", "1"):
        result = await asyncio.to_thread(run_in_session, [LBCTL, "serve", "--workers",
                                                          workers, str(second)])
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1] == \
            f"lbctl: cannot listen on 127.0.0.1:{served.port}: address already in use"
    assert await fresh(served.port) == (200, "a")


async def test_a_worker_that_cannot_start_is_one_line_and_exit_1(backends, tmp_path,
                                                                free_port):
    a = await backends.start("a")
    path = tmp_path / "lb.toml"
    write(path, free_port(), free_port(), {"p": [a.url]},
          extra='[log]\naccess = "no/such/dir/access.log"\n')
    path.write_text(path.read_text().replace('[log]\naccess = "stdout"\n', ""))
    result = await asyncio.to_thread(run_in_session, [LBCTL, "serve", str(path)])
    assert result.returncode == 1
    # The admin API was up (and said so) before the workers started; then one line says
    # what went wrong, and nothing is left running (run_in_session).
    errors = [line for line in result.stderr.splitlines() if " INFO " not in line]
    assert len(errors) == 1 and "cannot open the access log" in errors[0], result.stderr
    assert errors[0].startswith("lbctl: ") and errors[0].endswith("No such file or directory")


def run_in_session(argv: list[str]) -> subprocess.CompletedProcess:
    """Run ``argv`` in a session of its own; after it exits, nothing of that session may be
    left running (no worker, no fork server)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV, start_new_session=True)
    out, err = proc.communicate(timeout=60)
    left = [pid for pid in _pids() if _sid(pid) == proc.pid]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == [], f"left running: {left}"
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _sid(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


async def test_workers_end_when_the_master_is_killed(backends, tmp_path, free_port):
    a = await backends.start("a")
    path = tmp_path / "lb.toml"
    port = free_port()
    write(path, port, free_port(), {"p": [a.url]})
    proc = subprocess.Popen([LBCTL, "serve", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=ENV, start_new_session=True)
    try:
        line = await asyncio.to_thread(proc.stderr.readline)
        while "listening on" not in line:
            assert line, "serve exited"
            line = await asyncio.to_thread(proc.stderr.readline)
        assert await fresh(port) == (200, "a")
        proc.kill()
        proc.wait(10)
        # Every worker sees its channel close, drains (nothing in flight) and exits; the
        # fork server too. The session empties.
        deadline = time.monotonic() + 20
        while [pid for pid in _pids() if _sid(pid) == proc.pid]:
            assert time.monotonic() < deadline, "workers outlived their master"
            await asyncio.sleep(0.05)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        for pid in [pid for pid in _pids() if _sid(pid) == proc.pid]:
            os.kill(pid, signal.SIGKILL)
        proc.stderr.close()


async def test_sigusr1_reopens_the_access_log_in_every_worker(backends, lb, tmp_path):
    a = await backends.start("a")
    log_path = tmp_path / "access.log"
    served = await lb({"p": [a.url]})
    served.path.write_text(served.path.read_text().replace(
        'access = "stdout"', f'access = "{log_path}"'))
    mark = served.signal(signal.SIGHUP)
    await served.proc.wait_for_log("reloaded", start=mark)
    for _ in range(10):
        assert await fresh(served.port) == (200, "a")
    rotated = tmp_path / "access.log.1"
    deadline = time.monotonic() + 10
    while len(log_path.read_text().splitlines()) < 10:        # written every 50 ms
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    log_path.rename(rotated)
    mark = served.signal(signal.SIGUSR1)
    await served.proc.wait_for_log("access log reopened", start=mark)
    sent = 0
    while not log_path.exists() or {json.loads(line)["worker"] for line in
                                    log_path.read_text().splitlines()} != {1, 2}:
        assert sent < 200, "a worker still writes to the rotated file"
        assert await fresh(served.port) == (200, "a")
        sent += 1
        await asyncio.sleep(0.01)
    assert len(rotated.read_text().splitlines()) == 10


async def test_a_route_limit_holds_for_the_instance_not_per_worker(backends, lb):
    a = await backends.start("a")
    limit = 12
    served = await lb({"p": [a.url]},
                      route_extra=f'rate_limit = {{ rate = {limit}, per = "1h", burst = {limit} }}')
    results = [await fresh(served.port, "/limited") for _ in range(3 * limit)]
    lines = await served.logged_for("/limited", 3 * limit)
    assert {line["worker"] for line in lines} == {1, 2}          # both workers decided
    # Exactly the burst gets through, whichever worker each request reached; the rest are
    # refused (a limit per worker would have let up to twice as many through).
    assert [status for status, _ in results] == [200] * limit + [429] * (2 * limit)
    by_worker = Counter((line["worker"], line["status"]) for line in lines)
    assert by_worker[(1, 200)] + by_worker[(2, 200)] == limit


async def test_a_route_limit_in_redis_holds_for_the_instance(backends, serve_process, tmp_path,
                                                             free_port, redis_server):
    from tests.redis_support import PASSWORD
    client = redis_server.client()
    await client.flushdb()
    await client.aclose()
    a = await backends.start("a")
    limit = 12
    path = tmp_path / "lb.toml"
    port = free_port()
    write(path, port, free_port(), {"p": [a.url]},
          route_extra=f'rate_limit = {{ rate = {limit}, per = "1h", burst = {limit} }}',
          extra=f'[store]\nbackend = "redis"\nurl = "{redis_server.url}"\ntimeout = "1s"\n')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on", timeout=30)
    # One line for the instance, not one per worker.
    assert sum(": up; rate limits are shared" in line for line in proc.lines) == 1
    assert not any(PASSWORD in line for line in proc.lines)
    statuses = [(await fresh(port))[0] for _ in range(3 * limit)]
    assert statuses == [200] * limit + [429] * (2 * limit)


class Connection:
    """One keep-alive client connection (so every request on it reaches the same worker)."""

    def __init__(self, reader, writer) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> "Connection":
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def get(self, path: str) -> int:
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: lb\r\n\r\n".encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
        await self.reader.readexactly(length)
        return int(head.split()[1])

    def close(self) -> None:
        self.writer.close()


async def connection_per_worker(served: Served) -> dict[int, Connection]:
    """A kept connection to each of the two workers, told apart by the access log."""
    held: dict[int, Connection] = {}
    for n in range(64):
        conn = await Connection.open(served.port)
        assert await conn.get(f"/probe/{n}") == 200
        worker = (await served.logged_for(f"/probe/{n}", 1))[0]["worker"]
        if worker in held:
            conn.close()
        else:
            held[worker] = conn
        if len(held) == 2:
            return held
    raise AssertionError("64 connections reached one worker")


async def test_passive_ejection_is_decided_on_the_whole_instances_outcomes(backends, lb):
    async def failing(request, body):
        return web.Response(status=500, text="broken")
    ok, broken = await backends.start("ok"), await backends.start("broken", failing)
    served = await lb({"p": [broken.url], "probe": [ok.url]})
    text = served.path.read_text()
    # Requests for /probe/... go to a healthy pool; everything else to the broken backend,
    # ejected after 3 failures in a row.
    text = text.replace('[[routes]]\npool = "p"\n', '[[routes]]\npath_prefix = "/probe"\n'
                        'pool = "probe"\n\n[[routes]]\npool = "p"\n')
    text = text.replace('[pools.probe]', '[pools.p.outlier]\nconsecutive_failures = 3\n'
                        'max_ejection_percent = 100\nejection_time = "5m"\n\n[pools.probe]')
    served.path.write_text(text)
    mark = served.signal(signal.SIGHUP)
    await served.proc.wait_for_log("reloaded", start=mark)
    held = await connection_per_worker(served)

    # Two failures through worker 1, one through worker 2: neither worker saw three in a
    # row, the instance did.
    assert [await held[1].get("/x") for _ in range(2)] == [500, 500]
    assert await held[2].get("/x") == 500
    await served.proc.wait_for_log(r"backend p-1 EJECTED for 5m after 3 consecutive failures",
                                   start=mark)
    # Both workers know at once: no backend is left for the pool.
    assert await held[1].get("/x") == 503
    assert await held[2].get("/x") == 503
    assert sum("EJECTED" in line for line in served.proc.lines) == 1
    backend = (await served.stats())["pools"][0]["backends"][0]
    assert (backend["state"], backend["ejections"], backend["requests"]) == ("ejected", 1, 3)
    for conn in held.values():
        conn.close()


async def test_backends_added_and_removed_at_run_time_reach_every_worker(backends, lb):
    a, b = await backends.start("a"), await backends.start("b")
    served = await lb({"p": [a.url]})
    async with aiohttp.ClientSession() as session:
        url = f"http://127.0.0.1:{served.admin}/pools/p/backends"
        async with session.post(url, json={"url": b.url, "name": "added"}) as resp:
            assert resp.status == 201
        # Answered once every worker has it: both rotate over the two backends at once.
        results = [await fresh(served.port, "/after-add") for _ in range(30)]
        lines = await served.logged_for("/after-add", 30)
        assert {line["worker"] for line in lines} == {1, 2}
        for worker in (1, 2):
            used = [line["backend"] for line in lines if line["worker"] == worker]
            if len(used) >= 2:          # each worker's rotation takes in the newcomer
                assert set(used) == {"p-1", "added"}, (worker, used)
        assert {text for _, text in results} == {"a", "b"}
        doc = await served.stats()
        assert {bk["name"]: bk["source"] for bk in doc["pools"][0]["backends"]} == \
            {"p-1": "static", "added": "admin"}
        async with session.delete(f"{url}/added") as resp:
            assert resp.status in (200, 202)
        results = [await fresh(served.port, "/after-remove") for _ in range(20)]
        assert {text for _, text in results} == {"a"}
        lines = await served.logged_for("/after-remove", 20)
        assert {line["worker"] for line in lines} == {1, 2}
    doc = await served.stats()
    assert [bk["name"] for bk in doc["pools"][0]["backends"]] == ["p-1"]


async def test_pid_file_reload_and_systemd_speak_for_the_master(backends, tmp_path, free_port):
    from tests.test_process_control import NotifySocket
    a, b = await backends.start("a"), await backends.start("b")
    path = tmp_path / "lb.toml"
    port = free_port()
    write(path, port, free_port(), {"p": [a.url]})
    pid_file = tmp_path / "lb.pid"
    notify = NotifySocket(tmp_path, abstract=True)
    try:
        proc = LbctlProcess(await asyncio.create_subprocess_exec(
            LBCTL, "serve", "--pid-file", str(pid_file), str(path),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**ENV, "NOTIFY_SOCKET": notify.env}))
        ready = await notify.receive()
        assert ready["READY"] == "1" and "with 2 workers" in ready["STATUS"]
        await proc.wait_for_log("listening on")
        # The pid file names the master, the one to signal; no worker may notify systemd.
        assert int(pid_file.read_text()) == proc.proc.pid
        worker_pids = [int(p) for p in re.search(r"\(pids ([\d, ]+)\)",
                                                 "\n".join(proc.lines)).group(1).split(", ")]
        assert len(worker_pids) == 2 and proc.proc.pid not in worker_pids
        for pid in worker_pids:
            assert b"NOTIFY_SOCKET" not in open(f"/proc/{pid}/environ", "rb").read()

        # lbctl reload finds the master through the pid file; every worker swaps.
        path.write_text(path.read_text().replace(a.url, b.url))
        mark = len(proc.lines)
        done = await asyncio.to_thread(subprocess.run, [
            LBCTL, "reload", str(path), "--pid-file", str(pid_file)],
            capture_output=True, text=True, timeout=30, env=ENV)
        assert done.returncode == 0, done.stderr
        assert (await notify.receive())["RELOADING"] == "1"
        assert (await notify.receive())["STATUS"].startswith("reloaded")
        await proc.wait_for_log("reloaded", start=mark)
        assert {(await fresh(port))[1] for _ in range(20)} == {"b"}

        proc.proc.send_signal(signal.SIGTERM)
        assert (await notify.receive())["STOPPING"] == "1"
        assert await proc.wait() == 0
        assert not pid_file.exists()
    finally:
        notify.close()


async def test_a_worker_that_keeps_dying_is_restarted_later_each_time(backends, lb):
    a = await backends.start("a")
    served = await lb({"p": [a.url]})
    doc = await served.stats()
    pid = next(row["pid"] for row in doc["workers"] if row["index"] == 1)
    delays = []
    for _ in range(3):
        mark = len(served.proc.lines)
        os.kill(pid, signal.SIGKILL)
        died = await served.proc.wait_for_log(
            rf"worker 1 \(pid {pid}\) killed by SIGKILL; starting a new one(?: in (\S+)s)?",
            start=mark)
        delays.append(died.group(1))
        pid = int((await served.proc.wait_for_log(r"worker 1 replaced: pid (\d+)",
                                                  start=mark)).group(1))
    # The first replacement is at once; one that dies soon after it started waits, longer
    # each time.
    assert delays == [None, "0.5", "1"]
    assert sum("it keeps exiting soon after it starts" in line
               for line in served.proc.lines) == 2
    assert await fresh(served.port) == (200, "a")
    rows = {row["index"]: row for row in (await served.stats())["workers"]}
    assert rows[1]["restarts"] == 3 and rows[1]["pid"] == pid and rows[2]["restarts"] == 0


async def test_workers_sharing_the_masters_socket(backends, lb, tmp_path, free_port):
    # reuse_port = false: the master listens and every worker accepts from its socket.
    a = await backends.start("a")
    served = await lb({"p": [a.url]}, server_extra="reuse_port = false\n")
    results = [await fresh(served.port, "/shared") for _ in range(20)]
    assert results == [(200, "a")] * 20
    doc = await served.stats()
    assert doc["frontend"]["requests"] == 20
    assert sum(row["requests"] for row in doc["workers"]) == 20
    # The socket is the master's: a second serve cannot take the port...
    second = tmp_path / "second.toml"
    write(second, served.port, free_port(), {"p": [a.url]})
    result = await asyncio.to_thread(run_in_session, [LBCTL, "serve", str(second)])
    assert result.returncode == 1 and "address already in use" in result.stderr
    # ...and a worker's death loses no connection not yet accepted: the other one takes them.
    stop = asyncio.Event()
    load = asyncio.ensure_future(load_loop(served.port, stop, new_connections=True))
    await served.logged_for("/", 20)
    victim = doc["workers"][0]
    mark = len(served.proc.lines)
    os.kill(victim["pid"], signal.SIGKILL)
    await served.proc.wait_for_log(rf"worker {victim['index']} replaced", start=mark)
    noticed = time.monotonic()
    await served.logged(len(served.access) + 20)
    stop.set()
    results = await load
    assert [r for t, r in results if t >= noticed and r != 200] == []
    assert len([r for _, r in results if r != 200]) <= 8


# ---- the data plane's hardening, in every worker ----------------------------------------------

async def test_a_second_sigterm_stops_the_workers_drain_at_once(backends, lb):
    """The first SIGTERM drains every worker; a second one closes what they hold now, says
    how many connections, and the master exits 0 long before drain_timeout."""
    holders: set[str] = set()
    both, release = asyncio.Event(), asyncio.Event()
    arrived: asyncio.Queue = asyncio.Queue()

    async def hold(request, body):
        holders.add(prefix(request.headers["X-Request-ID"]))
        if len(holders) == 2:
            both.set()
        arrived.put_nowait(None)
        await release.wait()                    # only after the test: a stop must end it
        return web.Response(text="late")
    a = await backends.start("a", hold)
    served = await lb({"p": [a.url]}, extra='[limits]\ndrain_timeout = "5m"\n')
    clients = []
    while not both.is_set() and len(clients) < 64:     # until both workers hold one
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        clients.append((reader, writer))
        await asyncio.wait_for(arrived.get(), 10)       # held at the backend
    assert both.is_set()
    mark = served.signal(signal.SIGTERM)
    await served.proc.wait_for_log("no longer accepting; draining 2 workers", start=mark)
    served.signal(signal.SIGTERM)
    await served.proc.wait_for_log(
        f"second signal: stopping at once, closing {len(clients)} connections$", start=mark)
    assert await served.proc.wait(15) == 0              # not the five minutes of the drain
    for reader, writer in clients:
        try:
            assert await asyncio.wait_for(reader.read(-1), 5) == b""
        except ConnectionError:
            pass                                        # aborted: a reset is an EOF too
        writer.close()
    release.set()
    assert any(re.search(r"stopped$", line) for line in served.proc.lines[mark:])


async def on_worker(served: Served, index: int) -> Connection:
    """A new connection that worker ``index`` accepted (told by the access log)."""
    for _ in range(64):
        conn = await Connection.open(served.port)
        path = f"/probe/{time.monotonic_ns()}"
        assert await conn.get(path) == 200
        if (await served.logged_for(path, 1))[0]["worker"] == index:
            return conn
        conn.close()
    raise AssertionError(f"64 connections and none reached worker {index}")


async def test_truncated_responses_eject_on_the_instances_outcomes_without_outlier(
        backends, lb):
    """No [outlier]: five truncated responses in a row eject, counted across the workers
    (three through one worker, two through the other: neither saw five)."""
    async def cut(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()
    cutting = await backends.start_raw(cut)
    ok = await backends.start("ok")
    served = await lb({"p": [f"http://127.0.0.1:{cutting}", ok.url], "probe": [ok.url]})
    text = served.path.read_text()
    # /probe/... goes to a healthy pool (to find the worker); the rest to p, whose second
    # backend is a backup: every request reaches p-1 while it is in.
    text = text.replace('[[routes]]\npool = "p"\n', '[[routes]]\npath_prefix = "/probe"\n'
                        'pool = "probe"\n\n[[routes]]\npool = "p"\n')
    text = text.replace('name = "p-2"\n', 'name = "p-2"\nbackup = true\n')
    assert "outlier" not in text
    served.path.write_text(text)
    mark = served.signal(signal.SIGHUP)
    await served.proc.wait_for_log("reloaded", start=mark)

    async def truncated_through(index: int) -> None:
        conn = await on_worker(served, index)
        conn.writer.write(b"GET /x HTTP/1.1\r\nHost: lb\r\n\r\n")
        try:
            answer = await asyncio.wait_for(conn.reader.read(-1), 10)
        except ConnectionError:
            answer = b""
        conn.close()
        assert answer.startswith(b"HTTP/1.1 200 ") and not answer.endswith(b"\r\n\r\n")
        assert len(answer.partition(b"\r\n\r\n")[2]) < 100          # cut short, then closed
    for index in (1, 1, 2, 2):
        await truncated_through(index)
    assert not [line for line in served.proc.lines[mark:] if "EJECTED" in line]
    await truncated_through(1)
    await served.proc.wait_for_log(r"backend p-1 EJECTED for 30s after 5 consecutive "
                                   r"failures \(last: truncated\)", start=mark)
    # Both workers know: the backup answers, whole, on either.
    for index in (1, 2):
        conn = await on_worker(served, index)
        assert await conn.get("/after") == 200
        conn.close()
    after = await served.logged_for("/after", 2)
    assert sorted((line["worker"], line["backend"]) for line in after) == \
        [(1, "p-2"), (2, "p-2")]
    assert sum("EJECTED" in line for line in served.proc.lines) == 1
    cut_lines = [line for line in served.access if line["path"] == "/x"]
    assert Counter(line["termination"] for line in cut_lines) == {"upstream_truncated": 5}


async def test_each_worker_keeps_within_its_open_files_limit(backends, tmp_path, free_port):
    """Started with a soft and hard limit of 128: the master says the cap once, each worker
    holds that many client connections, and the instance answers 503 past both."""
    holding: asyncio.Queue = asyncio.Queue()
    release = asyncio.Event()

    async def hold(request, body):
        holding.put_nowait(None)
        await release.wait()
        return web.Response(text="held")
    a = await backends.start("a", hold)
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    write(path, port, admin, {"p": [a.url]})

    def limit() -> None:
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
    proc = LbctlProcess(await asyncio.create_subprocess_exec(
        LBCTL, "serve", str(path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=ENV, preexec_fn=limit))
    clients = []
    try:
        match = await proc.wait_for_log(
            r"open files limit 128 \(hard 128\) is below the \d+ that max_connections 10000 "
            r"needs: at most (\d+) client connections at once in each of the 2 workers")
        cap = int(match.group(1))
        await proc.wait_for_log("listening on", timeout=30)
        held = refused = 0
        for _ in range(8 * cap):                # bounded: the kernel picks each one's worker
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            clients.append((reader, writer))
            got = asyncio.ensure_future(holding.get())
            answered = asyncio.ensure_future(reader.read(65536))
            done, _ = await asyncio.wait((got, answered), timeout=10,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done, "neither held nor answered"
            if got in done:
                answered.cancel()
                held += 1
            else:
                got.cancel()
                assert answered.result().startswith(b"HTTP/1.1 503 ")
                refused += 1
                if held == 2 * cap and refused >= 16:
                    break
        # Each worker held its cap, never more; past that every connection got a 503.
        assert held == 2 * cap, (held, cap)
        warnings = [line for line in proc.lines if "connection limit reached" in line]
        assert sorted(re.search(r"worker (\d+): ", line).group(1) for line in warnings) == \
            ["1", "2"], warnings                # once per worker, each for its own cap
    finally:
        release.set()
        for _, writer in clients:
            writer.close()
        proc.kill()
        await proc.proc.wait()


def open_files_soft(pid: int) -> int:
    with open(f"/proc/{pid}/limits") as limits:
        return int(next(r for r in limits if r.startswith("Max open files")).split()[3])


async def test_a_reload_that_needs_more_open_files_raises_every_workers_limit(
        backends, tmp_path, free_port):
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard == resource.RLIM_INFINITY or hard >= 6065     # room to raise it here
    a = await backends.start("a")
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    write(path, port, admin, {"p": [a.url]}, extra="[limits]\nmax_connections = 100\n")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
    proc = LbctlProcess(await asyncio.create_subprocess_exec(
        LBCTL, "serve", str(path), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, env=ENV, preexec_fn=limit))
    served = Served.__new__(Served)             # the admin API and signals only
    served.proc, served.port, served.admin, served.path = proc, port, admin, path
    try:
        # 2 x 100 client and upstream connections, 64 kept aside, one per backend.
        line = await proc.wait_for_log("open files limit raised from 200 to 265 \\(hard ")
        assert line.string.endswith("an upstream connection each (in each of the 2 workers)")
        await proc.wait_for_log("listening on", timeout=30)
        pids = [row["pid"] for row in (await served.stats())["workers"]]
        assert [open_files_soft(pid) for pid in pids] == [265, 265]
        path.write_text(path.read_text().replace("max_connections = 100",
                                                 "max_connections = 3000"))
        mark = served.signal(signal.SIGHUP)
        await proc.wait_for_log("reloaded", start=mark)
        await proc.wait_for_log("open files limit raised from 265 to 6065", start=mark)
        await served.stats()        # answered after the reload's commit: both have applied it
        assert [open_files_soft(pid) for pid in pids] == [6065, 6065]
        assert await fresh(port) == (200, "a")
        served.signal(signal.SIGTERM)
        assert await proc.wait() == 0
    finally:
        if proc.proc.returncode is None:
            proc.kill()
            await proc.proc.wait()
