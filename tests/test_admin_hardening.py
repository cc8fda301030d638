"""The admin API against what a web page can send, and against bodies meant to break it.

The requests are the ones that worked before: on a no-token loopback admin (the sample
config's), a POST with ``Origin: http://evil.example`` and no content type disabled a
backend, a ``text/plain`` body set a weight, ``Host: evil.example`` (DNS rebinding) was
served, and a deeply nested JSON body was a 500 with a traceback. Raw bytes on a real
socket, so exactly these headers and nothing a client library adds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from lbctl.balancing.consistent_hash import RING_CAP
from lbctl.config.model import Address, Admin
from tests.support import backend_config, config, raw_exchange

TOKEN = "admin-token-0123456789abcdef"


async def admin_proxy(backends, token: str | None = None, **pool_options):
    a, b = await backends.start("a"), await backends.start("b")
    cfg = config({"api": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                 **pool_options)
    proxy = await backends.proxy(replace(cfg, admin=Admin(Address("127.0.0.1", 0), token=token)))
    return proxy, proxy.admin.bound[1]


async def send(port: int, method: str, path: str, headers: dict[str, str] | None = None,
               body: bytes = b"", host: str | None = None) -> tuple[int, dict]:
    """One raw request to the admin API; (status, JSON body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}",
             "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    raw = await raw_exchange(port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head[9:12])
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, {}


def state(proxy, name: str = "a"):
    backend = proxy.runtime.pools["api"].pool.by_name[name]
    return backend.admin.value, backend.weight


# ---- the requests a web page made -------------------------------------------------------------

async def test_a_cross_site_post_without_content_type_cannot_disable_a_backend(backends):
    proxy, port = await admin_proxy(backends)
    status, body = await send(port, "POST", "/pools/api/backends/a/disable",
                              {"Origin": "http://evil.example"})
    assert status == 403 and "Origin" in body["error"]
    assert state(proxy) == ("enabled", 1.0)


async def test_a_text_plain_body_cannot_set_a_weight(backends):
    proxy, port = await admin_proxy(backends)
    status, body = await send(port, "POST", "/pools/api/backends/a/weight",
                              {"Content-Type": "text/plain"}, b'{"weight": 5}')
    assert status == 415 and "application/json" in body["error"]
    status, _ = await send(port, "POST", "/pools/api/backends/a/weight",
                           {"Content-Type": "application/x-www-form-urlencoded"}, b"weight=5")
    assert status == 415
    assert state(proxy) == ("enabled", 1.0)


@pytest.mark.parametrize("host", ["evil.example", "evil.example:9900", "192.0.2.1:9900"])
async def test_a_rebound_host_name_is_refused_without_a_token(backends, host):
    proxy, port = await admin_proxy(backends)
    status, body = await send(port, "GET", "/stats", host=host)
    assert status == 403 and "Host" in body["error"]
    status, _ = await send(port, "POST", "/pools/api/backends/a/drain",
                           {"Content-Type": "application/json"}, host=host)
    assert status == 403 and state(proxy) == ("enabled", 1.0)


@pytest.mark.parametrize("site", ["cross-site", "same-site"])
async def test_fetch_metadata_from_another_site_is_refused(backends, site):
    proxy, port = await admin_proxy(backends)
    status, _ = await send(port, "POST", "/pools/api/backends/a/disable",
                           {"Sec-Fetch-Site": site, "Content-Type": "application/json"})
    assert status == 403 and state(proxy) == ("enabled", 1.0)
    assert (await send(port, "GET", "/stats", {"Sec-Fetch-Site": site}))[0] == 403


async def test_an_opaque_origin_is_refused(backends):
    proxy, port = await admin_proxy(backends)
    status, _ = await send(port, "POST", "/pools/api/backends/a/disable",
                           {"Origin": "null", "Content-Type": "application/json"})
    assert status == 403 and state(proxy) == ("enabled", 1.0)


# ---- what must keep working -------------------------------------------------------------------

async def test_the_admins_own_page_may_post_json_same_origin(backends):
    """What the web dashboard served at GET / does: fetch() from its own origin, with JSON."""
    proxy, port = await admin_proxy(backends)
    own = {"Origin": f"http://127.0.0.1:{port}", "Sec-Fetch-Site": "same-origin",
           "Content-Type": "application/json"}
    status, body = await send(port, "POST", "/pools/api/backends/a/weight", own, b'{"weight": 4}')
    assert status == 200 and body["backend"]["weight"] == 4
    status, _ = await send(port, "POST", "/pools/api/backends/b/drain", own)
    assert status == 200 and state(proxy, "b")[0] == "draining"
    assert (await send(port, "GET", "/stats", {"Sec-Fetch-Site": "none"}))[0] == 200


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}",
                                  "localhost:8000", "127.0.0.1"])
