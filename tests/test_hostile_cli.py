"""Every command against bad input, as the installed ``lbctl`` run as a real process.

One table: each case is a command line (built from hostile files written into the test's
directory, dead and taken ports, a live ``lbctl serve`` and an admin API impostor answering
garbage), the exit code the README documents, and a pattern the error line must match. Every
case also checks the rule of the house: a few lines on stderr that name the problem, never a
Python traceback. The cases are the ones that broke before (a traceback or a hang on
``/dev/zero``, a huge pid, ``/dev/full``, a surrogate in argv, a NaN option, a log line with a
NaN time, an impostor's ``[]``...) and the ones around them that held.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import subprocess
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from tests.process import ENV, LBCTL
from tests.support import free_port

RUN_TIMEOUT = 40        # seconds for one command; a hang fails its case alone


# ---- an admin API impostor: the path's first segment says what it answers ----------------

IMPOSTOR = {
    "list": (200, b"[]"),
    "null": (200, b"null"),
    "html": (200, b"<html>not an admin API</html>"),
    "pools-str": (200, b'{"pools": "x"}'),
    "pools-of-str": (200, b'{"pools": ["x"]}'),
    "fields-missing": (200, b'{"pools": [{"name": "a", "backends": [{"name": "b"}]}]}'),
    "backend-str": (200, b'{"pool": "a", "backend": "x"}'),
    "nan-weight": (200, b'{"pools": [{"name": "a", "backends": [{"name": "b", "state": "up",'
                        b' "weight": NaN, "latency_histogram": {"le": [1, null],'
                        b' "counts": [1, 1]}}]}]}'),
    "bad-histogram": (200, b'{"pools": [{"name": "a", "backends": [{"name": "b", "state": "up",'
                           b' "weight": 1, "latency_histogram": {"le": ["x"],'
                           b' "counts": [1, 2, 3]}}]}]}'),
    "deep": (200, b"[" * 100_000 + b"]" * 100_000),
    "not-utf8": (200, b'{"pools": "\xff"}'),
    "error-list": (500, b"[1]"),
    "escape": (400, b'{"error": "bad \\u001b[31mred\\u001b[0m"}'),
}


class Impostor(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = IMPOSTOR.get(self.path.split("/")[1], (404, b"{}"))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def impostor():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---- a real lbctl serve (for backend commands) -----------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """``lbctl serve`` with an admin API; its listening port is in use for the cases that
    need a taken port. The one backend is a dead port: nothing here sends traffic."""
    d = tmp_path_factory.mktemp("live")
    listen, admin = free_port(), free_port()
    path = d / "lb.toml"
    path.write_text(f'[listen]\naddress = "127.0.0.1:{listen}"\n[admin]\n'
                    f'address = "127.0.0.1:{admin}"\n[[routes]]\npool = "a"\n[pools.a]\n'
                    f'[[pools.a.backends]]\nurl = "http://127.0.0.1:{free_port()}"\n'
                    f'name = "a-1"\n')
    proc = subprocess.Popen([LBCTL, "serve", str(path)], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:             # until it says it listens (or dies)
            lines.append(line)
            if "listening on" in line:
                break
        else:
            pytest.fail("lbctl serve did not start:\n" + "".join(lines))
        threading.Thread(target=proc.stderr.read, daemon=True).start()   # keep draining
        yield {"listen": listen, "admin": f"127.0.0.1:{admin}", "config": str(path)}
    finally:
        proc.kill()
        proc.wait()


# ---- hostile files ---------------------------------------------------------------------------

GOOD = '[listen]\naddress = "127.0.0.1:{port}"\n[[routes]]\npool = "a"\n[pools.a]\n' \
       '[[pools.a.backends]]\nurl = "http://127.0.0.1:{backend}"\n'


def lbctl_line(i: int, **fields) -> str:
    """One line of lbctl's JSON access log, as the writer orders its keys."""
    record = {"time": "2026-11-24T02:38:46.120Z", "epoch": 1795487926.12 + i * 0.01,
              "client": "10.1.2.3", "consumer": None, "method": "GET", "path": "/x",
              "protocol": "HTTP/1.1", "status": 200, "bytes": 5, "duration": 0.01,
              "route": "*/", "pool": "api", "backend": "b1", "upstream_time": 0.005,
              "attempts": 1, "request_id": "r", "termination": None, "host": "h",
              "user_agent": "ua", "referer": None}
    record.update(fields)
    return json.dumps(record, separators=(",", ":"))


