"""``lbctl check``: each exit code from a real situation, the status line, the JSON shape, the
Prometheus textfile, the state file, and one run as a real subprocess.

The CLI runs its own event loop, so CliRunner is invoked in a worker thread while the real
backends keep answering on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import sys

from click.testing import CliRunner

from lbctl.cli import main
from tests.health_support import start

LATENCY = r"\d+\.\d{6}s"


async def check(*args: str):
    result = await asyncio.to_thread(CliRunner().invoke, main, ["check", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def first_line(result) -> str:
    return result.stdout.splitlines()[0]


HTTP = 'path = "/healthz"\ntimeout = "1s"'


async def test_ok_when_every_backend_answers(backends, tmp_path, write_config):
    a, _ = await start(backends, "a")
    b, _ = await start(backends, "b")
    cfg = write_config({"api": [a.url, b.url]}, {"api": HTTP})
    result = await check(cfg)
    assert result.exit_code == 0
    assert re.fullmatch(rf"LBCTL OK - api 2/2 up \| api_up=2;;;0;2 api_latency={LATENCY}",
                        first_line(result))
    # Not a terminal: a plain ASCII table, no colour codes.
    assert "\x1b[" not in result.stdout
    assert re.search(r"pool\s+\|\s+backend\s+\|\s+result", result.stdout)
    assert re.search(r"api\s+\|\s+api-1\s+\|\s+up\s+\|\s+200", result.stdout)


async def test_warning_when_a_backend_is_down(backends, tmp_path, write_config):
    a, _ = await start(backends, "a")
    b, b_behaviour = await start(backends, "b")
    c, _ = await start(backends, "c")
    b_behaviour.status = 500
    cfg = write_config({"api": [a.url, b.url], "web": [c.url]},
                       {"api": HTTP, "web": HTTP})
    result = await check(cfg)
    assert result.exit_code == 1
    assert re.fullmatch(rf"LBCTL WARNING - api 1/2 up, web 1/1 up \| api_up=1;;;0;2 "
                        rf"api_latency={LATENCY} web_up=1;;;0;1 web_latency={LATENCY}",
                        first_line(result))
    assert re.search(r"api-2\s+\|\s+DOWN\s+\|\s+500\s+\|.*\|\s+status 500", result.stdout)
    assert "WARNING: api: down: api-2" in result.stdout


async def test_critical_when_a_pool_has_none_up(backends, tmp_path, free_port, write_config):
    a, _ = await start(backends, "a")
    cfg = write_config({"api": [f"http://127.0.0.1:{free_port()}"], "web": [a.url]},
                       {"api": HTTP, "web": HTTP})
    result = await check(cfg)
    assert result.exit_code == 2
    assert first_line(result).startswith("LBCTL CRITICAL - api 0/1 up, web 1/1 up | "
                                         "api_up=0;;;0;1 api_latency=U web_up=1;;;0;1")
    assert "connection refused" in result.stdout


async def test_min_healthy_as_a_count_and_as_a_percentage(
        backends, tmp_path, free_port, write_config):
    up = [await start(backends, n) for n in "ab"]
    urls = [tb.url for tb, _ in up] + [f"http://127.0.0.1:{free_port()}"]
    cfg = write_config({"api": urls}, {"api": HTTP})
    assert (await check(cfg, "--min-healthy", "3")).exit_code == 2
    assert (await check(cfg, "--min-healthy", "2")).exit_code == 1       # enough, one down
    # A percentage of the pool, rounded up: 66% of 3 needs 2 up, 67% needs 3.
    assert (await check(cfg, "--min-healthy", "66%")).exit_code == 1
    assert (await check(cfg, "--min-healthy", "67%")).exit_code == 2
    critical = await check(cfg, "--min-healthy", "100%")
    assert "CRITICAL: api: 2/3 up, fewer than 3" in critical.stdout


async def test_latency_thresholds(backends, tmp_path, write_config):
    slow, behaviour = await start(backends, "slow")
    behaviour.delay = 0.3
    cfg = write_config({"api": [slow.url]}, {"api": HTTP})
    warn = await check(cfg, "--warn-latency", "50ms")
    assert warn.exit_code == 1
    assert re.search(rf"api_latency={LATENCY};0\.05;$", first_line(warn))
    crit = await check(cfg, "--warn-latency", "20ms", "--crit-latency", "50ms")
    assert crit.exit_code == 2
    assert re.search(rf"api_latency={LATENCY};0\.02;0\.05$", first_line(crit))
    assert "slow latency" not in first_line(crit)   # the reason goes below the table
    assert "api-1 latency" in crit.stdout


async def test_unknown_for_invalid_or_unreadable_config_and_bad_usage(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[routes]]\npool = "api"\n[pools.api]\nalgoritm = "p2c"\n'
                   '[[pools.api.backends]]\nurl = "http://127.0.0.1:1"\n')
    result = await check(str(bad))
    assert result.exit_code == 3
    assert first_line(result).startswith("LBCTL UNKNOWN - ")
    assert "pools.api.algoritm" in first_line(result) and "algorithm" in result.stderr
    assert "Traceback" not in result.output

    missing = await check(str(tmp_path / "nope.toml"))
    assert missing.exit_code == 3
    assert first_line(missing) == f"LBCTL UNKNOWN - {tmp_path / 'nope.toml'}: cannot read the " \
                                  f"config file: it does not exist"

    usage = await check(str(bad), "--timeout", "soon")
    assert usage.exit_code == 3                      # click would say 2, which reads as CRITICAL
    assert first_line(usage).startswith("LBCTL UNKNOWN - usage: Invalid value for '--timeout'")

    as_json = await check(str(tmp_path / "nope.toml"), "--json")
    assert as_json.exit_code == 3
    doc = json.loads(as_json.stdout)
    assert doc["status"] == "UNKNOWN" and doc["pools"] == [] and "does not exist" in doc["error"]


async def test_unknown_pool_name_is_unknown(backends, tmp_path, write_config):
    a, _ = await start(backends, "a")
    cfg = write_config({"api": [a.url]})
    result = await check(cfg, "--pool", "wbe")
    assert result.exit_code == 3
    assert first_line(result) == f"LBCTL UNKNOWN - no pool named 'wbe' in {cfg} (pools: api)"


async def test_json_has_exactly_the_spec_shape(backends, tmp_path, free_port, write_config):
    a, _ = await start(backends, "a")
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config({"api": [a.url, dead]}, {"api": HTTP})
    result = await check(cfg, "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)                 # one document, nothing else on stdout
    assert list(doc) == ["status", "pools"] and doc["status"] == "WARNING"
    pool, = doc["pools"]
    assert list(pool) == ["name", "healthy", "total", "backends"]
    assert (pool["name"], pool["healthy"], pool["total"]) == ("api", 1, 2)
    good, bad = pool["backends"]
    assert list(good) == ["name", "url", "ok", "status", "latency", "error"]
    assert good["name"] == "api-1" and good["url"] == a.url and good["ok"] is True
    assert good["status"] == 200 and isinstance(good["latency"], float) and good["error"] is None
    assert bad == {"name": "api-2", "url": dead, "ok": False, "status": None, "latency": None,
                   "error": "connection refused"}


async def test_quiet_prints_only_the_status_line_and_pool_selects(
        backends, tmp_path, free_port, write_config):
    a, _ = await start(backends, "a")
    cfg = write_config({"api": [a.url], "web": [f"http://127.0.0.1:{free_port()}"]},
                       {"api": HTTP})
    result = await check(cfg, "-q", "--pool", "api")
    assert result.exit_code == 0
    assert result.stdout.count("\n") == 1 and result.stdout.startswith("LBCTL OK - api 1/1 up |")


async def test_pool_without_health_is_checked_with_a_tcp_connect(backends, tmp_path, write_config):
    connected = asyncio.Event()

    async def silent(reader, writer):          # accepts, never speaks HTTP
        connected.set()
        await reader.read(-1)
    port = await backends.start_raw(silent)
    cfg = write_config({"raw": [f"http://127.0.0.1:{port}"]})
    result = await check(cfg, "-q")
    assert result.exit_code == 0
    await asyncio.wait_for(connected.wait(), 5)     # the server side saw the connection


async def test_timeout_option_overrides_the_pool_timeout(backends, tmp_path, write_config):
    async def hang(reader, writer):
        await reader.read(-1)
    port = await backends.start_raw(hang)
    cfg = write_config({"api": [f"http://127.0.0.1:{port}"]},
                       {"api": 'path = "/healthz"\ntimeout = "30s"'})
    result = await check(cfg, "--timeout", "200ms", "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout)["pools"][0]["backends"][0]["error"] == "timeout"


async def test_prometheus_textfile_is_written_atomically(
        backends, tmp_path, free_port, write_config):
    a, _ = await start(backends, "a")
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config({"api": [a.url, dead]}, {"api": HTTP})
    out = tmp_path / "prom"
    out.mkdir()
    target = out / "lbctl.prom"
    result = await check(cfg, "-q", "--prometheus-textfile", str(target))
    assert result.exit_code == 1
    assert os.listdir(out) == ["lbctl.prom"]         # the temp file was renamed, not left behind
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    text = target.read_text()
    for line in ("# TYPE lbctl_check_status gauge", "lbctl_check_status 1",
                 'lbctl_check_pool_backends{pool="api"} 2',
                 'lbctl_check_pool_healthy_backends{pool="api"} 1',
                 f'lbctl_check_backend_up{{pool="api",backend="api-1",url="{a.url}"}} 1',
                 f'lbctl_check_backend_up{{pool="api",backend="api-2",url="{dead}"}} 0',
                 f'lbctl_check_probe_http_status{{pool="api",backend="api-1",url="{a.url}"}} 200'):
        assert line in text.splitlines(), line
    assert re.search(r'^lbctl_check_probe_latency_seconds\{pool="api",backend="api-1",.*\} '
                     r'\d\.\d+(e-\d+)?$', text, re.M)
    assert "api-2" not in "".join(l for l in text.splitlines() if "latency" in l)
    assert re.search(r"^lbctl_check_timestamp_seconds \d+\.\d+$", text, re.M)

    # Config broken later: the textfile says the check could not run.
    (tmp_path / "lb.toml").write_text("not toml [")
    result = await check(cfg, "-q", "--prometheus-textfile", str(target))
    assert result.exit_code == 3 and "lbctl_check_status 3" in target.read_text().splitlines()


async def test_unwritable_textfile_is_unknown(backends, tmp_path, write_config):
    a, _ = await start(backends, "a")
    cfg = write_config({"api": [a.url]})
    result = await check(cfg, "-q", "--prometheus-textfile", str(tmp_path / "no" / "x.prom"))
    assert result.exit_code == 3
    assert re.match(r"LBCTL UNKNOWN - cannot write textfile .*x\.prom: No such file or "
                    r"directory; api 1/1 up \| api_up=1;;;0;1", first_line(result))


async def test_state_file_keeps_rise_and_fall_across_runs(backends, tmp_path, write_config):
    a, _ = await start(backends, "a")
    b, b_behaviour = await start(backends, "b")
    cfg = write_config({"api": [a.url, b.url]},
                       {"api": 'path = "/healthz"\nrise = 2\nfall = 2'})
    state = tmp_path / "state.json"
    run = lambda: check(cfg, "--state-file", str(state), "--json")   # noqa: E731

    def verdict(result):
        doc = json.loads(result.stdout)
        return result.exit_code, doc["pools"][0]["healthy"], doc["pools"][0]["backends"][1]["ok"]

    assert verdict(await run()) == (0, 2, True)
    b_behaviour.status = 503
    assert verdict(await run()) == (0, 2, False)     # one lost probe pages nobody
    assert verdict(await run()) == (1, 1, False)     # the second one in a row does
    b_behaviour.status = 200
    assert verdict(await run()) == (1, 1, True)      # one good probe is not yet enough
    assert verdict(await run()) == (0, 2, True)

    saved = json.loads(state.read_text())
    assert saved["version"] == 1
    assert saved["backends"]["api/api-2"]["url"] == b.url
    assert saved["backends"]["api/api-2"]["healthy"] is True
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

    # Checking one pool leaves the other pools' records alone.
    other = write_config({"api": [a.url, b.url], "web": [a.url]},
                         {"api": 'path = "/healthz"\nrise = 2\nfall = 2'}, name="two.toml")
    assert (await check(other, "-q", "--pool", "web", "--state-file", str(state))).exit_code == 0
    assert set(json.loads(state.read_text())["backends"]) == {"api/api-1", "api/api-2",
                                                              "web/web-1"}

    # Without the state file every run judges the probe alone.
    b_behaviour.status = 503
    assert (await check(cfg, "-q")).exit_code == 1
    # A damaged state file is reported and replaced, not fatal.
    state.write_text("{not json")
    damaged = await run()
    assert damaged.exit_code == 0 and "ignored" in damaged.stderr
    assert json.loads(state.read_text())["backends"]["api/api-2"]["count"] == 1


async def test_help_has_an_example():
    result = await check("--help")
    assert result.exit_code == 0
    assert "Example" in result.stdout and "lbctl check lb.toml" in result.stdout


async def test_real_subprocess_exit_code_and_output(backends, tmp_path, free_port, write_config):
    a, _ = await start(backends, "a")
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = write_config({"api": [a.url, dead]}, {"api": HTTP})
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lbctl", "check", cfg,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 1, err
    lines = out.decode().splitlines()
    assert re.fullmatch(rf"LBCTL WARNING - api 1/2 up \| api_up=1;;;0;2 api_latency={LATENCY}",
                        lines[0])
    assert "connection refused" in out.decode() and err == b""


async def test_internal_error_is_unknown_without_a_traceback(
        backends, tmp_path, monkeypatch, write_config):
    a, _ = await start(backends, "a")
    cfg = write_config({"api": [a.url]})

    def broken(*args, **kwargs):
        raise RuntimeError("boom")
    monkeypatch.setattr("lbctl.health.report.judge", broken)
    result = await check(cfg)
    assert result.exit_code == 3
    assert result.stdout == "LBCTL UNKNOWN - internal error: RuntimeError: boom\n"
    assert "Traceback" not in result.output
