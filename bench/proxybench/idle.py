"""What idle keep-alive connections cost a proxy: memory each, and latency for everyone else.

For each proxy and round: K client connections are opened one after another, each sends one
request, reads its response and stays open; the proxy's RSS before and after gives KiB per
connection. They are closed, and once the proxy's open file count is back, its RSS shows how
much of that memory it gave back. Then a wrk run of small keep-alive requests (p99.9
*without*), K idle connections opened again, and the same wrk run with them open (p99.9
*with*). Every step is bounded in time.
"""

from __future__ import annotations

import socket
import time

from .load import run_wrk
from .rig import open_fds, status_kib
from .targets import SMALL_BODY, Target

OPEN_DEADLINE = 120.0      # seconds to open all K connections, whatever the proxy's speed
CLOSE_DEADLINE = 15.0      # seconds for the proxy to notice they closed


def rss_kib(pids: list[int]) -> int:
    return sum(status_kib(p, "VmRSS") or 0 for p in pids)


def open_idle(port: int, k: int) -> list[socket.socket]:
    """K connections, each after one complete request and response (sequential, bounded)."""
    request = f"GET /small HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    deadline = time.monotonic() + OPEN_DEADLINE
    socks: list[socket.socket] = []
    try:
        while len(socks) < k and time.monotonic() < deadline:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
            s.sendall(request)
            read_response(s)
    except BaseException:
        close_all(socks)
        raise
    return socks


def read_response(s: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise OSError(f"unexpected response: {head.splitlines()[0]!r}")
    length = len(SMALL_BODY)
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            raise OSError("connection closed mid-body")
        body += chunk


def still_open(socks: list[socket.socket]) -> int:
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK):
                n += 1                # unexpected bytes, but open
        except BlockingIOError:
            n += 1                    # nothing to read: open and idle
        except OSError:
            pass
    return n


def close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def close_and_wait(socks: list[socket.socket], target: Target, fds_before: int) -> None:
    """Close them, and wait (bounded) until the proxy has closed its ends too."""
    close_all(socks)
    deadline = time.monotonic() + CLOSE_DEADLINE
    while open_fds(target.pids()) > fds_before + 16 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)            # let the last connection_lost callbacks run


def idle_round(tools: dict, target: Target, args, lua, k: int) -> dict:
    url = "http://127.0.0.1:{}/small".format(target.port)
    # Memory: RSS before, with K idle connections open, and after they closed; no load in
    # between, so nothing else moves the figures.
    pids = target.pids()
    fds_before, rss_before = open_fds(pids), rss_kib(pids)
    t0 = time.monotonic()
    socks = open_idle(target.port, k)
    open_s = time.monotonic() - t0
    rss_open = rss_kib(target.pids())
    close_and_wait(socks, target, fds_before)
    rss_closed = rss_kib(target.pids())
    opened = len(socks)
    # Latency: the same load without, then with K idle connections open.
    without = run_wrk(tools, url, [], args, args.duration, lua)
    fds_before = open_fds(target.pids())
    socks = open_idle(target.port, k)
    try:
        with_ = run_wrk(tools, url, [], args, args.duration, lua)
        alive = still_open(socks)
    finally:
        close_and_wait(socks, target, fds_before)
    grown = rss_open - rss_before
    return {"target": target.name, "idle": opened, "still_open_after_load": alive,
            "open_seconds": open_s, "rss_before_kib": rss_before, "rss_open_kib": rss_open,
            "rss_closed_kib": rss_closed,
            "kib_per_conn": grown / opened if opened else None,
            "given_back": (rss_open - rss_closed) / grown if grown > 0 else None,
            "without": without, "with": with_,
            "p999_ratio": (with_["p999_ms"] / without["p999_ms"]
                           if with_.get("p999_ms") and without.get("p999_ms") else None)}
