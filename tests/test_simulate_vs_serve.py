"""serve and simulate agree, case by case, on what the client gets when backends fail.

Each case is one serve config run twice: by a real ``lbctl serve`` process in front of real
loopback backends that answer 500, never answer, refuse connections or reset them, and by
``lbctl simulate`` with the same config (``config = "lb.toml"``) and the same failures
described as scenario faults. Both go through the one attempt policy
(``balancing/attempts.py``), so the statuses the client gets must match: the same set of
statuses, in the same proportions (round_robin, sequential requests: the proportions are
exact in serve and in virtual time, up to the one request where the rotation starts).
Cases with health checks compare the requests sent after the checks took the failing
backends out (serve: after its "is DOWN" log lines; simulate: arrivals after 2 s, beyond
``fall x interval``).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter

import aiohttp
import pytest
from aiohttp import web

from lbctl.simulate.driver import CLIENT_STATUS, run_algorithm
from lbctl.simulate.scenario import load_scenario

REQUESTS = 20
SETTLE = 2.0                # simulated seconds after which health checks have acted


async def _blackhole(reader, writer):
    """Reads the request and never answers."""
    try:
        await reader.read(65536)
        await asyncio.sleep(3600)
    finally:
        writer.close()


async def _reset(reader, writer):
    """Reads the request head, then resets the connection (RST, no response byte)."""
    await reader.readuntil(b"\r\n\r\n")
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def start_backend(backends, free_port, kind: str) -> str:
    """A real backend that behaves as ``kind``; returns its URL."""
    if kind == "ok":
        return (await backends.start("ok")).url
    if kind == "error":
        async def fail(request, body):
            return web.Response(status=500, text="broken")
        return (await backends.start("error", fail)).url
    if kind == "refuse":
        return f"http://127.0.0.1:{free_port()}"            # nothing listens there
    port = await backends.start_raw(_blackhole if kind == "blackhole" else _reset)
    return f"http://127.0.0.1:{port}"


# name: (backend kinds in pool order (backup ones end in "+backup"), pool settings, serve
#        requests to wait for, expected statuses in serve)
CASES = {
    "always-500": (["error"], 'retries = 1\nretry_on = ["5xx"]', 0, {500}),
    "always-500-retried": (["error", "error"], 'retries = 1\nretry_on = ["5xx"]', 0, {500}),
    "never-answers": (["blackhole"], 'retries = 1\nretry_on = ["timeout"]\n'
                                     '[pools.p.timeouts]\nresponse = "300ms"', 0, {504}),
    "never-answers-retried": (["blackhole", "ok"], 'retries = 1\nretry_on = ["timeout"]\n'
                                                   '[pools.p.timeouts]\nresponse = "300ms"',
                              0, {200}),
    "refuses": (["refuse", "ok"], "retries = 1", 0, {200}),
    "refuses-no-retry": (["refuse", "ok"], "retries = 0", 0, {200, 502}),
    "resets": (["reset", "ok"], "retries = 1", 0, {200}),
    "resets-no-retry": (["reset", "ok"], "retries = 0", 0, {200, 502}),
    "panic": (["refuse", "refuse", "refuse", "ok"],
              'retries = 1\npanic_threshold = 50\n[pools.p.health]\ninterval = "200ms"\n'
              'timeout = "200ms"\nfall = 1\nrise = 1', 3, {200, 502}),
    "backup": (["refuse", "ok+backup"],
               'retries = 1\n[pools.p.health]\ninterval = "200ms"\ntimeout = "200ms"\n'
               'fall = 1\nrise = 1', 1, {200}),
    "all-down": (["refuse", "refuse"],
                 'retries = 1\n[pools.p.health]\ninterval = "200ms"\ntimeout = "200ms"\n'
                 'fall = 1\nrise = 1', 2, {503}),
}

SIM_FAULT = {"ok": None, "error": "error", "refuse": "refuse", "blackhole": "blackhole",
             "reset": "reset"}


def write_config(path, port: int, urls: list[str], kinds: list[str], settings: str) -> None:
    backends = "".join(
        f'[[pools.p.backends]]\nurl = "{url}"\nname = "b{i + 1}"\n'
        + ("backup = true\n" if kind.endswith("+backup") else "") + "\n"
        for i, (url, kind) in enumerate(zip(urls, kinds)))
    text = (f'[listen]\naddress = "127.0.0.1:{port}"\n\n[[routes]]\npool = "p"\n\n'
            f'[pools.p]\nalgorithm = "round_robin"\n{settings}\n\n{backends}')
    # The pool's sub-tables must come after its plain keys; TOML allows the backends after.
    path.write_text(text)


def write_scenario(path, kinds: list[str]) -> None:
    groups = []
    for kind in kinds:
        fault = SIM_FAULT[kind.split("+")[0]]
        group = '[[backends]]\nservice = { dist = "constant", mean = "5ms" }\n'
        if fault:
            group += f'failure = {{ mode = "{fault}" }}\n'
        groups.append(group)
    path.write_text('config = "lb.toml"\npool = "p"\nalgorithms = ["round_robin"]\n'
                    '[workload]\narrivals = "uniform"\nrate = 10\nrequests = 200\n\n'
                    + "\n".join(groups))


async def serve_statuses(backends, serve_process, free_port, tmp_path, kinds, settings,
                         down) -> Counter:
    urls = [await start_backend(backends, free_port, k.split("+")[0]) for k in kinds]
    port = free_port()
    write_config(tmp_path / "lb.toml", port, urls, kinds, settings)
    proc = await serve_process("serve", str(tmp_path / "lb.toml"))
    await proc.wait_for_log("listening on", timeout=15)
    start = 0
    for _ in range(down):                 # health checks took these out
        match = await proc.wait_for_log(r"is DOWN", timeout=15, start=start)
        start = next(i for i, line in enumerate(proc.lines) if match.string == line) + 1
    statuses = Counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(REQUESTS):        # sequential: the rotation is deterministic
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                await resp.read()
                statuses[resp.status] += 1
    return statuses


def simulated_statuses(tmp_path, kinds) -> Counter:
    write_scenario(tmp_path / "scenario.toml", kinds)
    sc = load_scenario(str(tmp_path / "scenario.toml"))
    rec = run_algorithm(sc, "round_robin")
    return Counter(CLIENT_STATUS[code] for t, code in zip(rec.arrival, rec.status)
                   if t >= SETTLE)


def shares(counts: Counter) -> dict[int, float]:
    total = sum(counts.values())
    return {status: n / total for status, n in counts.items()}


@pytest.mark.parametrize("case", sorted(CASES))
async def test_serve_and_simulate_give_the_client_the_same_statuses(
        backends, serve_process, free_port, tmp_path, case):
    kinds, settings, down, expected = CASES[case]
    served = await asyncio.wait_for(
        serve_statuses(backends, serve_process, free_port, tmp_path, kinds, settings, down), 50)
    simulated = simulated_statuses(tmp_path, kinds)
    assert set(served) == expected, (case, served)
    assert set(simulated) == set(served), (case, served, simulated)
    # Exact proportions up to where the rotation starts: one request in REQUESTS.
    for status, share in shares(served).items():
        assert shares(simulated)[status] == pytest.approx(share, abs=1.5 / REQUESTS), \
            (case, served, simulated)
