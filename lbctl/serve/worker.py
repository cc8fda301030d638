"""One worker of an instance: the data plane in a process of its own, run by the master.

A worker is forked by the fork server (``forkserver.py``) and handed its end of the control
channel (``channel.py``), the instance's rate-limit table (``gateway.shared_store``), and
the listening socket when the workers share one. It has no
health checks, no admin API and no signals of the operator's: it runs what the master tells
it, in this order:

* ``start``: the config text the master validated (never the file as it may be by now),
  the backends' states, and how to listen. It builds the data plane (``ProxyServer``) and
  its ``Observer``, installs the states, listens, and answers ``ready`` (or ``failed`` with
  one line saying why, and exits 1);
* ``prepare`` / ``commit`` / ``abort``: a reload in two steps, so that every worker swaps
  or none does: the new text is loaded and checked (``prepared``, or the problem), then
  swapped in with the states of its backends;
* ``members``: a pool's whole membership, as discovery and operators decided it in the
  master (``ProxyServer.set_members``);
* ``state``: backends' states decided in the master (health, operator actions, ejections,
  slow start); ``stats``: this worker's figures (``observe.merge.export``); ``reopen``: the
  access log (SIGUSR1); ``drain``: stop accepting, finish what is in flight (an idle
  keep-alive connection gets the data plane's short grace), exit 0; ``stop`` (the
  operator's second signal): close every connection now, and say how many there were.

Its open-files limit is the master's, inherited; a reload whose ``max_connections`` needs
more raises it here too (``openfiles.py``), before the data plane sizes its cap to it.

Passive outcomes go the other way (``outcomes.py``). SIGINT and SIGHUP are the master's
(a terminal's Ctrl-C reaches the whole process group); SIGTERM, as from a service manager
that signals every process of the unit, drains like the master's ``drain``. When the
channel closes (the master is gone) the worker drains and exits: it never outlives its
master for longer than ``drain_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from lbctl.config.loader import load_config
from lbctl.config.model import BackendConfig
from lbctl.errors import UserError
from lbctl.gateway.shared_store import SharedStore, SharedTable
from lbctl.observe.events import JsonFormatter
from lbctl.observe.merge import export
from lbctl.observe.observer import Observer
from lbctl.proxy.server import ProxyServer, fds_needed
from lbctl.serve import openfiles
from lbctl.serve.channel import Channel, ChannelError
from lbctl.serve.loop import install_fast_loop
from lbctl.serve.outcomes import Outbox, relay_outcomes
from lbctl.serve.state import install

log = logging.getLogger("lbctl")


@contextlib.contextmanager
def quiet():
    """Building from a config the master has built already: it logged every notice and
    warning that brings (weights replaced, certificates reloaded); only errors are news."""
    root = logging.getLogger("lbctl")
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def backends_of(wire: list[dict]) -> tuple[BackendConfig, ...]:
    """A pool's membership as the master sends it (``dataclasses.asdict`` of each)."""
    return tuple(BackendConfig(**fields) for fields in wire)


def members_of(wire: dict[str, list[dict]]) -> dict[str, tuple[BackendConfig, ...]]:
    return {pool: backends_of(members) for pool, members in wire.items()}


# Events every worker would log about the same thing (a backend it cannot connect to):
# passed to the master, which logs them once for the instance. Their fields go along.
RELAYED = {"backend_error": ("pool", "backend", "reason")}


def setup_logging(fmt: str, index: int, channel: Channel) -> None:
    """The event log on the inherited stderr, each line saying which worker wrote it (but
    for the ``RELAYED`` events, which go to the master)."""
    handler = logging.StreamHandler(sys.stderr)

    def tag(record: logging.LogRecord) -> bool:
        event = getattr(record, "event", None)
        if event in RELAYED:
            fields = {"event": event}
            fields.update((key, getattr(record, key, None)) for key in RELAYED[event])
            channel.send("log", logger=record.name, level=record.levelno,
                         message=record.getMessage(), fields=fields)
            return False
        record.worker = index
        return True
    handler.addFilter(tag)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        f"%(asctime)s %(levelname)s worker {index}: %(message)s"))
    root = logging.getLogger("lbctl")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False


