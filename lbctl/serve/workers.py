"""The master's handle on one worker process: start it, talk to it, notice when it ends.

A worker is forked by the fork server (``forkserver.py``), which is its parent and reports
its exit status; the master holds its end of the worker's control channel. ``ask`` sends a
question (``stats``, ``prepare``) and waits for the answer with the same ``id`` for at most
a timeout: a worker that does not answer is reported, not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import signal
import socket
import time
from typing import Callable

from lbctl.serve.channel import Channel, ChannelError

log = logging.getLogger("lbctl")

_ids = itertools.count(1)
# After its channel closes, how long to wait for the fork server's word on a worker's exit
# (a server that died itself never sends it).
EXIT_REPORT = 2.0


def describe_exit(code: int | None) -> str:
    """``killed by SIGKILL``, ``exited with status 1``."""
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with status {code}"


class WorkerProcess:
    """One worker: its process, its channel, what it last reported."""

    def __init__(self, index: int, on_message: Callable[[WorkerProcess, dict], None]) -> None:
        loop = asyncio.get_running_loop()
        self.index = index                  # 1..N, stable across replacements
        self.on_message = on_message
        self.channel: Channel | None = None
        self.pid: int | None = None
        self.pidfd: int | None = None       # signals reach this process, never a reused pid
        self.state = "starting"             # starting | serving | draining | exited
        self.started_mono = time.monotonic()
        self.version = 0                    # the config version it runs
        self.figures: dict | None = None    # its last stats answer
        self.answering = True               # answered the last stats question in time
        self.ready: asyncio.Future = loop.create_future()
        self.exited: asyncio.Future = loop.create_future()
        self.accepting: asyncio.Future = loop.create_future()   # done: no longer accepting
        self.returncode: int | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    async def spawn(self, fork: Callable, hello: dict, table_fd: int,
                    listen_fd: int | None) -> None:
        """Fork the process (``fork(index, fds)`` -> pid) and send it ``hello``."""
        ours, theirs = socket.socketpair()
        fds = [theirs.fileno(), table_fd] + ([listen_fd] if listen_fd is not None else [])
        try:
            self.pid = await fork(self.index, fds)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        with contextlib.suppress(AttributeError, OSError):
            self.pidfd = os.pidfd_open(self.pid)
        self.channel = await Channel.open(ours)
        self.channel.send("start", **hello)
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"worker {self.index} channel")

    async def _read(self) -> None:
        while True:
            try:
                message = await self.channel.receive()
            except ChannelError as exc:
                log.error("worker %d: %s; stopping it", self.index, exc)
                self.kill()
                break
            if message is None:
                break
            kind = message["t"]
            if kind == "ready":
                self.state = "serving"
                if not self.ready.done():
                    self.ready.set_result(None)
            elif kind == "draining":
                self.state = "draining"
                if not self.accepting.done():
                    self.accepting.set_result(None)
            elif kind == "failed":
                if not self.ready.done():
                    self.ready.set_exception(WorkerFailed(message.get("message") or "failed"))
            elif "id" in message and message["id"] in self._waiting:
                future = self._waiting.pop(message["id"])
                if not future.done():
                    future.set_result(message)
            else:
                self.on_message(self, message)
        self._unanswered()
        if self.channel is not None:
            self.channel.close()
        # The channel closed: the process is ending. Its exit status comes from the fork
        # server; without it (the server died), the end of the channel is the news.
        try:
            await asyncio.wait_for(asyncio.shield(self.exited), EXIT_REPORT)
        except asyncio.TimeoutError:
            self.mark_exited(None)
        # Every message it sent has been read: if none said why it could not start, its
        # exit is the reason.
        self._not_ready(f"worker {self.index} {describe_exit(self.returncode)} before it was "
                        "ready")

    def _not_ready(self, reason: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(WorkerFailed(reason))

    def mark_exited(self, code: int | None) -> None:
        if self.exited.done():
            return
        self.returncode = code
        self.state = "exited"
        if self._reader is None or self._reader.done():
            # No channel left to read a reason from (otherwise its end says it: ``_read``).
            self._not_ready(f"worker {self.index} {describe_exit(code)} before it was ready")
        if not self.accepting.done():
            self.accepting.set_result(None)
        if self._reader is None or self._reader.done():
            self._unanswered()
            if self.channel is not None:
                self.channel.close()
        # Otherwise the channel may still hold answers the worker sent before it exited
        # (how many connections a stop closed): ``_read`` reads them, then gives up on the rest.
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.exited.set_result(code)

    def _unanswered(self) -> None:
        for future in self._waiting.values():
            if not future.done():
                future.set_result(None)
        self._waiting.clear()

    def send(self, kind: str, **fields) -> bool:
        return self.channel is not None and self.channel.send(kind, **fields)

    async def ask(self, kind: str, timeout: float, **fields) -> dict | None:
        """Send a question and wait for its answer (None: no answer in time, or gone)."""
        if self.channel is None or self.state == "exited":
            return None
        ident = next(_ids)
        future = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        if not self.channel.send(kind, id=ident, **fields):
            self._waiting.pop(ident, None)
            return None
        try:
            return await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError:
            return None
        finally:
            self._waiting.pop(ident, None)

    @property
    def uptime(self) -> float:
        return time.monotonic() - self.started_mono

    def kill(self) -> None:
        """SIGKILL, through the pidfd where there is one (never a recycled pid)."""
        if self.exited.done() or self.pid is None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)

    async def close(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._unanswered()
        if self.channel is not None:
            self.channel.close()


class WorkerFailed(Exception):
    """A worker could not start; the message is its one line."""
