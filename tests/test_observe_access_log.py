"""Access-log lines for each way a request can end, and their safety against hostile input."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web

from lbctl.config.model import Log, Timeouts
from lbctl.observe.access_log import escape, nginx_escape, redact_target, redact_url
from tests.support import backend_config, config, raw_exchange

SECRETS = ("SECRET-AUTH", "SECRET-COOKIE", "SECRET-KEY", "SECRET-QUERY")


class AccessLogWatch:
    """The proxy's access log file, and an event per record handed to the writer."""

    def __init__(self, proxy, path) -> None:
        self.path = path
        self.access = proxy.observer.access
        self.count = 0
        self.changed = asyncio.Event()
        original = self.access.write

        def write(record):
            original(record)
            self.count += 1
            self.changed.set()
        self.access.write = write

    async def wait_for(self, count: int) -> list[str]:
        while self.count < count:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), 10)
        self.access.hand_off()
        await asyncio.get_running_loop().run_in_executor(None, self.access.flush)
        return self.path.read_text(encoding="utf-8").splitlines()

    async def records(self, count: int) -> list[dict]:
        return [json.loads(line) for line in await self.wait_for(count)]


async def start(backends, tmp_path, pools, fmt="json", **options):
    path = tmp_path / "access.log"
    cfg = replace(config(pools, **options), log=Log(access=str(path), format=fmt))
    proxy = await backends.proxy(cfg)
    return proxy, AccessLogWatch(proxy, path)


async def get(port: int, path: str = "/", **kw):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}{path}", **kw) as resp:
            return resp.status, await resp.read()


async def test_success_line_has_every_field(backends, tmp_path):
    a = await backends.start("a")
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "a")]})
    status, _ = await get(proxy.address[1], "/hello?x=1", headers={"X-Request-ID": "req-42",
                                                                   "User-Agent": "tester"})
    assert status == 200
    [record] = await log.records(1)
    assert record["method"] == "GET" and record["path"] == "/hello?x=1"
    assert record["status"] == 200 and record["bytes"] == 1
    assert record["client"] == "127.0.0.1" and record["protocol"] == "HTTP/1.1"
    assert record["route"] == "*/" and record["pool"] == "api" and record["backend"] == "a"
    assert record["attempts"] == 1 and record["termination"] is None
    assert record["request_id"] == "req-42" and record["user_agent"] == "tester"
    assert 0 <= record["upstream_time"] <= record["duration"]
    assert record["time"].endswith("Z")


async def test_refused_backend_is_a_502_with_connect_error(backends, tmp_path, free_port):
    dead = backend_config(f"http://127.0.0.1:{free_port()}", "dead")
    proxy, log = await start(backends, tmp_path, {"api": [dead]}, retries=0)
    assert (await get(proxy.address[1]))[0] == 502
    [record] = await log.records(1)
    assert (record["status"], record["backend"], record["attempts"]) == (502, "dead", 1)
    assert record["termination"] == "connect_error" and record["upstream_time"] is None


async def test_hanging_backend_is_a_504_with_upstream_timeout(backends, tmp_path):
    async def hang(reader, writer):
        await reader.read(-1)
    port = await backends.start_raw(hang)
    proxy, log = await start(backends, tmp_path,
                             {"api": [backend_config(f"http://127.0.0.1:{port}", "hang")]},
                             retries=0, timeouts=Timeouts(connect=1.0, response=0.2))
    assert (await get(proxy.address[1]))[0] == 504
    [record] = await log.records(1)
    assert record["status"] == 504 and record["termination"] == "upstream_timeout"
    assert record["duration"] >= 0.2