def open_store(config, table: SharedTable, channel: Channel):
    """The rate-limit store of a worker: the instance's shared table for ``"local"`` (a
    limit holds for the instance, not for each worker), Redis directly for ``"redis"``,
    falling back to the shared table (``on_error = "local"``). Redis going down or coming
    back is told to the master, which logs it once for the instance."""
    if config.store.backend == "local":
        return SharedStore(config.store, table)
    from lbctl.gateway.redis_store import RedisStore
    store = RedisStore(config.store, fallback=SharedStore(config.store, table))
    store.on_health = lambda up, level, line, fields: channel.send(
        "store", up=up, level=level, line=line, fields=fields)
    return store


class Worker:
    def __init__(self, fd: int, table_fd: int, listen_fd: int | None = None) -> None:
        self.fd = fd
        self.table = SharedTable(table_fd)
        self.listen_fd = listen_fd
        self.store = None
        self.loop = asyncio.get_running_loop()
        self.channel: Channel | None = None
        self.proxy: ProxyServer | None = None
        self.observer: Observer | None = None
        self.outbox: Outbox | None = None
        self.pending: dict[int, object] = {}        # prepared configs by reload id
        self.finished = asyncio.Event()
        self.draining: asyncio.Task | None = None

    async def run(self) -> int:
        self.channel = await Channel.open(socket.socket(fileno=self.fd))
        hello = await self.channel.receive()
        if hello is None or hello["t"] != "start":
            return 1
        setup_logging(hello.get("log_format", "text"), hello["index"], self.channel)
        try:
            await self.start(hello)
        except UserError as exc:
            self.channel.send("failed", message=str(exc).splitlines()[0] if str(exc) else
                              type(exc).__name__)
            await self.close_channel()
            return 1
        self.loop.add_signal_handler(signal.SIGTERM, self.on_sigterm)
        self.loop.add_signal_handler(signal.SIGUSR1, self.reopen)
        self.channel.send("ready", pid=os.getpid())
        reader = self.loop.create_task(self.read())
        await self.finished.wait()
        reader.cancel()
        await self.close_channel()
        return 0

    async def start(self, hello: dict) -> None:
        with quiet():
            config = load_config(hello["path"], text=hello["text"])
            openfiles.raise_open_files(fds_needed(config))  # the master's already, as a rule
            self.observer = Observer(config, worker=hello["index"])
            self.store = open_store(config, self.table, self.channel)
            self.proxy = ProxyServer(config, hooks=self.observer, store=self.store)
        self.outbox = Outbox(self.loop, lambda batch: self.channel.send("outcomes", batch=batch))
        # Who is in each pool (discovery and operators decide it in the master), then what
        # state each backend is in; both before the first request.
        for pool, members in hello["members"].items():
            self.proxy.set_members(pool, backends_of(members))
        relay_outcomes(self.proxy.runtime, self.outbox)
        install(self.proxy.runtime, hello["state"], self.proxy.clock)
        await self.store.start()                # first contact, before any request
        sock = socket.socket(fileno=self.listen_fd) if self.listen_fd is not None else None
        await self.proxy.start(sock=sock, port=hello["port"], reuse_port=sock is None)

    async def read(self) -> None:
        while True:
            try:
                message = await self.channel.receive()
            except ChannelError as exc:
                log.error("the master sent %s; draining and exiting", exc)
                message = None
            if message is None:
                # The master is gone: nobody will tell us to stop, reload or report.
                if not self.channel.closed:
                    log.warning("the master process is gone; draining and exiting")
                self.drain(self.proxy.runtime.config.limits.drain_timeout)
                return
            handler = getattr(self, "on_" + message["t"], None)
            if handler is None:
                continue
            try:
                handler(message)
            except Exception:       # noqa: BLE001 - a worker that stops reading is deaf
                log.exception("worker: cannot apply the master's %r message", message["t"])

    # ---- messages ------------------------------------------------------------------------

    def on_state(self, message: dict) -> None:
        install(self.proxy.runtime, message["pools"], self.proxy.clock)
        if "id" in message:                 # an operator waits until every worker has it
            self.channel.send("applied", id=message["id"])

    def on_members(self, message: dict) -> None:
        """A pool's whole membership changed (discovery, an operator's add or remove)."""
        change = self.proxy.set_members(message["pool"], backends_of(message["members"]))
        if change:
            self.observer.keep_only(self.proxy.runtime.backends())

    def on_prepare(self, message: dict) -> None:
        try:
            with quiet():
                config = load_config(message["path"], text=message["text"])
        except UserError as exc:
            self.channel.send("prepared", id=message["id"], error=str(exc).splitlines()[0])
            return
        self.pending = {message["id"]: config}
        self.channel.send("prepared", id=message["id"], error=None)

    def on_commit(self, message: dict) -> None:
        config = self.pending.pop(message["id"], None)
        if config is None:
            return
        store = None
        if config.store != self.store.config:
            old, self.store = self.store, open_store(config, self.table, self.channel)
            store = self.store
            self.loop.create_task(self._swap_store(old))
        openfiles.raise_open_files(fds_needed(config))     # before the cap is sized to it
        with quiet():
            runtime = self.proxy.reload(config, members_of(message["members"]), store=store)
            self.observer.configure(config)
        relay_outcomes(runtime, self.outbox)
        self.observer.keep_only(runtime.backends())
        install(runtime, message["state"], self.proxy.clock)
        self.channel.send("committed", id=message["id"])

    async def _swap_store(self, old) -> None:
        """A reload changed [store]: contact the new one, let go of the old one."""
        await self.store.start()
        await old.close()

    def on_abort(self, message: dict) -> None:
        self.pending.pop(message["id"], None)

    def on_stats(self, message: dict) -> None:
        self.outbox.flush()             # outcomes first: ejections are decided on them
        figures = export(self.proxy.runtime, self.observer, self.loop.time(),
                         connections=len(self.proxy.connections))
        figures["store"] = {"up": self.store.up, "errors": self.store.errors}
        self.channel.send("stats", id=message["id"], figures=figures)

    def on_reopen(self, message: dict) -> None:
        self.reopen()
        self.channel.send("reopened", id=message["id"])

    def on_drain(self, message: dict) -> None:
        self.drain(float(message["timeout"]))

    def on_stop(self, message: dict) -> None:
        connections = len(self.proxy.connections)
        self.drain(0.0)
        if "id" in message:                 # the master says how many were closed
            self.channel.send("stopped", id=message["id"], connections=connections)

    # ---- signals and the end -------------------------------------------------------------

    def reopen(self) -> None:
        with quiet():
            self.observer.reopen()

    def on_sigterm(self) -> None:
        # A first SIGTERM drains, a second one stops at once.
        self.drain(0.0 if self.draining is not None else
                   self.proxy.runtime.config.limits.drain_timeout)

    def drain(self, timeout: float) -> None:
        if self.draining is not None:
            if timeout == 0.0:
                self.proxy.stop_listening()
                self.proxy.abort_all()
            return
        self.draining = self.loop.create_task(self._drain(timeout))

    async def _drain(self, timeout: float) -> None:
        self.proxy.start_drain()
        self.channel.send("draining")       # the listener is closed
        await self.proxy.wait_drained(timeout)
        self.outbox.flush()
        self.observer.close()
        await self.proxy.close()
        await self.store.close()
        self.finished.set()

    async def close_channel(self) -> None:
        if self.channel is not None:
            self.channel.close()
            with contextlib.suppress(Exception):
                await self.channel.writer.wait_closed()


def main(fds: list[str]) -> int:
    """Run a worker on its channel (``fds[0]``), the instance's rate-limit table
    (``fds[1]``) and, when the workers share one, the listening socket (``fds[2]``)."""
    # The operator's signals are the master's: Ctrl-C in a terminal reaches every process of
    # the group, and the master drains the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    install_fast_loop()

    async def run() -> int:
        return await Worker(int(fds[0]), int(fds[1]),
                            int(fds[2]) if len(fds) > 2 else None).run()
    return asyncio.run(run())
