"""Process control with real processes: ``serve --pid-file``, ``lbctl reload``, sd_notify to a
real AF_UNIX datagram socket, the systemd unit's own command lines, the README's logrotate
snippet under the real logrotate, and ``pgrep``.

Nothing here signals a process it did not start: ``lbctl reload`` finds serves by their
config's path, and every config lives in the test's own temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from tests.process import ENV, LBCTL, LbctlProcess
from tests.test_contrib import missing, unit_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def serve_config(tmp_path, free_port):
    """``serve_config(backend_url, name, port, extra)``: a one-pool config in the test's
    directory, on ``port`` or a free one."""
    def write(backend_url: str, name: str = "lb.toml", port: int = 0, extra: str = "") -> Path:
        path = tmp_path / name
        path.write_text(f'[listen]\naddress = "127.0.0.1:{port or free_port()}"\n{extra}'
                        f'[[routes]]\npool = "p"\n[[pools.p.backends]]\nurl = "{backend_url}"\n')
        return path
    return write


async def lbctl(*args: str, cwd: Path | None = None, env: dict | None = None):
    proc = await asyncio.create_subprocess_exec(
        LBCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or ENV, cwd=cwd)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(), err.decode()


async def start_serve(*args: str, env: dict | None = None, cwd: Path | None = None):
    proc = await asyncio.create_subprocess_exec(
        LBCTL, "serve", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=env or ENV, cwd=cwd)
    serve = LbctlProcess(proc)
    await serve.wait_for_log("listening on")
    return serve


async def stop(serve: LbctlProcess) -> int:
    if serve.proc.returncode is None:
        serve.proc.send_signal(signal.SIGTERM)
    return await serve.wait()


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
async def backend(backends):
    return await backends.start("one")


# ---- the pid file ---------------------------------------------------------------------------

async def test_pid_file_is_written_once_listening_and_removed_on_exit(backend, tmp_path,
        serve_config):
    pid_file = tmp_path / "run" / "lbctl.pid"
    pid_file.parent.mkdir()
    serve = await start_serve("--pid-file", str(pid_file), str(serve_config(backend.url)))
    try:
        assert pid_file.read_text() == f"{serve.proc.pid}\n"
        assert oct(pid_file.stat().st_mode & 0o777) == "0o644"
        assert [p.name for p in pid_file.parent.iterdir()] == ["lbctl.pid"]   # no temp left
    finally:
        assert await stop(serve) == 0
    assert not pid_file.exists()


async def test_a_pid_file_held_by_a_live_serve_is_refused(backend, tmp_path, serve_config,
        free_port):
    pid_file = tmp_path / "lbctl.pid"
    first = await start_serve("--pid-file", str(pid_file),
                              str(serve_config(backend.url, "a.toml")))
    try:
        port = free_port()
        code, out, err = await lbctl("serve", "--pid-file", str(pid_file),
                                     str(serve_config(backend.url, "b.toml", port)))
        assert code == 1
        assert err.strip() == (f"lbctl: pid file {pid_file}: lbctl is already running as pid "
                               f"{first.proc.pid} (stop it first, or reload it: lbctl reload "
                               f"CONFIG --pid-file {pid_file})")
        assert pid_file.read_text() == f"{first.proc.pid}\n"      # untouched
        with socket.socket() as s:                                # and nothing was bound
            s.bind(("127.0.0.1", port))
    finally:
        assert await stop(first) == 0


@pytest.mark.parametrize("content", ["dead", "garbage", "empty"])
async def test_a_stale_pid_file_is_taken_over(backend, tmp_path, content, serve_config):
    pid_file = tmp_path / "lbctl.pid"
    pid_file.write_text({"dead": f"{dead_pid()}\n", "garbage": "not a pid\n", "empty": ""}[content])
    serve = await start_serve("--log-format", "json", "--pid-file", str(pid_file),
                              str(serve_config(backend.url)))
    try:
        assert pid_file.read_text() == f"{serve.proc.pid}\n"
        await serve.wait_for_log(r'"event": "pid_file_stale"')
    finally:
        assert await stop(serve) == 0
    assert not pid_file.exists()


async def test_an_unwritable_pid_file_is_one_line_and_exit_1_with_nothing_left(backend, tmp_path,
        serve_config, free_port):
    port = free_port()
    pid_file = tmp_path / "missing-dir" / "lbctl.pid"
    code, out, err = await lbctl("serve", "--pid-file", str(pid_file),
                                 str(serve_config(backend.url, port=port)))
    assert code == 1
    assert err.strip().splitlines()[-1] == \
        f"lbctl: pid file {pid_file}: cannot write: No such file or directory"
    assert "Traceback" not in err
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


async def test_a_successor_pid_file_is_not_removed_by_the_one_exiting(backend, tmp_path,
        serve_config):
    pid_file = tmp_path / "lbctl.pid"
    serve = await start_serve("--pid-file", str(pid_file), str(serve_config(backend.url)))
    pid_file.write_text("4194000\n")            # someone else wrote it meanwhile
    assert await stop(serve) == 0
    assert pid_file.read_text() == "4194000\n"


# ---- lbctl reload ---------------------------------------------------------------------------

async def test_reload_validates_then_signals_the_serve_of_the_pid_file(backend, tmp_path,
        serve_config):
    pid_file = tmp_path / "lbctl.pid"
    config = serve_config(backend.url)
    serve = await start_serve("--pid-file", str(pid_file), str(config))
    try:
        mark = len(serve.lines)
        code, out, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
        assert code == 0, err
        assert out.strip() == f"{config}: OK (1 route, 1 pool, 1 backend); reload signalled " \
                              f"to pid {serve.proc.pid}"
        await serve.wait_for_log(r"reloaded ", start=mark)

        good = config.read_text()
        config.write_text(good.replace('pool = "p"', 'pool = "nope"'))
        mark = len(serve.lines)
        code, out, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
        assert code == 2 and out == ""
        assert "routes[0].pool" in err and err.strip().endswith("nothing signalled")
        # The serve heard nothing: the next thing it logs is the next (valid) reload.
        config.write_text(good)
        code, _, _ = await lbctl("reload", str(config), "--pid-file", str(pid_file))
        assert code == 0
        await serve.wait_for_log(r"reloaded ", start=mark)
        assert not any("reload" in line for line in serve.lines[mark:]
                       if "reloaded " not in line)
    finally:
        assert await stop(serve) == 0


async def test_reload_without_a_pid_file_finds_the_serve_of_that_config(backend, tmp_path,
        serve_config):
    """Started as `lbctl serve lb.toml` from its directory; reloaded by absolute path from
    elsewhere, and by a relative path through a symlink."""
    config = serve_config(backend.url)
    serve = await start_serve("lb.toml", cwd=tmp_path)
    try:
        mark = len(serve.lines)
        code, out, err = await lbctl("reload", str(config), cwd=ROOT)
        assert code == 0, err
        assert out.strip().endswith(f"reload signalled to pid {serve.proc.pid}")
        await serve.wait_for_log("reloaded ", start=mark)
        (tmp_path / "link").mkdir()
        (tmp_path / "link" / "lb.toml").symlink_to(config)
        code, out, err = await lbctl("reload", "lb.toml", cwd=tmp_path / "link")
        assert code == 0, err
    finally:
        assert await stop(serve) == 0


async def test_reload_with_no_serve_is_exit_1(backend, tmp_path, serve_config):
    config = serve_config(backend.url)
    code, out, err = await lbctl("reload", str(config))
    assert code == 1 and out == ""
    assert err.strip() == (f"lbctl: no running lbctl serve of {config} found; is it running, "
                           f"under this name? (or pass --pid-file)")
    pid_file = tmp_path / "lbctl.pid"
    code, _, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
    assert code == 1 and "does not exist" in err
    pid = dead_pid()
    pid_file.write_text(f"{pid}\n")
    code, _, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
    assert code == 1 and err.strip() == f"lbctl: pid file {pid_file} names pid {pid}, " \
                                        f"which is not running"


async def test_reload_refuses_a_pid_that_is_not_the_serve_of_that_config(backend, tmp_path,
        serve_config):
    other = await asyncio.create_subprocess_exec("sleep", "30")
    pid_file = tmp_path / "lbctl.pid"
    config = serve_config(backend.url)
    try:
        pid_file.write_text(f"{other.pid}\n")
        code, _, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
        assert code == 1 and err.strip() == \
            f"lbctl: pid {other.pid} (from {pid_file}) is not lbctl serve; not signalled"
        assert other.returncode is None             # SIGHUP would have ended it
    finally:
        other.kill()
        await other.wait()
    serve = await start_serve("--pid-file", str(pid_file),
                              str(serve_config(backend.url, "other.toml")))
    try:
        code, _, err = await lbctl("reload", str(config), "--pid-file", str(pid_file))
        assert code == 1 and err.strip() == \
            f"lbctl: pid {serve.proc.pid} (from {pid_file}) does not serve {config}; not signalled"
    finally:
        assert await stop(serve) == 0


# ---- sd_notify ----------------------------------------------------------------------------

class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket, by path or abstract name."""

    def __init__(self, tmp_path: Path, abstract: bool) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"lbctl-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            path = str(tmp_path / "notify.sock")
            self.sock.bind(path)
            self.env = path
        self.sock.setblocking(False)

    async def receive(self, timeout: float = 15.0) -> dict[str, str]:
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), timeout)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
async def test_sd_notify_ready_reloading_and_stopping(backend, tmp_path, abstract, serve_config):
    notify = NotifySocket(tmp_path, abstract)
    config = serve_config(backend.url)
    try:
        proc = await asyncio.create_subprocess_exec(
            LBCTL, "serve", str(config), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**ENV, "NOTIFY_SOCKET": notify.env})
        serve = LbctlProcess(proc)
        ready = await notify.receive()
        assert ready["READY"] == "1" and ready["STATUS"].startswith("listening on 127.0.0.1:")
        await serve.wait_for_log("listening on")

        proc.send_signal(signal.SIGHUP)
        reloading = await notify.receive()
        now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        assert reloading["RELOADING"] == "1"
        assert 0 <= now_usec - int(reloading["MONOTONIC_USEC"]) < 60_000_000
        done = await notify.receive()
        assert done["READY"] == "1" and done["STATUS"].startswith("reloaded")

        good = config.read_text()
        config.write_text(good + "\n[oops]\n")
        proc.send_signal(signal.SIGHUP)
        assert (await notify.receive())["RELOADING"] == "1"
        rejected = await notify.receive()
        assert rejected["READY"] == "1" and rejected["STATUS"].startswith("reload rejected")

        proc.send_signal(signal.SIGTERM)
        stopping = await notify.receive()
        assert stopping["STOPPING"] == "1"
        assert await serve.wait() == 0
    finally:
        notify.close()


