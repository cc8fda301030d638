"""The load side: wrk runs, and the backends' own count of connections they accepted.

wrk prints p50/p75/p90/p99 rounded to two digits; a small Lua ``done`` hook adds exact
percentiles in microseconds, p99.9 among them. Defining only ``done`` keeps wrk on its
static-request fast path (no Lua per request).

The two nginx backends serve ``stub_status``; the difference in its ``accepts`` counter
across a run is the number of upstream connections the proxy opened, so a proxy that churns
connections to its backends shows, whatever its own reports say.
"""

from __future__ import annotations

import http.client
import math
import re
import subprocess
import time
from pathlib import Path

from .rig import pinned

LUA_DONE = """\
done = function(summary, latency, requests)
  io.write(string.format("bench-latency-us p50=%.0f p99=%.0f p999=%.0f max=%.0f\\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def write_lua(dir_: Path) -> Path:
    path = dir_ / "percentiles.lua"
    path.write_text(LUA_DONE)
    return path


def parse_latency_ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsed latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(out: str) -> dict:
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p99 = re.search(r"^\s*99%\s+(\S+)", out, re.M)
    p50 = re.search(r"^\s*50%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in", out)
    if not (rps and p99 and p50 and total):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    result = {"rps": float(rps.group(1)), "p50_ms": parse_latency_ms(p50.group(1)),
              "p99_ms": parse_latency_ms(p99.group(1)), "p999_ms": None,
              "requests": int(total.group(1))}
    exact = re.search(r"bench-latency-us p50=(\d+) p99=(\d+) p999=(\d+) max=(\d+)", out)
    if exact:
        p50_us, p99_us, p999_us, max_us = (int(x) for x in exact.groups())
        result.update(p50_ms=p50_us / 1000, p99_ms=p99_us / 1000, p999_ms=p999_us / 1000,
                      max_ms=max_us / 1000)
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result.update(socket_errors=errors, non_2xx=int(non2xx.group(1)) if non2xx else 0)
    return result


def run_wrk(tools: dict, url: str, headers: list[str], args, duration: float,
            lua: Path | None = None, marks=()) -> dict:
    """One wrk run. ``marks``: (seconds after the start, callable) pairs, called while wrk
    runs; their results are returned as ``marks`` in the same order."""
    # wrk reads whole seconds only.
    argv = [tools["wrk"], f"-t{args.threads}", f"-c{args.connections}",
            f"-d{max(1, math.ceil(duration))}s", "--latency", "--timeout", "5s"]
    for h in headers:
        argv += ["-H", h]
    if lua is not None:
        argv += ["-s", str(lua)]
    argv.append(url)
    argv = pinned(args.pinning.load, argv, tools["taskset"])
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    readings = []
    try:
        for at, read in marks:
            delay = t0 + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            readings.append(read())
        out, err = proc.communicate(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"wrk did not finish: {' '.join(argv)}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err or out}")
    result = parse_wrk(out)
    result["marks"] = readings
    return result


# ---- the backends' counters ----------------------------------------------------------------

STATUS_PATH = "/nginx_status"


def parse_stub_status(text: str) -> tuple[int, int]:
    """(accepted connections, requests) from nginx's stub_status page."""
    m = re.search(r"server accepts handled requests\s+(\d+)\s+(\d+)\s+(\d+)", text)
    if not m:
        raise RuntimeError(f"cannot parse stub_status:\n{text}")
    return int(m.group(1)), int(m.group(3))


def backend_counters(ports: list[int]) -> tuple[int, int]:
    """Connections accepted and requests served by the backends so far (raw counters)."""
    accepts = requests = 0
    for port in ports:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", STATUS_PATH)
            a, r = parse_stub_status(conn.getresponse().read().decode())
        finally:
            conn.close()
        accepts += a
        requests += r
    return accepts, requests


def counters_delta(before: tuple[int, int], after: tuple[int, int],
                   ports: list[int]) -> tuple[int, int]:
    """What others did between two readings: each reading is one connection and one request
    of its own on every backend, counted by nginx before it answers, so the later reading's
    own are taken off."""
    return after[0] - before[0] - len(ports), after[1] - before[1] - len(ports)
