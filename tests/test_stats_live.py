"""``lbctl stats`` as an operator runs it: in a terminal (a real pty), against a real
``lbctl serve`` that is stopped and started again on the same admin port, and with
``--admin`` in the config's own ``host:port`` form."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import re
import signal
import struct
import termios

import pytest

from tests.process import ENV, LBCTL, LbctlProcess

WAIT = 20           # seconds any one expected line may take



async def run(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        LBCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ENV)
    out, err = await asyncio.wait_for(proc.communicate(), WAIT)
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def config(backends, tmp_path, free_port):
    """A config with backends "one" and "two" and a fixed admin port (no token)."""
    one, two = await backends.start("one"), await backends.start("two")
    admin = free_port()
    path = tmp_path / "lb.toml"
    path.write_text(
        f'[listen]\naddress = "127.0.0.1:{free_port()}"\n\n'
        f'[admin]\naddress = "127.0.0.1:{admin}"\n\n'
        f'[[routes]]\npool = "p"\n\n[pools.p]\n\n'
        f'[[pools.p.backends]]\nurl = "{one.url}"\nname = "one"\n\n'
        f'[[pools.p.backends]]\nurl = "{two.url}"\nname = "two"\n')
    return {"path": str(path), "admin": admin}


async def serve(serve_process, config: dict) -> LbctlProcess:
    proc = await serve_process("serve", config["path"])
    await proc.wait_for_log("listening on")
    return proc


class Terminal:
    """A command on a pseudo-terminal of ``columns`` x ``rows``; ``wait_for`` reads what it
    drew (escape sequences stripped) until a pattern shows up."""

    ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")

    def __init__(self, columns: int = 200, rows: int = 50) -> None:
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self.raw = bytearray()
        self._changed = asyncio.Event()
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, *args: str) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            LBCTL, *args, stdin=self.slave, stdout=self.slave, stderr=self.slave,
            env={**ENV, "TERM": "xterm-256color"})
        os.close(self.slave)
        asyncio.get_running_loop().add_reader(self.master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 65536)
        except OSError:                        # EIO: the other side closed
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
        self.raw += data
        self._changed.set()

    @property
    def text(self) -> str:
        return self.ESCAPES.sub("", self.raw.decode(errors="replace"))

    async def wait_for(self, pattern: str, start: int = 0) -> re.Match:
        async def scan():
            while True:
                match = re.compile(pattern).search(self.text, start)
                if match:
                    return match
                self._changed.clear()
                await self._changed.wait()
        try:
            return await asyncio.wait_for(scan(), WAIT)
        except asyncio.TimeoutError:
            raise AssertionError(f"{pattern!r} never shown; the screen had:\n{self.text[-3000:]}")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        try:
            asyncio.get_running_loop().remove_reader(self.master)
        finally:
            os.close(self.master)


async def test_live_stats_keeps_trying_while_serve_restarts_and_says_so(config, serve_process):
    first = await serve(serve_process, config)
    terminal = Terminal()
    try:
        await terminal.start("stats", "--admin", f"127.0.0.1:{config['admin']}",
                             "--interval", "200ms")
        await terminal.wait_for(r"pool p \(round_robin, normal\)")
        first_pid = first.proc.pid

        first.proc.send_signal(signal.SIGTERM)
        assert await first.wait() == 0
        down = await terminal.wait_for(
            rf"cannot reach the admin API at http://127\.0\.0\.1:{config['admin']}: "
            r"Connection refused; retrying every 0\.2s since \d\d:\d\d:\d\d")
        assert terminal.proc.returncode is None                 # still running, still trying
        await terminal.wait_for("figures below are from then", down.start())

        second = await serve(serve_process, config)             # same admin port
        back = await terminal.wait_for(
            rf"reconnected at \d\d:\d\d:\d\d; serve restarted \(pid {first_pid} -> "
            rf"{second.proc.pid}\)", down.end())
        await terminal.wait_for(r"pool p \(round_robin, normal\)", back.end())

        terminal.type(b"q")
        assert await asyncio.wait_for(terminal.proc.wait(), WAIT) == 0
    finally:
        await terminal.close()


async def test_admin_accepts_the_configs_own_address_format(config, serve_process):
    await serve(serve_process, config)
    for admin in (f"127.0.0.1:{config['admin']}", f"http://127.0.0.1:{config['admin']}/"):
        code, out, err = await run("stats", "--json", "--admin", admin)
        assert code == 0, err
        assert json.loads(out)["config"] == config["path"]
    code, out, err = await run("backend", "drain", "p", "one",
                               "--admin", f"127.0.0.1:{config['admin']}")
    assert code == 0, err
    assert out.startswith("p/one: draining")


@pytest.mark.parametrize("admin", ["9900", "127.0.0.1", "ftp://127.0.0.1:9900", "::1:9900",
                                   "http://127.0.0.1:99999"])
async def test_a_malformed_admin_address_is_one_line_and_exit_2(admin):
    code, out, err = await run("stats", "--once", "--admin", admin)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        f"lbctl: --admin {admin!r}: expected host:port as in [admin] address "
        "(like 127.0.0.1:9900 or [::1]:9900) or an http:// URL"]