async def test_retry_shows_two_attempts_and_the_backend_that_answered(backends, tmp_path):
    async def reset(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.transport.abort()
    port = await backends.start_raw(reset)
    good = await backends.start("good")
    proxy, log = await start(backends, tmp_path, {
        "api": [backend_config(f"http://127.0.0.1:{port}", "reset"),
                backend_config(good.url, "good")]}, retries=1)
    assert (await get(proxy.address[1]))[0] == 200        # round robin: "reset" first
    [record] = await log.records(1)
    assert record["attempts"] == 2 and record["backend"] == "good"
    assert record["status"] == 200 and record["termination"] is None


async def test_client_abort_is_logged_as_499_client_abort(backends, tmp_path):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request, body):
        arrived.set()
        await release.wait()                  # answers only after the client gave up
        return web.Response(text="late")
    a = await backends.start("slow", slow)
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "slow")]})
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.address[1])
    writer.write(b"GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    await arrived.wait()
    # A reset, not a FIN: a FIN is a half-close, after which the proxy still answers.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                               struct.pack("ii", 1, 0))
    writer.transport.abort()
    [record] = await log.records(1)
    assert record["status"] == 499 and record["termination"] == "client_abort"
    assert record["backend"] == "slow" and record["path"] == "/wait"
    release.set()


HOSTILE = (b"GET /p?token=SECRET-QUERY&page=2 HTTP/1.1\r\n"
           b"Host: h\r\n"
           b"User-Agent: evil\x85\x9b[31mred\xff\r\n"          # NEL and CSI (C1 controls)
           b"Referer: x\"quote\r\n"
           b"Authorization: Bearer SECRET-AUTH\r\n"
           b"Cookie: session=SECRET-COOKIE\r\n"
           b"X-Api-Key: SECRET-KEY\r\n"
           b"Connection: close\r\n\r\n")


@pytest.mark.parametrize("fmt", ["json", "combined"])
async def test_hostile_request_cannot_forge_lines_or_leak_secrets(backends, tmp_path, fmt):
    a = await backends.start("a")
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "a")]}, fmt=fmt)
    answer = await raw_exchange(proxy.address[1], HOSTILE)
    assert answer.startswith(b"HTTP/1.1 200")
    # CR/LF inside the request line or a header value: refused by the parser, still logged.
    refused = await raw_exchange(proxy.address[1], b"GET /a\rX-Forged: 1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400")
    lines = await log.wait_for(2)
    assert len(lines) == 2                     # exactly one line per request, nothing forged
    raw = log.path.read_bytes()
    for secret in SECRETS:
        assert secret.encode() not in raw
    # Only printable ASCII (and the newline ending each line) reached the file.
    assert all(32 <= c < 127 for line in raw.splitlines() for c in line)
    text = lines[0]
    assert "token=[REDACTED]" in text and "page=2" in text
    if fmt == "json":
        first, second = (json.loads(line) for line in lines)
        assert first["user_agent"] == "evil\\x85\\x9b[31mred\\xff"
        assert second["status"] == 400 and second["termination"] == "bad_request"
    else:
        # As NGINX writes them: \x22 for a quote, upper-case hex.
        assert "evil\\x85\\x9B[31mred\\xFF" in text and '"x\\x22quote"' in text
        assert " 400 " in lines[1] and "term=bad_request" in lines[1]


async def test_sigusr1_reopen_starts_a_new_file_after_rotation(backends, tmp_path):
    a = await backends.start("a")
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "a")]})
    await get(proxy.address[1], "/one")
    await log.wait_for(1)
    rotated = tmp_path / "access.log.1"
    log.path.rename(rotated)
    proxy.observer.reopen()
    await get(proxy.address[1], "/two")
    lines = await log.wait_for(2)
    assert [json.loads(line)["path"] for line in lines] == ["/two"]
    assert json.loads(rotated.read_text())["path"] == "/one"


def test_escape_and_redact_are_pure_and_total():
    assert escape("a\r\nb\x00\x7f\\") == "a\\r\\nb\\x00\\x7f\\\\"
    assert escape("plain") == "plain"
    assert redact_target("/x?api_key=1&q=2&access_token=3&session=4") == \
        "/x?api_key=[REDACTED]&q=2&access_token=[REDACTED]&session=[REDACTED]"
    assert redact_target("/no-query") == "/no-query"


async def test_unwritable_access_log_is_one_clear_error_at_start_and_kept_on_reload(
        backends, tmp_path):
    from lbctl.errors import UserError
    from lbctl.serve.instance import Instance
    a = await backends.start("a")
    base = config({"api": [backend_config(a.url, "a")]})
    bad = replace(base, log=Log(access=str(tmp_path / "missing-dir" / "access.log")))
    with pytest.raises(UserError, match="cannot open the access log .*missing-dir"):
        Instance(bad)
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "a")]})
    first = proxy.observer.access
    proxy.reload(bad)                                   # logged; the old log keeps writing
    assert proxy.observer.access is first
    await get(proxy.address[1])
    assert len(await log.wait_for(1)) == 1


async def test_explained_decision_is_logged_and_never_carried_to_the_next_request(
        backends, tmp_path):
    from lbctl.config.model import Address, Admin, Route
    a = await backends.start("a")
    path = tmp_path / "access.log"
    cfg = replace(config({"api": [backend_config(a.url, "a")]},
                         routes=[Route(pool="api", path_prefix="/api")]),
                  log=Log(access=str(path)), admin=Admin(Address("127.0.0.1", 0), token="t"))
    proxy = await backends.proxy(cfg)
    log = AccessLogWatch(proxy, path)
    async with aiohttp.ClientSession() as session:        # one keep-alive connection
        base = f"http://127.0.0.1:{proxy.address[1]}"
        async with session.get(base + "/api/x", headers={"X-LB-Explain": "1",
                                                         "X-LB-Admin-Token": "t"}) as resp:
            assert "X-LB-Decision" in resp.headers
        async with session.get(base + "/elsewhere") as resp:
            assert resp.status == 404
    first, second = await log.records(2)
    assert first["decision"].startswith("algorithm=round_robin;") and "chosen=a" in first["decision"]
    assert "decision" not in second and second["status"] == 404