async def test_local_names_pass_on_any_port(backends, host):
    """Any port: an SSH tunnel (ssh -L 8000:127.0.0.1:9900) sends Host: localhost:8000."""
    proxy, port = await admin_proxy(backends)
    assert (await send(port, "GET", "/stats", host=host.format(port=port)))[0] == 200


async def test_tools_without_browser_headers_work_as_before(backends):
    """curl -X POST sends no content type and no body; lbctl's client says JSON."""
    proxy, port = await admin_proxy(backends)
    assert (await send(port, "POST", "/pools/api/backends/a/drain"))[0] == 200
    status, _ = await send(port, "POST", "/pools/api/backends/a/enable",
                           {"Content-Type": "application/json; charset=utf-8"})
    assert status == 200 and state(proxy) == ("enabled", 1.0)


async def test_with_a_token_any_host_name_works_but_cross_site_still_does_not(backends):
    proxy, port = await admin_proxy(backends, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (await send(port, "GET", "/stats", auth, host="lb1.internal:9900"))[0] == 200
    assert (await send(port, "GET", "/stats", host="lb1.internal:9900"))[0] == 401
    status, _ = await send(port, "POST", "/pools/api/backends/a/disable",
                           {**auth, "Origin": "http://evil.example",
                            "Content-Type": "application/json"})
    assert status == 403 and state(proxy) == ("enabled", 1.0)


async def test_lbctl_backend_and_stats_still_work(backends, tmp_path):
    """lbctl's own client, in process: the code path `lbctl backend` and `lbctl stats` use."""
    import asyncio
    from lbctl.admin.client import AdminClient
    proxy, port = await admin_proxy(backends)
    client = AdminClient(f"http://127.0.0.1:{port}")
    answer = await asyncio.to_thread(client.backend, "api", "a", "weight", 2.5)
    assert answer["backend"]["weight"] == 2.5
    answer = await asyncio.to_thread(client.backend, "api", "b", "disable")
    assert answer["backend"]["state"] == "disabled"
    doc = await asyncio.to_thread(client.stats)
    assert [b["weight"] for b in doc["pools"][0]["backends"]] == [2.5, 1.0]


# ---- bodies that must be a 400, never a 500 ---------------------------------------------------

BAD_BODIES = [
    (b"weight=5", "not valid JSON"),
    (b"", "not valid JSON"),
    (b"[" * 8000 + b"]" * 8000, "nested too deeply"),
    (b'{"weight": ' + b"[" * 8000 + b"]" * 8000 + b"}", "nested too deeply"),
    (b"[" * 100_000, "larger than"),
    (b'{"weight": NaN}', "NaN"),
    (b'{"weight": Infinity}', "Infinity"),
    (b'{"weight": -Infinity}', "Infinity"),
    (b'{"weight": 1e999}', "from 0.01 to 1000"),
    (b'{"weight": 1e308}', "from 0.01 to 1000"),
    (b'{"weight": 5e-324}', "from 0.01 to 1000"),
    (b'{"weight": 20000}', "from 0.01 to 1000"),
    (b'{"weight": 0}', "from 0.01 to 1000"),
    (b'{"weight": ' + b"9" * 400 + b"}", "a very large number"),
    (b'{"weight": ' + b"9" * 5000 + b"}", "not valid JSON"),
    (b'{"weight": "5"}', "from 0.01 to 1000"),
    (b'{"weight": true}', "from 0.01 to 1000"),
    (b'{"weight": null}', "from 0.01 to 1000"),
    (b'{"weight": [5]}', "from 0.01 to 1000"),
    (b'{"w": 5}', "from 0.01 to 1000"),
    (b"[5]", "expected a JSON object"),
    (b'"5"', "expected a JSON object"),
    (b'{"weight": 5' + b" " * 20_000 + b"}", "larger than"),
    (b"\xff\xfe", "not valid JSON"),
]


@pytest.mark.parametrize("body, reason", BAD_BODIES,
                         ids=[b[:24].decode("latin-1") for b, _ in BAD_BODIES])
async def test_bad_weight_bodies_are_400_with_a_reason_and_no_traceback(backends, caplog, body, reason):
    proxy, port = await admin_proxy(backends, algorithm="consistent_hash", hash_key="path")
    with caplog.at_level(logging.DEBUG):
        status, answer = await send(port, "POST", "/pools/api/backends/a/weight",
                                    {"Content-Type": "application/json"}, body)
    assert status == 400, answer
    assert reason in answer["error"]
    assert state(proxy) == ("enabled", 1.0)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_a_weight_at_the_top_of_the_range_keeps_the_ring_bounded(backends):
    """20,000 used to block every pool for 5.9 s; now the range stops at 1000 and the ring
    never has more than RING_CAP points, whatever the weights."""
    proxy, port = await admin_proxy(backends, algorithm="consistent_hash", hash_key="path")
    for name in ("a", "b"):
        status, _ = await send(port, "POST", f"/pools/api/backends/{name}/weight",
                               {"Content-Type": "application/json"}, b'{"weight": 1000}')
        assert status == 200
    ring = proxy.runtime.pools["api"].pool.algorithm
    assert len(ring._points) <= RING_CAP and len(ring._owners) == len(ring._points)
    assert {b.name for b in ring._owners} == {"a", "b"}


@pytest.mark.parametrize("weight", ["20000", "0.001", "0", "nan", "inf"])
def test_lbctl_backend_weight_refuses_weights_out_of_range_before_calling_the_api(weight):
    from click.testing import CliRunner
    from lbctl.cli import main
    result = CliRunner().invoke(main, ["backend", "weight", "api", "a", weight,
                                       "--admin", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "expected a number from 0.01 to 1000" in result.output or \
        "is not a valid float" in result.output, result.output


async def test_a_body_arriving_in_pieces_is_read_whole(backends):
    """A JSON body sent chunked, one small piece at a time, is still one body."""
    import asyncio
    proxy, port = await admin_proxy(backends)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /pools/api/backends/a/weight HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                 "Connection: close\r\n\r\n".encode())
    for piece in (b'{"wei', b'ght": ', b"2.5", b"}"):
        writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
        await writer.drain()
        await asyncio.sleep(0)
    writer.write(b"0\r\n\r\n")
    raw = await asyncio.wait_for(reader.read(-1), 5)
    writer.close()
    assert raw.startswith(b"HTTP/1.1 200"), raw
    assert state(proxy) == ("enabled", 2.5)
    raw = await raw_exchange(port, f"POST /pools/api/backends/a/weight HTTP/1.1\r\n"
                                   f"Host: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
                                   "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                   .encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (20_000, b" " * 20_000))
    assert raw.startswith(b"HTTP/1.1 400") and b"larger than" in raw


# ---- in a real browser: a page on another site tries what the report did ----------------------

from tests.browser import browser  # noqa: E402,F401  (a fixture)

EVIL_PAGE = """<!doctype html><title>loading</title>
<iframe name="sink" style="display:none"></iframe>
<form id="f" method="post" target="sink" action="{admin}/pools/api/backends/b/drain">
  <input name="x" value="1"></form>
<script>
(async () => {{
  const sent = [];
  sent.push(fetch("{admin}/pools/api/backends/a/disable", {{method: "POST", mode: "no-cors"}}));
  sent.push(fetch("{admin}/pools/api/backends/a/weight", {{method: "POST", mode: "no-cors",
      headers: {{"Content-Type": "text/plain"}}, body: '{{"weight": 7}}'}}));
  await Promise.allSettled(sent);
  const sink = document.querySelector("iframe");
  sink.addEventListener("load", () => {{ document.title = "done"; }});
  document.getElementById("f").submit();
}})();
</script>"""


async def test_a_page_on_another_site_cannot_operate_the_admin_api_in_a_real_browser(
        backends, browser, monkeypatch):
    import asyncio
    from aiohttp import web as aioweb
    from lbctl.admin import guard as guard_module
    from selenium.webdriver.support.ui import WebDriverWait

    refused = []
    original = guard_module.refusal

    def recording(request, **kw):                   # the real check, its answers recorded
        answer = original(request, **kw)
        if answer is not None:
            refused.append((request.path, answer.status))
        return answer
    monkeypatch.setattr(guard_module, "refusal", recording)

    proxy, port = await admin_proxy(backends)
    admin = f"http://127.0.0.1:{port}"

    async def page(request):
        return aioweb.Response(text=EVIL_PAGE.format(admin=admin), content_type="text/html")
    app = aioweb.Application()
    app.router.add_get("/", page)
    runner = aioweb.AppRunner(app)
    await runner.setup()
    site = aioweb.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    evil = f"http://localhost:{site._server.sockets[0].getsockname()[1]}/"   # another site
    try:
        def visit():
            browser.get(evil)
            WebDriverWait(browser, 20, poll_frequency=0.1).until(
                lambda d: d.title == "done", "the page sent its requests")
        await asyncio.wait_for(asyncio.to_thread(visit), 60)
    finally:
        await runner.cleanup()
    # Every request the page made reached the API and was refused; nothing changed.
    assert sorted(refused) == [("/pools/api/backends/a/disable", 403),
                               ("/pools/api/backends/a/weight", 403),
                               ("/pools/api/backends/b/drain", 403)]
    assert state(proxy, "a") == ("enabled", 1.0) and state(proxy, "b") == ("enabled", 1.0)