def nginx_line(i: int, **kw) -> str:
    v = {"month": "Nov", "rt": "0.010", "urt": "0.005", **kw}
    return (f'10.0.0.1 - - [24/{v["month"]}/2026:02:38:{i % 60:02d} +0000] "GET /a HTTP/1.1" '
            f'200 5 "-" "ua" {v["rt"]} {v["urt"]} 127.0.0.1:9001')


def haproxy_line(i: int, timer: str = "5") -> str:
    return (f"Nov 24 02:38:46 lb haproxy[1]: 10.0.0.1:5555 [24/Nov/2026:02:38:46.{i:03d}] fe "
            f"be/srv1 0/0/1/{timer}/6 200 100 - - ---- 1/1/0/0/0 0/0 \"GET /a HTTP/1.1\"")


def write_files(d: Path) -> dict[str, str]:
    f: dict[str, str] = {}

    def put(name: str, data: bytes | str) -> None:
        path = d / name
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = str(path)

    port = free_port()
    put("good.toml", GOOD.format(port=port, backend=free_port()))
    put("binary.toml", b"\xff\xfe\x00binary\x00")
    put("wrong-type.toml", '[listen]\naddress = 5\n')
    put("unknown-key.toml", GOOD.format(port=port, backend=1) + "wieght = 3\n")
    with open(d / "huge.toml", "wb") as out:                 # over the 16 MiB a config may be
        out.truncate(17 * 1024 * 1024)
    f["huge.toml"] = str(d / "huge.toml")
    (d / "dir.toml").mkdir()
    f["dir.toml"] = str(d / "dir.toml")
    f["non-utf8-name"] = str(d).encode() + b"/l\xffive.toml"
    Path(os.fsdecode(f["non-utf8-name"])).write_text(GOOD.format(port=port, backend=1))
    put("huge.pid", "9" * 30 + "\n")
    put("arabic-digit.pid", "\u0663\n")
    put("scenario.toml", "seed = 1\n[[backends]]\ncount = 2\n")
    put("zero-samples.toml", 'seed = 1\n[[backends]]\ncount = 2\n'
                             'service = { dist = "empirical", file = "/dev/zero" }\n')
    put("many-groups.toml", "".join("[[backends]]\ncount = 60000\n" for _ in range(3)))
    put("nonlocal-demo.toml", '[listen]\naddress = "127.0.0.1:1"\n[[routes]]\npool = "a"\n'
                              '[pools.a]\n[[pools.a.backends]]\nurl = "http://192.0.2.7:80"\n')
    ok = [lbctl_line(i) for i in range(50)]
    put("nan-time.log", "\n".join(ok + ['{"epoch": NaN, "backend": "b1", "upstream_time": 0.1,'
                                        ' "status": 200, "attempts": 1}',
                                        lbctl_line(60, upstream_time=float("nan"))]) + "\n")
    put("inf-time.log", "\n".join(ok + [lbctl_line(61).replace('"upstream_time":0.005',
                                                               '"upstream_time":1e999'),
                                        lbctl_line(62, epoch=1e300)]) + "\n")
    put("wrong-kinds.log", "\n".join(ok + [
        '{"epoch": 1795487926.5, "backend": 5, "upstream_time": 0.1}',
        '{"epoch": 1795487926.5, "backend": "b1", "upstream_time": 0.1, "status": "x"}',
        '{"epoch": 1795487926.5, "backend": "b1", "upstream_time": 0.1, "method": ["GET"]}',
        '{"epoch": true, "backend": "b1", "upstream_time": 0.1}',
        "[" * 100_000, lbctl_line(63)[:40]]) + "\n")
    put("object-keys.log", "\n".join(lbctl_line(i, path={"a": 1}) for i in range(60)) + "\n")
    put("one-long-line.log", b"a" * (3 * 1024 * 1024))
    put("bad-month.log", "\n".join(nginx_line(i, month="Foo") for i in range(60)) + "\n")
    put("nan-nginx.log", "\n".join(nginx_line(i, rt="nan", urt="inf") for i in range(60)) + "\n")
    put("backtracking.log", "\n".join(["1 - - [" + '] "' * 20_000] * 20
                                      + [nginx_line(i) for i in range(60)]) + "\n")
    put("huge-timers.log", "\n".join(haproxy_line(i, "9" * 400) for i in range(60)) + "\n")
    put("too-many-backends.log", "".join(f"{1795487926 + i * 0.001:.3f} 0.005 b{i} /x\n"
                                         for i in range(100_001)))
    return f


