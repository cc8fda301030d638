"""The fork server: a template process that every worker is forked from.

A worker could be a fresh interpreter each time, but importing Python, uvloop and lbctl takes
0.3 s on a quiet machine and over a second on a busy one, and a dead worker must be replaced
within one. So the master starts this process once: a fresh interpreter (never a fork of the
master, whose event loop, threads and sockets a child must not inherit) that imports
everything a worker runs, loads the config once (so what loads lazily is loaded too),
freezes its objects out of the garbage collector's way, and then only waits. Asked to, it
forks: the child is a worker a few milliseconds later, sharing the template's memory pages
until it writes to them (as nginx's workers share their master's). The template runs no
event loop and no thread, so forking it is safe.

It reaps its children and reports each one's exit status to the master, which is not their
parent. Requests and reports travel over one ``SOCK_SEQPACKET`` socketpair (a message per
packet, file descriptors attached with ``SCM_RIGHTS``):

    master -> server   {"t": "warm", "path", "text"}      load this config once
                       {"t": "fork", "index"} + fds        [channel, listening socket?]
    server -> master   {"t": "ready"}  {"t": "forked", "index", "pid"}  {"t": "exited", "pid", "code"}

The server ignores the operator's signals (they are the master's) and exits when the master
closes its end. The workers it forked run on if it dies; the master starts a new one.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import subprocess
import sys
import traceback
from collections import deque
from typing import Callable

log = logging.getLogger("lbctl")

MAX_PACKET = 1 << 20
START_TIMEOUT = 30.0
FORK_TIMEOUT = 10.0


# ---- the fork server process ---------------------------------------------------------------

def _send(sock: socket.socket, kind: str, **fields) -> None:
    sock.send(json.dumps({"t": kind, **fields}).encode())


def serve(fd: int) -> int:
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    # Everything a worker imports, imported once here and shared by every fork.
    for module in ("uvloop", "lbctl.serve.worker"):
        importlib.import_module(module)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    frozen = False
    while True:
        for key, _ in selector.select():
            if key.fileobj == wake_r:
                os.read(wake_r, 4096)
                _reap(sock)
                continue
            data, fds, _, _ = socket.recv_fds(sock, MAX_PACKET, 4)
            if not data:
                return 0                    # the master is gone
            message = json.loads(data)
            if message["t"] == "warm":
                _warm(message)
                if not frozen:
                    # Objects that exist now are never scanned again by the collector, so
                    # the pages that hold them stay shared with the workers.
                    gc.collect()
                    gc.freeze()
                    frozen = True
                _send(sock, "ready")
            elif message["t"] == "fork":
                pid = os.fork()
                if pid == 0:
                    _child(fds, (sock, selector, wake_r, wake_w))
                for f in fds:
                    os.close(f)
                _send(sock, "forked", index=message["index"], pid=pid)


def _warm(message: dict) -> None:
    from lbctl.config.loader import load_config
    from lbctl.serve.worker import quiet
    try:
        with quiet():
            load_config(message["path"], text=message["text"])
    except Exception:       # noqa: BLE001 - the master validated it; a worker will say more
        pass


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _send(sock, "exited", pid=pid, code=os.waitstatus_to_exitcode(status))


def _child(fds: list[int], inherited: tuple) -> None:
    """In the forked worker: drop the server's own descriptors and become the worker."""
    code = 1
    try:
        sock, selector, wake_r, wake_w = inherited
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, signal.SIG_DFL)
        selector.close()
        sock.close()
        os.close(wake_r)
        os.close(wake_w)
        from lbctl.serve.worker import main
        code = main([str(fd) for fd in fds])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:       # noqa: BLE001 - a crash is reported, then the worker ends
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


# ---- the master's side ------------------------------------------------------------------------

class ForkServer:
    """The master's handle: start the server, fork workers, hear of their exits."""

    def __init__(self, on_exit: Callable[[int, int], None], on_lost: Callable[[], None]) -> None:
        self.on_exit = on_exit            # (pid, exit code) of a worker it forked
        self.on_lost = on_lost            # the server itself is gone
        self.process: asyncio.subprocess.Process | None = None
        self.sock: socket.socket | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future | None = None
        self._forks: deque[asyncio.Future] = deque()
        self._watch: asyncio.Task | None = None
        self.closing = False

    async def start(self, path: str, text: str) -> None:
        self.loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # systemd's notification socket is the master's alone: no worker may report
            # READY or STOPPING for the service.
            env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lbctl.serve.forkserver", str(theirs.fileno()),
                stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=env)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self.sock = ours
        self._ready = self.loop.create_future()
        self.loop.add_reader(ours.fileno(), self._readable)
        self._watch = self.loop.create_task(self._wait())
        self._request({"t": "warm", "path": path, "text": text})
        await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)

    async def fork(self, index: int, fds: list[int]) -> int:
        """A new worker process with ``fds`` (its channel, and the shared listening socket
        if any); its pid."""
        if self.sock is None:
            raise OSError("the fork server is not running")
        future = self.loop.create_future()
        self._forks.append(future)
        self._request({"t": "fork", "index": index}, fds)
        return await asyncio.wait_for(future, FORK_TIMEOUT)

    def _request(self, message: dict, fds: list[int] = ()) -> None:
        # One small packet: the socket buffer always has room for it.
        socket.send_fds(self.sock, [json.dumps(message).encode()], list(fds))

    def _readable(self) -> None:
        try:
            data = self.sock.recv(MAX_PACKET)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            return
        message = json.loads(data)
        kind = message["t"]
        if kind == "ready":
            if not self._ready.done():
                self._ready.set_result(None)
        elif kind == "forked":
            while self._forks:
                future = self._forks.popleft()
                if not future.done():
                    future.set_result(message["pid"])
                    break
        elif kind == "exited":
            self.on_exit(message["pid"], message["code"])

    def _gone(self) -> None:
        if self.sock is not None:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None
        error = OSError("the fork server exited")
        for future in (self._ready, *self._forks):
            if future is not None and not future.done():
                future.set_exception(error)
        self._forks.clear()
        if not self.closing:
            self.on_lost()

    async def _wait(self) -> None:
        await self.process.wait()
        if self.sock is not None:
            self._gone()

    async def close(self) -> None:
        self.closing = True
        if self.sock is not None:
            self._gone()                  # EOF for the server: it exits
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), 5.0)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