# ---- redaction gaps: every one of these was written in clear -----------------------------------

LEAKS = [
    "tok%65n=SECRET-1", "a=1;token=SECRET-2", "token%20=SECRET-3", "key[]=SECRET-4",
    "jwt=SECRET-5", "bearer=SECRET-6", "authorization=SECRET-7", "sessionid=SECRET-8",
    "code=SECRET-9", "pwd=SECRET-10", "X-Amz-Credential=SECRET-11", "X-Amz-Signature=SECRET-12",
    "X-Amz-Security-Token=SECRET-13", "sig=SECRET-14", "signature=SECRET-15",
    "client_secret=SECRET-16", "password=SECRET-17", "access_token=SECRET-18",
    "user[password]=SECRET-19", "PHPSESSID=SECRET-20", "api-key=SECRET-21", "TOKEN=SECRET-22",
    "refresh_token=SECRET-23", "id_token=SECRET-24", "token=SECRET-25;still-secret-26",
]


@pytest.mark.parametrize("param", LEAKS)
def test_credential_parameters_are_redacted_however_they_are_spelled(param):
    redacted = redact_target(f"/p?page=2&{param}&q=ok")
    assert "SECRET" not in redacted and "still-secret" not in redacted
    assert redacted.startswith("/p?page=2&") and redacted.endswith("&q=ok")
    assert "[REDACTED]" in redacted


@pytest.mark.parametrize("name", ["page", "q", "zipcode", "keyword", "lang", "sort"])
def test_ordinary_parameters_are_kept(name):
    assert redact_target(f"/p?{name}=v") == f"/p?{name}=v"


def test_path_parameters_fragments_and_referers_are_redacted_too():
    assert redact_target("/app;jsessionid=SECRET/x?q=1") == "/app;jsessionid=[REDACTED]/x?q=1"
    assert redact_target("/cb#access_token=SECRET&state=s") == \
        "/cb#access_token=[REDACTED]&state=s"
    assert redact_url("https://user:SECRET@h.example/r?token=SECRET&p=1") == \
        "https://[REDACTED]@h.example/r?token=[REDACTED]&p=1"


def test_nginx_escape():
    assert nginx_escape(escape('a"b\\c\r\n\x1b\xff')) == "a\\x22b\\x5Cc\\x0D\\x0A\\x1B\\xFF"
    assert nginx_escape("plain") == "plain"


@pytest.mark.parametrize("fmt", ["json", "combined"])
async def test_no_secret_reaches_the_log_from_the_query_or_the_referer(backends, tmp_path, fmt):
    a = await backends.start("a")
    proxy, log = await start(backends, tmp_path, {"api": [backend_config(a.url, "a")]}, fmt=fmt)
    # Raw brackets are outside the target grammar (a 400, below); clients encode them.
    query = "&".join(LEAKS[:-1]).replace("[", "%5B").replace("]", "%5D")
    request = (f"GET /p?{query}&page=2 HTTP/1.1\r\nHost: h\r\n"
               f"Referer: https://app.example/login?token=SECRET-REFERER&next=%2F\r\n"
               f"User-Agent: a \"quoted\" \\ agent\r\nConnection: close\r\n\r\n").encode()
    assert (await raw_exchange(proxy.address[1], request)).startswith(b"HTTP/1.1 200")
    # A refused target is logged too: its fragment must not leak, its quote not break fields.
    refused = await raw_exchange(proxy.address[1], b'GET /cb"x?key[]=SECRET-BRACKET#access_token='
                                                   b"SECRET-FRAGMENT HTTP/1.1\r\nHost: h\r\n\r\n")
    assert refused.startswith(b"HTTP/1.1 400")
    lines = await log.wait_for(2)
    raw = log.path.read_text()
    assert "SECRET" not in raw and "still-secret" not in raw
    assert "page=2" in lines[0] and "next=%2F" in lines[0]
    if fmt == "json":
        first, second = (json.loads(line) for line in lines)
        assert first["referer"] == "https://app.example/login?token=[REDACTED]&next=%2F"
        assert second["path"] == '/cb"x?key[]=[REDACTED]'     # up to the next "&"
    else:
        assert '"https://app.example/login?token=[REDACTED]&next=%2F"' in lines[0]
        assert '"a \\x22quoted\\x22 \\x5C agent"' in lines[0]
        assert '"GET /cb\\x22x?key[]=[REDACTED] HTTP/1.1" 400' in lines[1]
        # Every quoted field ends where a parser expects it: quotes come in pairs.
        assert all(line.count('"') % 2 == 0 for line in lines)