# ---- the table -------------------------------------------------------------------------------

@dataclass
class Case:
    id: str
    argv: Callable[[dict], list]         # from the context: files, ports, live serve, impostor
    code: int
    error: str = ""                      # a regex the stderr (or, for check, stdout) matches
    stdout: str | None = None            # a regex stdout matches, for cases that succeed


def F(name):
    return lambda c: c["files"][name]


CASES = [
    # validate: 0 valid, 2 invalid
    Case("validate-missing", lambda c: ["validate", c["tmp"] + "/missing.toml"], 2,
         "cannot read the config file: it does not exist"),
    Case("validate-directory", lambda c: ["validate", F("dir.toml")(c)], 2, "is a directory"),
    Case("validate-dev-zero", lambda c: ["validate", "/dev/zero"], 2,
         "/dev/zero: cannot read the config file: it is a character device, not a file"),
    Case("validate-huge", lambda c: ["validate", F("huge.toml")(c)], 2,
         "cannot read the config file: it is larger than 16 MiB"),
    Case("validate-binary", lambda c: ["validate", F("binary.toml")(c)], 2,
         "line 1, column 1: not valid UTF-8"),
    Case("validate-wrong-type", lambda c: ["validate", F("wrong-type.toml")(c)], 2,
         "listen.address: expected an address"),
    Case("validate-unknown-key", lambda c: ["validate", F("unknown-key.toml")(c)], 2,
         r"wieght: unknown key; did you mean 'weight'\?"),
    Case("validate-non-utf8-path", lambda c: ["validate", F("non-utf8-name")(c)], 0,
         stdout=r"OK \(1 route"),
    # check: 0 OK .. 3 UNKNOWN; never a traceback, never 2 for bad usage
    Case("check-missing", lambda c: ["check", c["tmp"] + "/missing.toml"], 3,
         "LBCTL UNKNOWN - .*does not exist"),
    Case("check-dev-zero", lambda c: ["check", "/dev/zero"], 3,
         "LBCTL UNKNOWN - .*character device"),
    Case("check-textfile-unwritable",
         lambda c: ["check", F("good.toml")(c), "--prometheus-textfile", "/proc/nope/x.prom"], 3,
         "LBCTL UNKNOWN - cannot write textfile /proc/nope/x.prom"),
    Case("check-state-file-directory",
         lambda c: ["check", F("good.toml")(c), "--state-file", F("dir.toml")(c)], 3,
         "LBCTL UNKNOWN - cannot write state file"),
    Case("check-timeout-nan", lambda c: ["check", F("good.toml")(c), "--timeout", "nan"], 3,
         "LBCTL UNKNOWN - usage: Invalid value for '--timeout'"),
    Case("check-unknown-pool", lambda c: ["check", F("good.toml")(c), "--pool", "nope"], 3,
         "LBCTL UNKNOWN - no pool named 'nope'"),
    # serve: 2 bad config, 1 runtime failure
    Case("serve-missing", lambda c: ["serve", c["tmp"] + "/missing.toml"], 2, "does not exist"),
    Case("serve-dev-zero", lambda c: ["serve", "/dev/zero"], 2, "character device"),
    Case("serve-port-in-use", lambda c: ["serve", c["in_use"]], 1,
         "cannot listen on 127.0.0.1:[0-9]+: address already in use"),
    Case("serve-pid-file-unwritable",
         lambda c: ["serve", "--pid-file", "/proc/nope/lb.pid", F("good.toml")(c)], 1,
         "pid file /proc/nope/lb.pid: cannot write"),
    # reload: 0 signalled, 2 invalid, 1 no such serve
    Case("reload-huge-pid",
         lambda c: ["reload", c["live"]["config"], "--pid-file", F("huge.pid")(c)], 1,
         "expected a process id, found '9999"),
    Case("reload-other-digits",
         lambda c: ["reload", c["live"]["config"], "--pid-file", F("arabic-digit.pid")(c)], 1,
         "expected a process id"),
    Case("reload-pid-file-dev-zero",
         lambda c: ["reload", c["live"]["config"], "--pid-file", "/dev/zero"], 1,
         "pid file /dev/zero: cannot read: it is a character device"),
    Case("reload-invalid", lambda c: ["reload", F("binary.toml")(c)], 2,
         "invalid \\(1 problem\\); nothing signalled"),
    # simulate: 0; 2 bad scenario or usage (an unreachable admin API: 1)
    Case("simulate-dev-zero", lambda c: ["simulate", "/dev/zero"], 2, "character device"),
    Case("simulate-samples-dev-zero", lambda c: ["simulate", F("zero-samples.toml")(c)], 2,
         'service.file: cannot read "/dev/zero": it is a character device'),
    Case("simulate-too-many-backends", lambda c: ["simulate", F("many-groups.toml")(c)], 2,
         "expected at most 100,000 backends"),
    Case("simulate-backends-option", lambda c: ["simulate", "--backends", "1000000"], 2,
         "'--backends': 1000000 is not in the range"),
    Case("simulate-rate-tiny", lambda c: ["simulate", "--backends", "2", "--rate", "1e-300"], 2,
         "--rate: expected a number of requests per second from 0.001"),
    Case("simulate-load-huge", lambda c: ["simulate", "--backends", "2", "--load", "1e300"], 2,
         "--load: expected a fraction of the capacity"),
    Case("simulate-speedup-nan",
         lambda c: ["simulate", "--replay", F("nan-time.log")(c), "--speedup", "nan"], 2,
         "'--speedup': expected a finite number"),
    Case("simulate-csv-disk-full",
         lambda c: ["simulate", F("scenario.toml")(c), "--requests", "200", "--csv", "/dev/full"],
         2, "/dev/full: cannot write: No space left on device"),
    Case("simulate-html-disk-full",
         lambda c: ["simulate", F("scenario.toml")(c), "--requests", "200", "--html",
                    "/dev/full"], 2, "/dev/full: cannot write: No space left on device"),
    Case("simulate-html-unwritable",
         lambda c: ["simulate", F("scenario.toml")(c), "--html", "/proc/nope/r.html"], 2,
         "/proc/nope/r.html: cannot write"),
    Case("simulate-series-directory",
         lambda c: ["simulate", F("scenario.toml")(c), "--series", F("dir.toml")(c)], 2,
         "is a directory"),
    Case("simulate-interval-finer-than-the-run",
         lambda c: ["simulate", "--backends", "2", "--requests", "200", "--rate", "0.001",
                    "--interval", "1ms", "--json"], 0, stdout='"requests": 200'),
    Case("replay-nan-times", lambda c: ["simulate", "--replay", F("nan-time.log")(c), "--json"],
         0, stdout='"requests": 50,'),
    Case("replay-infinite-times",
         lambda c: ["simulate", "--replay", F("inf-time.log")(c), "--json"], 0,
         stdout='"requests": 50,'),
    Case("replay-fields-of-the-wrong-kind",
         lambda c: ["simulate", "--replay", F("wrong-kinds.log")(c), "--json"], 0,
         stdout='"requests": 50,'),
    Case("replay-object-keys", lambda c: ["simulate", "--replay", F("object-keys.log")(c)], 2,
         r"found none that parse \(60 lines skipped\)"),
    Case("replay-one-endless-line",
         lambda c: ["simulate", "--replay", F("one-long-line.log")(c)], 2,
         r"found none that parse \(1 lines skipped\)"),
    Case("replay-bad-month", lambda c: ["simulate", "--replay", F("bad-month.log")(c)], 2,
         r"found none that parse \(60 lines skipped\)"),
    Case("replay-nginx-nan", lambda c: ["simulate", "--replay", F("nan-nginx.log")(c)], 2,
         r"found none that parse"),
    Case("replay-lines-that-make-a-regex-backtrack",
         lambda c: ["simulate", "--replay", F("backtracking.log")(c), "--json"], 0,
         stdout='"requests": 60,'),
    Case("replay-haproxy-huge-timers",
         lambda c: ["simulate", "--replay", F("huge-timers.log")(c)], 2,
         r"found none that parse \(60 lines skipped\)"),
    Case("replay-too-many-backends",
         lambda c: ["simulate", "--replay", F("too-many-backends.log")(c), "--log-format",
                    "$msec $request_time $upstream_addr $uri"], 2,
         "expected a log naming at most 100,000 backends"),
    Case("replay-dev-zero", lambda c: ["simulate", "--replay", "/dev/zero"], 2,
         "character device"),
    Case("from-admin-dead", lambda c: ["simulate", "--from-admin", c["dead"]], 1,
         "cannot reach the admin API"),
    Case("from-admin-list", lambda c: ["simulate", "--from-admin", c["impostor"] + "/list"], 1,
         "expected the /stats document of lbctl serve"),
    Case("from-admin-pools-of-strings",
         lambda c: ["simulate", "--from-admin", c["impostor"] + "/pools-of-str"], 1,
         r"found pools\[0\]: not a pool with a name"),
    Case("from-admin-nan-weight",
         lambda c: ["simulate", "--from-admin", c["impostor"] + "/nan-weight"], 1,
         r"pools\[0\]\.backends\[0\]\.weight: not a weight"),
    Case("from-admin-bad-histogram",
         lambda c: ["simulate", "--from-admin", c["impostor"] + "/bad-histogram"], 1,
         "latency_histogram: not bounds and counts of one length"),
    Case("from-admin-deep", lambda c: ["simulate", "--from-admin", c["impostor"] + "/deep"], 1,
         "found something else"),
    # stats: 0; 1 admin API unreachable (or not one); 2 bad usage
    Case("stats-dead", lambda c: ["stats", "--once", "--admin", c["dead"]], 1,
         "cannot reach the admin API at .*: Connection refused"),
    Case("stats-list", lambda c: ["stats", "--once", "--admin", c["impostor"] + "/list"], 1,
         "did not answer with a JSON object"),
    Case("stats-html", lambda c: ["stats", "--json", "--admin", c["impostor"] + "/html"], 1,
         "did not answer with a JSON object"),
    Case("stats-pools-of-strings",
         lambda c: ["stats", "--once", "--admin", c["impostor"] + "/pools-of-str"], 1,
         "its /stats cannot be shown"),
    Case("stats-fields-missing",
         lambda c: ["stats", "--once", "--admin", c["impostor"] + "/fields-missing"], 1,
         "its /stats cannot be shown \\(no field"),
    Case("stats-deep", lambda c: ["stats", "--once", "--admin", c["impostor"] + "/deep"], 1,
         "did not answer with a JSON object"),
    Case("stats-not-utf8",
         lambda c: ["stats", "--once", "--admin", c["impostor"] + "/not-utf8"], 1,
         "did not answer with a JSON object"),
    Case("stats-server-error",
         lambda c: ["stats", "--once", "--admin", c["impostor"] + "/error-list"], 1,
         "500 Internal Server Error"),
    Case("stats-userinfo", lambda c: ["stats", "--once", "--admin",
                                      "http://user:hunter2hunter2@127.0.0.1:9/"], 2,
         "--admin: expected a URL without user or password"),
    Case("stats-token-newline",
         lambda c: ["stats", "--once", "--admin", c["live"]["admin"], "--token", "a\nb"], 2,
         "--token: expected printable ASCII"),
    Case("stats-live", lambda c: ["stats", "--once", "--admin", c["live"]["admin"]], 0,
         stdout="pool a"),
    # backend: 0; 1 unreachable or refused; 2 bad usage
    Case("backend-drain-non-utf8-name",
         lambda c: ["backend", "drain", "a", b"\xff", "--admin", c["live"]["admin"]], 2,
         "backend '\\\\udcff': expected UTF-8 text"),
    Case("backend-remove-non-utf8-pool",
         lambda c: ["backend", "remove", b"\xfe", "x", "--admin", c["live"]["admin"]], 2,
         "pool '\\\\udcfe': expected UTF-8 text"),
    Case("backend-add-non-utf8-name",
         lambda c: ["backend", "add", "a", "http://127.0.0.1:9", "--name", b"\xff",
                    "--admin", c["live"]["admin"]], 2, "expected UTF-8 text"),
    Case("backend-unknown-pool",
         lambda c: ["backend", "drain", "nope", "a-1", "--admin", c["live"]["admin"]], 1,
         "404 no pool named 'nope'"),
    Case("backend-weight-nan",
         lambda c: ["backend", "weight", "a", "a-1", "nan", "--admin", c["live"]["admin"]], 2,
         "expected a number from 0.01 to 1000"),
    Case("backend-add-weight-nan",
         lambda c: ["backend", "add", "a", "http://127.0.0.1:9", "--weight", "nan", "--admin",
                    c["live"]["admin"]], 2, "'--weight': expected a finite number"),
    Case("backend-add-not-a-url",
         lambda c: ["backend", "add", "a", "notaurl", "--admin", c["live"]["admin"]], 1,
         "400 url: expected a URL"),
    Case("backend-add-any-address",
         lambda c: ["backend", "add", "a", "http://0.0.0.0:80", "--admin", c["live"]["admin"]],
         1, "400 url: .*0.0.0.0 means any address to listen on"),
    Case("backend-add-itself",
         lambda c: ["backend", "add", "a", f"http://127.0.0.1:{c['live']['listen']}", "--admin",
                    c["live"]["admin"]], 1,
         "400 url: expected a backend other than lbctl itself"),
    Case("backend-add-control-name",
         lambda c: ["backend", "add", "a", "http://127.0.0.1:9", "--name", "a\u009bb",
                    "--admin", c["live"]["admin"]], 1, "400 name: expected a non-empty name"),
    Case("backend-impostor-list",
         lambda c: ["backend", "drain", "a", "b", "--admin", c["impostor"] + "/list"], 1,
         "did not answer with a JSON object"),
    Case("backend-impostor-backend-string",
         lambda c: ["backend", "add", "a", "http://127.0.0.1:9", "--admin",
                    c["impostor"] + "/backend-str"], 1, 'expected {"pool": ..., "backend"'),
    Case("backend-impostor-escape-sequence",
         lambda c: ["backend", "drain", "a", "b", "--admin", c["impostor"] + "/escape"], 1,
         r"400 bad \?\[31mred\?\[0m"),
    Case("backend-dead", lambda c: ["backend", "enable", "a", "b", "--admin", c["dead"]], 1,
         "cannot reach the admin API"),
    # completion: 0; 2 unknown shell
    Case("completion-unknown-shell", lambda c: ["completion", "tcsh"], 2,
         "'tcsh' is not one of 'bash', 'zsh', 'fish'"),
    # demo (only cases that fail before anything is started)
    Case("demo-load-nan", lambda c: ["demo", "--load", "nan"], 2,
         "'--load': expected a finite number"),
    Case("demo-load-infinite", lambda c: ["demo", "--load", "inf"], 2, "'--load'"),
    Case("demo-load-negative", lambda c: ["demo", "--load", "-1"], 2, "'--load'"),
    Case("demo-missing-config", lambda c: ["demo", "--config", c["tmp"] + "/missing.toml"], 2,
         "does not exist"),
    Case("demo-backend-elsewhere", lambda c: ["demo", "--config", F("nonlocal-demo.toml")(c)],
         2, r"pools\.a\.backends\[0\]\.url: the demo sends traffic on loopback only"),
]


