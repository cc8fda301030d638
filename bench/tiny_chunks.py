"""One client streams a chunked upload of 16-byte chunks as fast as it can; meanwhile, how long
do other clients wait? (issue: one such client once stalled everyone for seconds)

    python bench/tiny_chunks.py                        # this checkout
    python bench/tiny_chunks.py --tree base=/tmp/base  # and another tree, measured after it

For each tree: ``lbctl serve`` pinned to CPU 0 with two pools (the stream's backend reads and
drops everything; the other answers at once), a streaming client pinned to CPU 1 for
``--seconds``, and this process sending GET requests to the other pool and GET /stats to the
admin API, one after another, for the same time. It prints the stream's rate and the
latency of those requests (median and worst). A benchmark, not a test: the figures depend
on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LBCTL = str(Path(sys.executable).parent / "lbctl")
HERE = str(Path(__file__).resolve().parent.parent)

STREAMER = '''
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"POST /stream HTTP/1.1\\r\\nHost: t\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n")
batch = (b"10\\r\\n" + b"c" * 16 + b"\\r\\n") * 4096
end = time.monotonic() + float(sys.argv[2])
sent = 0
while time.monotonic() < end:
    s.sendall(batch)
    sent += 16 * 4096
print(sent)
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def discard(reader, writer) -> None:
    try:
        while await reader.read(1 << 20):
            pass
    except (ConnectionError, asyncio.CancelledError):   # cancelled: the run is over
        pass
    writer.close()


async def answer(reader, writer) -> None:
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    writer.close()


async def timed_get(port: int, path: str, timeout: float) -> float:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % path.encode())
    await asyncio.wait_for(reader.read(-1), timeout)
    writer.close()
    return time.monotonic() - started


async def measure(tree: str, seconds: float) -> dict:
    sink = await asyncio.start_server(discard, "127.0.0.1", 0)
    other = await asyncio.start_server(answer, "127.0.0.1", 0)
    port, admin = free_port(), free_port()
    with tempfile.TemporaryDirectory() as directory:
        config = Path(directory) / "lb.toml"
        config.write_text(f'''[listen]
address = "127.0.0.1:{port}"
[admin]
address = "127.0.0.1:{admin}"
[[routes]]
path_prefix = "/stream"
pool = "sink"
[[routes]]
pool = "other"
[pools.sink]
[[pools.sink.backends]]
url = "http://127.0.0.1:{sink.sockets[0].getsockname()[1]}"
[pools.other]
[[pools.other.backends]]
url = "http://127.0.0.1:{other.sockets[0].getsockname()[1]}"
''')
        env = {**os.environ, "PYTHONPATH": tree}
        log = Path(directory) / "serve.log"
        with open(log, "w") as sink_file:
            proxy = subprocess.Popen(["taskset", "-c", "0", LBCTL, "serve", str(config)],
                                     env=env, stderr=sink_file)
        streamer = None
        try:
            while "listening on" not in log.read_text():
                if proxy.poll() is not None:
                    raise SystemExit(f"lbctl serve exited:\n{log.read_text()}")
                await asyncio.sleep(0.05)
            # Awaited, never waited for: the backends live on this loop.
            streamer = await asyncio.create_subprocess_exec(
                "taskset", "-c", "1", sys.executable, "-c", STREAMER, str(port), str(seconds),
                stdout=subprocess.PIPE)
            await asyncio.sleep(0.5)
            others, stats = [], []
            end = time.monotonic() + seconds - 1.0
            while time.monotonic() < end:
                others.append(await timed_get(port, "/x", seconds + 30))
                stats.append(await timed_get(admin, "/stats", seconds + 30))
            out, _ = await asyncio.wait_for(streamer.communicate(), seconds + 30)
            sent = int(out)
        except asyncio.TimeoutError:
            raise SystemExit(f"the stream stalled; lbctl's log:\n{log.read_text()}") from None
        finally:
            if streamer is not None and streamer.returncode is None:
                streamer.kill()
                await streamer.wait()
            proxy.kill()                # no drain: the stream's request is still open
            proxy.wait(10)
    sink.close()
    other.close()
    return {"MB/s streamed": sent / seconds / 1e6, "other": others, "stats": stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="another source tree to measure after this checkout")
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    trees = [("this", HERE)] + [tuple(t.split("=", 1)) for t in args.tree]
    for label, tree in trees:
        result = asyncio.run(measure(tree, args.seconds))
        line = [f"{label:8} stream {result['MB/s streamed']:6.1f} MB/s"]
        for name in ("other", "stats"):
            values = sorted(result[name])
            line.append(f"{name}: {len(values)} requests, median "
                        f"{statistics.median(values) * 1000:.1f} ms, worst {values[-1] * 1000:.1f} ms")
        print(";  ".join(line))


if __name__ == "__main__":
    main()