async def test_a_notify_socket_nobody_listens_on_is_logged_once_and_harmless(backend, tmp_path,
        serve_config):
    config = serve_config(backend.url)
    proc = await asyncio.create_subprocess_exec(
        LBCTL, "serve", str(config), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**ENV, "NOTIFY_SOCKET": str(tmp_path / "nobody.sock")})
    serve = LbctlProcess(proc)
    await serve.wait_for_log("listening on")
    mark = len(serve.lines)
    proc.send_signal(signal.SIGHUP)
    await serve.wait_for_log("reloaded", start=mark)
    assert await stop(serve) == 0
    assert sum("sd_notify: cannot send" in line for line in serve.lines) == 1


# ---- the systemd unit's command lines, run as written ----------------------------------------

async def test_the_units_commands_work_as_written(backend, tmp_path, serve_config):
    """ExecStartPre, ExecStart (Type=notify: READY), ExecReload (validate, then RELOADING and
    READY), SIGTERM (STOPPING), with the unit's paths moved into the test's directory."""
    settings = unit_settings()
    config = serve_config(backend.url)
    run_dir = tmp_path / "run" / settings["RuntimeDirectory"][0]
    run_dir.mkdir(parents=True)           # systemd creates RuntimeDirectory= before starting

    def command(key: str) -> list[str]:
        line = settings[key][0].replace("/etc/lbctl/lb.toml", str(config)) \
            .replace("/run/", f"{tmp_path}/run/")
        argv = shlex.split(line)
        assert argv[0] == "/opt/lbctl/bin/lbctl"
        return [LBCTL, *argv[1:]]

    pre = await asyncio.create_subprocess_exec(*command("ExecStartPre"), env=ENV,
                                               stdout=asyncio.subprocess.PIPE)
    assert await asyncio.wait_for(pre.wait(), 30) == 0
    notify = NotifySocket(tmp_path, abstract=False)
    try:
        proc = await asyncio.create_subprocess_exec(
            *command("ExecStart"), stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={**ENV, "NOTIFY_SOCKET": notify.env})
        serve = LbctlProcess(proc)
        assert (await notify.receive())["READY"] == "1"
        pid_file = Path(settings["PIDFile"][0].replace("/run/", f"{tmp_path}/run/"))
        assert pid_file.read_text().strip() == str(proc.pid)      # systemd's PIDFile=

        reload = await asyncio.create_subprocess_exec(*command("ExecReload"), env=ENV,
                                                      stdout=asyncio.subprocess.PIPE)
        assert await asyncio.wait_for(reload.wait(), 30) == 0
        assert (await notify.receive())["RELOADING"] == "1"
        assert (await notify.receive())["READY"] == "1"

        assert settings["KillSignal"] == ["SIGTERM"]
        proc.send_signal(signal.SIGTERM)
        assert (await notify.receive())["STOPPING"] == "1"
        assert await serve.wait() == 0
        assert not pid_file.exists()
    finally:
        notify.close()