@pytest.fixture(scope="module")
def context(tmp_path_factory, live, impostor):
    d = tmp_path_factory.mktemp("hostile")
    files = write_files(d)
    in_use = d / "in-use.toml"
    in_use.write_text(GOOD.format(port=live["listen"], backend=free_port()))
    return {"tmp": str(d), "files": files, "live": live, "impostor": impostor,
            "dead": f"http://127.0.0.1:{free_port()}", "in_use": str(in_use)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line_and_the_documented_exit_code(context, case):
    argv = [os.fsencode(a) if isinstance(a, str) else a for a in case.argv(context)]
    proc = subprocess.run([os.fsencode(LBCTL), *argv], env=ENV, capture_output=True,
                          stdin=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
    out = proc.stdout.decode(errors="replace")
    err = proc.stderr.decode(errors="replace")
    shown = f"exit {proc.returncode}\n--- stdout\n{out[:2000]}\n--- stderr\n{err[:2000]}"
    assert "Traceback" not in out + err, shown
    assert proc.returncode == case.code, shown
    if case.error:
        # check speaks on stdout (its status line); every other command on stderr.
        where = out if argv[0] == b"check" else err
        assert re.search(case.error, where), shown
        lines = [line for line in err.splitlines() if line.strip()]
        assert 0 < len(lines) <= 5 or argv[0] == b"check", shown
    if case.stdout is not None:
        assert re.search(case.stdout, out), shown


def test_stats_from_an_impostor_never_writes_its_escape_sequences(live):
    """A /stats document with lbctl's layout whose names and states hold terminal escapes
    (clear the screen, set the window title, blink) and a bidi override: shown with "?"."""
    with urllib.request.urlopen(f"http://{live['admin']}/stats", timeout=5) as r:
        doc = json.loads(r.read())
    b = doc["pools"][0]["backends"][0]
    b["name"], b["state"] = "\x1b[2J\x1b]0;owned\x07evil\u202eloop", "\x1b[5mup"
    body = json.dumps(doc).encode()
    IMPOSTOR["escapes-stats"] = (200, body)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        proc = subprocess.run([LBCTL, "stats", "--once", "--admin",
                               f"http://127.0.0.1:{server.server_address[1]}/escapes-stats"],
                              env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    finally:
        server.shutdown()
        server.server_close()
        del IMPOSTOR["escapes-stats"]
    assert proc.returncode == 0, proc.stderr
    assert "?[2J?]0;owned?evil?loop" in proc.stdout and "?[5mup" in proc.stdout
    assert not [c for c in proc.stdout if not c.isprintable() and c != "\n"]
