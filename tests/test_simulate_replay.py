"""``lbctl simulate --replay``: lbctl's, nginx's and HAProxy's logs as the workload.

The last test is the promise: a log that ``lbctl serve`` wrote under a known workload,
replayed, gives that workload's result within a stated tolerance.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import statistics

import aiohttp
import pytest
from aiohttp import web
from click.testing import CliRunner

from lbctl.cli import main
from lbctl.config.loader import ConfigError
from lbctl.config.problems import Problems
from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.replay import Logged, compile_nginx, load_trace, queue_free
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import BackendSpec, Scenario, Service, Workload, load_scenario


def lbctl_line(epoch, backend, upstream, path="/a?x=1", method="GET", status=200, attempts=1,
               client="10.0.0.1"):
    return json.dumps({"time": "t", "epoch": epoch, "client": client, "method": method,
                       "path": path, "status": status, "duration": (upstream or 0) + 0.001,
                       "backend": backend, "upstream_time": upstream, "attempts": attempts,
                       "user_agent": "curl", "host": "h"}) + "\n"


def trace(path, fmt="auto", log_format=None, key="path", speedup=1.0):
    problems = Problems(str(path))
    t = load_trace(str(path), fmt, log_format, speedup, key, problems, "workload.replay")
    assert not problems, [str(p) for p in problems.items]
    return t


def test_lbctl_json_log(tmp_path):
    log = tmp_path / "access.log"
    log.write_text(lbctl_line(100.5, "b1", 0.010, client="10.0.0.2")
                   + lbctl_line(100.0, "b2", 0.020, path="/b")
                   + "not json\n\n"
                   + lbctl_line(101.0, "b1", None, status=502, method="POST")
                   + lbctl_line(102.0, "b1", 0.030, status=503))
    t = trace(log)
    assert t.format == "lbctl" and t.lines == 5 and t.skipped == 1
    # Sorted by start, from the first: the log is written as requests end.
    assert list(t.times) == [0.0, 0.5, 1.0, 2.0]
    assert t.keys == ["/b", "/a", "/a", "/a"]               # the path, query left out
    assert list(t.replayable) == [1, 1, 0, 1]                # a POST is not retried
    assert t.logged["b1"].times == [0.010] and t.logged["b1"].errors == [0.030]
    samples, errors = t.service("b1", 1)
    assert samples == (0.010,)
    assert errors == (0.5, 0.030)                            # one 5xx of two answers
    assert trace(log, key="ip").keys[:2] == ["10.0.0.1", "10.0.0.2"]
    assert list(trace(log, speedup=2.0).times) == [0.0, 0.25, 0.5, 1.0]


NGINX_FORMAT = ('$remote_addr - [$time_local] "$request" $status $body_bytes_sent '
                '"$http_user_agent" $msec $request_time $upstream_response_time '
                '$upstream_addr "$http_x_user"')


def test_nginx_log_with_its_log_format(tmp_path):
    log = tmp_path / "nginx.log"
    log.write_text(
        '10.0.0.1 - [10/Oct/2026:13:55:36 +0000] "GET /a?q=1 HTTP/1.1" 200 5 "curl/8" '
        '1791640536.120 0.020 0.018 127.0.0.1:9001 "alice"\n'
        '10.0.0.2 - [10/Oct/2026:13:55:36 +0000] "POST /b HTTP/1.1" 502 0 "Mozilla 5.0 (X)" '
        '1791640536.200 0.050 0.010, 0.030 127.0.0.1:9001, 127.0.0.1:9002 "bob"\n'
        'garbage\n')
    t = trace(log, log_format=NGINX_FORMAT)
    assert t.format == "nginx" and t.skipped == 1
    # Start = the log time (the end) minus $request_time.
    assert list(t.times) == pytest.approx([0.0, 0.05], abs=1e-6)    # starts .100 and .150
    assert t.keys == ["/a", "/b"] and list(t.replayable) == [1, 0]
    # The last upstream of a retried request; a retried one is not a clean sample.
    assert t.logged["127.0.0.1:9001"].times == [0.018]
    assert t.logged["127.0.0.1:9002"].errors == [0.030]
    assert trace(log, log_format=NGINX_FORMAT, key="header:X-User").keys == ["alice", "bob"]
    regex, names = compile_nginx(NGINX_FORMAT)
    assert names[:3] == ["remote_addr", "time_local", "request"]


def test_haproxy_http_log(tmp_path):
    log = tmp_path / "haproxy.log"
    log.write_text(
        'Feb  6 12:14:14 lb haproxy[14389]: 10.0.1.2:33317 [06/Feb/2026:12:14:14.655] '
        'http-in static/srv1 10/0/30/69/109 200 2750 - - ---- 1/1/1/1/0 0/0 "GET /i.html HTTP/1.1"\n'
        'Feb  6 12:14:15 lb haproxy[14389]: 10.0.1.3:33318 [06/Feb/2026:12:14:15.000] '
        'http-in static/srv2 5/0/1/-1/3005 504 0 - - sH-- 1/1/1/1/0 0/0 "GET /x HTTP/1.1"\n'
        'Feb  6 12:14:16 lb haproxy[14389]: 10.0.1.3:33319 [06/Feb/2026:12:14:16.000] '
        'http-in static/srv1 0/0/1/40/45 200 10 - - ---- 1/1/1/1/1 0/0 "DELETE /y HTTP/1.1"\n')
    t = trace(log)
    assert t.format == "haproxy"
    # Arrival = accept + TR; Tr is the server's time; a retried request is no clean sample.
    assert list(t.times) == pytest.approx([0.0, 0.34, 1.335], abs=1e-6)   # 14.665, 15.005, 16
    assert t.keys == ["/i.html", "/x", "/y"]
    assert t.logged["srv1"].times == [0.069, 0.040] and list(t.logged["srv1"].clean) == [1, 0]
    assert "srv2" not in t.logged                             # no response: no sample


def test_queueing_inside_logged_times_is_left_out():
    # One worker. Request 2 starts while request 1 is in flight: its 30 ms include 20 ms of
    # waiting for the worker, so it is not a service sample; request 3 finds it free.
    logged = Logged(starts=[0.0, 0.01, 0.1], times=[0.03, 0.03, 0.01],
                    clean=bytearray([1, 1, 1]))
    assert queue_free(logged, 1) == [0.03, 0.01]
    assert queue_free(logged, 2) == [0.03, 0.03, 0.01]


def test_replay_errors_read_like_validate(tmp_path):
    log = tmp_path / "a.log"
    log.write_text(lbctl_line(1.0, "b1", 0.01))
    scenario = tmp_path / "s.toml"
    scenario.write_text(f'[workload]\nreplay = "{log}"\nrate = 10\nkey = "header:X-Trace"\n')
    with pytest.raises(ConfigError) as info:
        load_scenario(str(scenario))
    lines = [str(p) for p in info.value.problems]
    assert f"{scenario}: workload.rate: expected no rate with replay" in lines[0]
    assert "does not record header 'x-trace'" in lines[1]
    result = CliRunner().invoke(main, ["simulate", "--replay", str(tmp_path / "none.log")])
    assert result.exit_code == 2 and "none.log: workload.replay: cannot read" in result.output
    (tmp_path / "bin.log").write_bytes(b"\xff\xfe\x00garbage\n")
    result = CliRunner().invoke(main, ["simulate", "--replay", str(tmp_path / "bin.log")])
    assert result.exit_code == 2 and "found none that parse" in result.output


def test_replay_cli_runs_every_algorithm_on_the_log(tmp_path):
    rng = random.Random(3)
    t, lines = 0.0, []
    for k in range(3000):
        t += rng.expovariate(150)
        lines.append(lbctl_line(1e9 + t, f"b{1 + k % 3}", rng.expovariate(100),
                                path=f"/p{k % 40}"))
    log = tmp_path / "access.log"
    log.write_text("".join(lines))
    result = CliRunner().invoke(main, ["simulate", "--replay", str(log), "--json",
                                       "--algorithms", "round_robin,consistent_hash"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["requests"] == 3000
    assert [b["name"] for b in doc["results"][0]["backends"]] == ["b1", "b2", "b3"]
    text = CliRunner().invoke(main, ["simulate", "--replay", str(log), "--speedup", "2",
                                     "--algorithms", "p2c"]).output
    assert "replay of" in text and "3,000 requests" in text


# ---- the promise: serve's own log replays to the workload that produced it ----------------

SERVICE_MEAN = 0.080          # exponential service at each backend
CONCURRENCY = 4               # requests each backend serves at once
RATE = 60.0                   # Poisson arrivals per second: 60% of the 2 x 4 / 80 ms capacity
REQUESTS = 900


def known_scenario(requests: int, mean: float = SERVICE_MEAN, seed: int = 1) -> Scenario:
    service = Service("exponential", mean=mean)
    return Scenario(backends=(BackendSpec("b1", service, CONCURRENCY),
                              BackendSpec("b2", service, CONCURRENCY)),
                    workload=Workload("poisson", RATE, requests), algorithms=("round_robin",),
                    seed=seed)


async def test_replaying_serves_own_log_reproduces_the_known_workload(
        backends, serve_process, free_port, tmp_path):
    # Two real backends, each serving 4 requests at once (a semaphore) with exponential
    # service times (80 ms); lbctl serve in front (round_robin) writes its JSON access log
    # while the test sends Poisson arrivals at 60/s: 60% load, where about a third of the
    # requests wait for a worker. Replaying that log (its arrivals, its upstream times with
    # the queueing inside them left out) must give the workload's result. Tolerance 20% on
    # the mean and the p90 (averaged over 5 replay seeds): the ~600 queue-free samples
    # estimate the service mean within about 4% (one standard error), the 900 arrivals the
    # load within about 3%, and at this load the latency moves about 1.3 times as much as
    # either; the proxy's own time inside each logged upstream time adds a few percent.
    # Measured over three runs on a busy machine: 2-11% apart.
    draw = random.Random(11)
    held: list[float] = []          # how long each request really held a worker

    def worker():
        gate = asyncio.Semaphore(CONCURRENCY)

        async def handle(request, body):
            async with gate:
                started = asyncio.get_running_loop().time()
                await asyncio.sleep(draw.expovariate(1 / SERVICE_MEAN))
                held.append(asyncio.get_running_loop().time() - started)
            return web.Response(text="ok")
        return handle
    b1 = await backends.start("b1", worker())
    b2 = await backends.start("b2", worker())
    port = free_port()
    log = tmp_path / "access.log"
    config = tmp_path / "lb.toml"
    # One process: its round robin alternates strictly, as the replayed single pool does
    # (with workers, each keeps its own rotation: [proxy] workers models that).
    config.write_text(f'[listen]\naddress = "127.0.0.1:{port}"\n[server]\nworkers = 1\n'
                      f'[log]\naccess = "{log}"\n'
                      f'[[routes]]\npool = "p"\n[pools.p]\nalgorithm = "round_robin"\n'
                      f'[[pools.p.backends]]\nurl = "{b1.url}"\nname = "b1"\n'
                      f'[[pools.p.backends]]\nurl = "{b2.url}"\nname = "b2"\n')
    proc = await serve_process("serve", str(config))
    await proc.wait_for_log("listening on", timeout=15)
    loop = asyncio.get_running_loop()
    arrivals = random.Random(5)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                     connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(at):
            await asyncio.sleep(max(at - loop.time(), 0))
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
                return resp.status
        start, t, tasks = loop.time() + 0.2, 0.0, []
        for _ in range(REQUESTS):
            t += arrivals.expovariate(RATE)
            tasks.append(one(start + t))
        statuses = await asyncio.wait_for(asyncio.gather(*tasks), 60)
    assert set(statuses) == {200}
    # A graceful stop writes out the access log before the process exits.
    proc.proc.send_signal(signal.SIGTERM)
    assert await proc.wait(timeout=30) == 0
    assert log.read_text().count("\n") == REQUESTS

    scenario = tmp_path / "replay.toml"
    scenario.write_text(f'algorithms = ["round_robin"]\n[workload]\nreplay = "{log}"\n'
                        f'[[backends]]\nname = "b"\ncount = 2\nconcurrency = {CONCURRENCY}\n')
    # What the clients got from serve: the workload's result on this machine.
    durations = sorted(json.loads(x)["duration"] for x in log.read_text().splitlines())
    measured = {"mean": statistics.fmean(durations), "p90": durations[int(0.9 * REQUESTS) - 1]}
    replay = load_scenario(str(scenario))
    assert len(replay.workload.trace.times) == REQUESTS
    # The arrivals: 900 Poisson arrivals estimate the rate within ~3% (one sd).
    assert replay.workload.rate == pytest.approx(RATE, rel=0.2)
    # The service samples, queueing left out: their mean is the backends' 80 ms (plus the
    # proxy's share of the upstream time); all logged times, queueing in, are longer.
    samples = replay.backends[0].service.values + replay.backends[1].service.values
    assert statistics.fmean(samples) == pytest.approx(SERVICE_MEAN, rel=0.2)
    logged = replay.workload.trace.logged
    everything = logged["b1"].times + logged["b2"].times
    assert statistics.fmean(everything) > statistics.fmean(samples)

    # The workload as driven: Poisson at 60/s, and exponential service with the mean the
    # backends really held a worker for (asleep 80 ms on average, more on a busy machine).
    known = summarize(run_algorithm(known_scenario(50_000, statistics.fmean(held)),
                                    "round_robin")).latency
    replayed = [summarize(run_algorithm(replay.with_overrides(seed=s), "round_robin")).latency
                for s in (1, 2, 3, 4, 5)]
    for stat in ("mean", "p90"):
        value = statistics.fmean(r[stat] for r in replayed)
        # Against what serve measured under this workload: within 25% (what the clients
        # measured also carries the machine's own scheduling delays, which nothing replays).
        assert value == pytest.approx(measured[stat], rel=0.25), (stat, value, measured)
        # Against the workload as driven, simulated from its known distributions: within
        # 20%, the 15% plus the proxy's own time inside every logged upstream time.
        assert value == pytest.approx(known[stat], rel=0.2), (stat, value, known[stat])


def test_lines_as_serve_writes_them_read_the_same_as_any_json(tmp_path):
    # serve's own writer (compact, keys in its order) takes the fast path; the same records
    # written another way take the JSON decoder; both must give the same trace.
    from lbctl.observe.access_log import format_json
    records = [{"time": "t", "epoch": 100.0 + k / 10, "client": f"10.0.0.{k}", "consumer": None,
                "method": "GET" if k % 3 else "POST", "path": f"/p{k % 4}?a=1",
                "protocol": "HTTP/1.1", "status": 503 if k == 5 else 200, "bytes": 1,
                "duration": 0.02, "route": "*/", "pool": "p", "backend": f"b{k % 2}",
                "upstream_time": None if k == 7 else 0.01 + k / 1000, "attempts": 1 + (k == 3),
                "request_id": "r", "termination": None, "host": "h", "user_agent": "ua",
                "referer": None} for k in range(12)]
    fast, slow = tmp_path / "fast.log", tmp_path / "slow.log"
    fast.write_text("".join(format_json(r) + "\n" for r in records))
    slow.write_text("".join(json.dumps(r, indent=None) + "\n" for r in records))
    a, b = trace(fast), trace(slow)
    assert list(a.times) == list(b.times) and a.keys == b.keys
    assert a.replayable == b.replayable and a.logged == b.logged
    assert a.logged["b1"].errors == [0.015]