# ---- logrotate, pgrep ----------------------------------------------------------------------

def readme_logrotate() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```\n(/var/log/lbctl/access\.log \{.*?\n\})\n```", text, re.S)
    assert match, "the README's logrotate snippet"
    return match.group(1)


async def test_the_readme_logrotate_snippet_reopens_the_log(backend, tmp_path, serve_config,
        free_port):
    logrotate = shutil.which("logrotate") or ("/usr/sbin/logrotate"
                                              if os.path.exists("/usr/sbin/logrotate") else None)
    if logrotate is None:
        missing("logrotate is not installed (.ci/run installs it)")
    snippet = readme_logrotate()
    assert "pidof" not in snippet
    logs, run_dir = tmp_path / "log", tmp_path / "run"
    logs.mkdir()
    run_dir.mkdir()
    access = logs / "access.log"
    port = free_port()
    config = serve_config(backend.url, port=port,
                          extra=f'[log]\naccess = "{access}"\nformat = "combined"\n')
    pid_file = run_dir / "lbctl.pid"
    conf = tmp_path / "logrotate.conf"
    conf.write_text(snippet.replace("/var/log/lbctl/", f"{logs}/")
                    .replace("/run/lbctl/", f"{run_dir}/") + "\n")
    assert str(pid_file) in conf.read_text()
    serve = await start_serve("--pid-file", str(pid_file), str(config))
    try:
        async with aiohttp.ClientSession() as session:
            async def get(path: str) -> None:
                async with session.get(f"http://127.0.0.1:{port}{path}") as resp:
                    await resp.read()

            await get("/before-rotation")
            await wait_for_file(access, "/before-rotation")
            mark = len(serve.lines)
            proc = await asyncio.create_subprocess_exec(
                logrotate, "--force", "--state", str(tmp_path / "state"), str(conf),
                stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, err.decode()
            await serve.wait_for_log("access log reopened", start=mark)
            await get("/after-rotation")
            await wait_for_file(access, "/after-rotation")
        assert "/before-rotation" not in access.read_text()
        assert "/before-rotation" in (logs / "access.log.1").read_text()
    finally:
        assert await stop(serve) == 0


async def wait_for_file(path: Path, text: str, timeout: float = 10.0) -> None:
    """The access log is written by a background thread in batches: wait for the line."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and text in path.read_text()):
        assert time.monotonic() < deadline, f"{text!r} never reached {path}"
        await asyncio.sleep(0.05)


async def test_pgrep_finds_the_serve_by_name(backend, tmp_path, serve_config):
    """The process name is lbctl (the script's name), so pgrep and pidof -x find it; the pid
    file is still the way to find one serve among several."""
    pgrep = shutil.which("pgrep")
    if pgrep is None:
        pytest.skip("pgrep is not installed")
    serve = await start_serve(str(serve_config(backend.url)))
    try:
        out = subprocess.run([pgrep, "-x", "lbctl"], capture_output=True, text=True,
                             timeout=10).stdout.split()
        assert str(serve.proc.pid) in out
    finally:
        assert await stop(serve) == 0
