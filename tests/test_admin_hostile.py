"""The admin API against a hostile client: bytes, names and URLs meant to break it.

Raw requests on a real socket to the admin API of an in-process serve. What broke before:
an ``Authorization`` header with bytes that are not UTF-8 was a 500 and a traceback in the
event log (without any token: the check ran first); a backend named with a lone surrogate
was added, and from then on every ``/metrics`` scrape was a 500 with a traceback; names with
C1 controls (``\\x9b`` starts a terminal escape) or a bidirectional override were accepted; a
backend at lbctl's own listening address (each request sent back in, until every connection
is used) and at ``0.0.0.0`` (which means this machine when connecting) were added; duplicate
JSON keys were read last-wins. What held is tested too, so it keeps holding.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from lbctl.admin.guard import host_name
from lbctl.config.keys import digest_of, same_secret
from tests.support import raw_exchange
from tests.test_admin_hardening import TOKEN, admin_proxy, send, state

JSON = {"Content-Type": "application/json"}


def no_traceback(caplog) -> list:
    return [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def raw(port: int, head: bytes, body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Raw bytes in; (status, head, body) out."""
    data = await raw_exchange(port, head + b"Connection: close\r\n\r\n" + body)
    top, _, payload = data.partition(b"\r\n\r\n")
    return int(top[9:12]), top, payload


# ---- the token --------------------------------------------------------------------------------

@pytest.mark.parametrize("sent", [b"Bearer \xff", b"Bearer " + TOKEN.encode() + b"\xff",
                                  b"Bearer \xc3\xa9", b"Bearer " + b"\xed\xa0\x80" * 6,
                                  b"Bearer " + b"A" * 8000, b"bearer", b"Basic " + TOKEN.encode()])
async def test_any_bytes_in_authorization_are_a_401_never_a_500(backends, caplog, sent):
    proxy, port = await admin_proxy(backends, token=TOKEN)
    with caplog.at_level(logging.DEBUG):
        status, _, body = await raw(port, b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                          b"Authorization: " + sent + b"\r\n")
    assert status == 401, body
    assert json.loads(body)["error"] == "missing or wrong bearer token"
    assert not no_traceback(caplog)


async def test_the_right_token_still_opens_in_any_case_of_bearer(backends):
    proxy, port = await admin_proxy(backends, token=TOKEN)
    for scheme in (b"Bearer", b"bearer", b"BEARER"):
        status, _, _ = await raw(port, b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: " +
                                 scheme + b" " + TOKEN.encode() + b" \r\n")
        assert status == 200


def test_tokens_are_compared_as_fixed_length_digests():
    """``hmac.compare_digest`` returns at once when the lengths differ, so comparing tokens
    themselves shows their length in the timing; the digests are always 32 bytes. (The
    timing itself is measured in bench/admin_token.py, not here: no timing in tests.)"""
    digest = digest_of(TOKEN)
    assert len(digest) == 32
    assert same_secret(TOKEN.encode(), digest)
    for wrong in (b"", b"x", TOKEN.encode()[:-1], TOKEN.encode() + b"x",
                  TOKEN.encode().upper(), b"\xff" * 1000):
        assert not same_secret(wrong, digest)


# ---- names --------------------------------------------------------------------------------------

BAD_NAMES = {
    "lone surrogate": "\\ud800",
    "C1 control (CSI)": "a\\u009b31mb",
    "next line": "a\\u0085b",
    "bidi override": "evil\\u202egnp.exe",
    "zero-width space": "a\\u200bb",
    "no-break space": "a\\u00a0b",
    "private use": "a\\ue000b",
    "too long": "n" * 321,
    "slash": "a/b",
    "nul": "a\\u0000b",
}


@pytest.mark.parametrize("name", list(BAD_NAMES.values()), ids=list(BAD_NAMES))
async def test_names_that_are_not_text_are_refused(backends, caplog, name):
    proxy, port = await admin_proxy(backends)
    body = b'{"url": "http://127.0.0.1:9", "name": "' + name.encode() + b'"}'
    with caplog.at_level(logging.DEBUG):
        status, answer = await send(port, "POST", "/pools/api/backends", JSON, body)
        assert status == 400, answer
        assert "name" in answer["error"] or "surrogate" in answer["error"]
        # And whatever was refused, the metrics and stats still render.
        assert (await send(port, "GET", "/metrics"))[0] == 200
        assert (await send(port, "GET", "/stats"))[0] == 200
    assert set(proxy.runtime.pools["api"].pool.by_name) == {"a", "b"}
    assert not no_traceback(caplog)


@pytest.mark.parametrize("name", ["ünï", "日本", "<b>bold</b>".replace("/", ""), "a\"b'c&d",
                                  "[red]x", "n" * 320])
async def test_names_of_printable_text_are_accepted(backends, name):
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                json.dumps({"url": "http://127.0.0.1:9", "name": name}).encode())
    assert status == 201 and answer["backend"]["name"] == name
    status, head, body = await raw(port, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
    assert status == 200 and name.encode() in body.replace(b'\\"', b'"')


@pytest.mark.parametrize("path", [b"/pools/%ff/backends/x", b"/pools/%ED%A0%80/backends/x",
                                  b"/pools/api/backends/%00", b"/pools/api/backends/%e2%80%ae",
                                  b"/pools/api/backends/%0d%0aX-Injected:%201",
                                  b"/pools/api/backends/%ED%A0%80/drain"])
async def test_names_in_the_path_are_looked_up_never_trusted(backends, caplog, path):
    proxy, port = await admin_proxy(backends)
    method = b"POST" if path.endswith(b"/drain") else b"GET"
    with caplog.at_level(logging.DEBUG):
        status, head, body = await raw(port, method + b" " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                       b"Content-Length: 0\r\n")
    assert status == 404 and b"X-Injected" not in head
    assert "no pool named" in json.loads(body)["error"] or "no backend" in json.loads(body)["error"]
    assert not no_traceback(caplog)


# ---- bodies --------------------------------------------------------------------------------------

@pytest.mark.parametrize("path, body", [
    ("/pools/api/backends/a/weight", b'{"weight": 5, "weight": 500}'),
    ("/pools/api/backends", b'{"url": "http://127.0.0.1:1", "url": "http://127.0.0.1:2"}'),
    ("/pools/api/backends", b'{"url": "http://127.0.0.1:1", "name": "x", "name": "y"}'),
])
async def test_a_key_given_twice_is_refused_not_read_last_wins(backends, path, body):
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", path, JSON, body)
    assert status == 400 and "given twice" in answer["error"]
    assert state(proxy) == ("enabled", 1.0)
    assert set(proxy.runtime.pools["api"].pool.by_name) == {"a", "b"}


async def test_a_surrogate_anywhere_in_a_body_is_refused(backends):
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                b'{"url": "http://127.0.0.1:1\\udfff"}')
    assert status == 400 and "surrogate" in answer["error"]


# ---- URLs -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, reason", [
    ("http://0.0.0.0:80", "any address to listen on"),
    ("http://[::]:80", "any address to listen on"),
    ("http://224.0.0.1:80", "multicast or broadcast"),
    ("http://255.255.255.255:80", "multicast or broadcast"),
    ("http://[ff02::1]:80", "multicast or broadcast"),
    ("http://user:pw@127.0.0.1:1", "no path, query or user"),
    ("http://127.0.0.1:1/admin", "no path, query or user"),
    ("http://127.0.0.1:1?x=1", "no path, query or user"),
    ("http://127.0.0.1:1#x", "no path, query or user"),
    ("http://127.0.0.1:0", "no path, query or user"),
    ("ftp://127.0.0.1:1", "no path, query or user"),
])
async def test_urls_no_backend_can_have_are_refused(backends, url, reason):
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                json.dumps({"url": url}).encode())
    assert status == 400 and reason in answer["error"], answer
    assert set(proxy.runtime.pools["api"].pool.by_name) == {"a", "b"}


async def test_a_backend_at_lbctls_own_addresses_is_refused(backends):
    """Each request to it would come back in and go out to it again."""
    proxy, port = await admin_proxy(backends)
    listen = proxy.address[1]
    for url in (f"http://127.0.0.1:{listen}", f"http://localhost:{listen}",
                f"http://127.0.0.1:{port}"):
        status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                    json.dumps({"url": url, "name": "self"}).encode())
        assert status == 400 and "other than lbctl itself" in answer["error"], answer
    assert "self" not in proxy.runtime.pools["api"].pool.by_name


def test_a_config_with_a_backend_at_its_own_listening_address_is_invalid(tmp_path):
    from lbctl.config.loader import ConfigError, load_config
    path = tmp_path / "lb.toml"
    path.write_text('[listen]\naddress = "0.0.0.0:8080"\n[admin]\naddress = "127.0.0.1:9900"\n'
                    '[[routes]]\npool = "a"\n[pools.a]\n[[pools.a.backends]]\n'
                    'url = "http://127.0.0.1:8080"\n[[pools.a.backends]]\n'
                    'url = "http://localhost:9900"\n[[pools.a.backends]]\n'
                    'url = "http://127.0.0.2:8081"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = [str(p) for p in caught.value.problems]
    assert len(problems) == 2, problems
    assert "pools.a.backends[0].url: expected a backend other than lbctl itself" in problems[0]
    assert "listen.address (0.0.0.0:8080)" in problems[0]
    assert "admin.address (127.0.0.1:9900)" in problems[1]


async def test_a_backend_outside_loopback_is_accepted_as_in_the_config(backends):
    """Backends live on other hosts in production: the admin API takes what the config
    takes. (Nothing is sent to it here: the pool has no health checks, no request is made.)"""
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                b'{"url": "http://192.0.2.7:8080", "name": "elsewhere"}')
    assert status == 201 and answer["backend"]["url"] == "http://192.0.2.7:8080"


# ---- methods, routes, headers ----------------------------------------------------------------------

@pytest.mark.parametrize("method, path, status", [
    ("TRACE", "/stats", 405), ("DELETE", "/stats", 405), ("POST", "/metrics", 405),
    ("POST", "/", 405), ("PUT", "/pools/api/backends/a/drain", 405),
    ("PATCH", "/pools/api/backends", 405), ("GET", "/nope", 404),
    ("GET", "/pools/api/backends/a/../../../stats", 404), ("GET", "/..%2f..%2fetc%2fpasswd", 404),
])
async def test_every_refusal_is_json_and_nothing_is_sniffed(backends, method, path, status):
    proxy, port = await admin_proxy(backends)
    got, head, body = await raw(port, f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                      f"Content-Length: 0\r\n".encode())
    assert got == status, (head, body)
    assert "error" in json.loads(body)
    assert b"x-content-type-options: nosniff" in head.lower()
    if status == 405:
        assert b"\r\nallow: " in head.lower()


async def test_every_answer_says_nosniff(backends):
    proxy, port = await admin_proxy(backends)
    for path in ("/stats", "/metrics", "/", "/pools/api/backends/a", "/pools/nope/backends/a"):
        _, head, _ = await raw(port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())
        assert b"x-content-type-options: nosniff" in head.lower(), path


@pytest.mark.parametrize("host", ["127.0.0.1:80@evil.example", "localhost:x@evil.example",
                                  "[::1]x.evil.example", "127.0.0.1:", "localhost:99999999"])
async def test_host_values_that_are_not_name_and_port_are_not_local(backends, host):
    proxy, port = await admin_proxy(backends)
    assert host_name(host) == host.lower()
    status, answer = await send(port, "GET", "/stats", host=host)
    assert status == 403 and "Host" in answer["error"]


async def test_fetch_metadata_naming_another_site_anywhere_is_refused(backends):
    proxy, port = await admin_proxy(backends)
    status, _ = await send(port, "POST", "/pools/api/backends/a/disable",
                           {"Sec-Fetch-Site": "same-origin, cross-site", **JSON})
    assert status == 403 and state(proxy) == ("enabled", 1.0)


# ---- membership edges that held -----------------------------------------------------------------

async def test_removing_the_last_backend_leaves_a_pool_that_answers_503(backends, caplog):
    proxy, port = await admin_proxy(backends)
    with caplog.at_level(logging.DEBUG):
        for name in ("a", "b"):
            status, answer = await send(port, "DELETE", f"/pools/api/backends/{name}")
            assert status == 200 and answer["backend"]["state"] == "removed"
        assert proxy.runtime.pools["api"].pool.by_name == {}
        data = await raw_exchange(proxy.address[1], b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                    b"Connection: close\r\n\r\n")
        assert data.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in data
        status, doc = await send(port, "GET", "/stats")
        assert status == 200 and doc["pools"][0]["backends"] == []
        assert (await send(port, "GET", "/metrics"))[0] == 200
        status, answer = await send(port, "DELETE", "/pools/api/backends/a")
        assert status == 404
    assert not no_traceback(caplog)


async def test_a_taken_name_is_409(backends):
    proxy, port = await admin_proxy(backends)
    status, answer = await send(port, "POST", "/pools/api/backends", JSON,
                                b'{"url": "http://127.0.0.1:9", "name": "a"}')
    assert status == 409 and "already has a backend named 'a'" in answer["error"]
    status, _ = await send(port, "POST", "/pools/api/backends", JSON,
                           b'{"url": "http://127.0.0.1:9", "name": "n1"}')
    assert status == 201
    status, _ = await send(port, "POST", "/pools/api/backends", JSON,
                           b'{"url": "http://127.0.0.1:10", "name": "n1"}')
    assert status == 409


async def test_many_hostile_requests_at_once_leave_it_serving(backends, caplog):
    """A burst of everything above, concurrently: every answer a 4xx, never a 500."""
    proxy, port = await admin_proxy(backends, token=TOKEN)
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
    requests = [b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer \xff\r\n",
                b"POST /pools/api/backends HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth +
                b"Content-Type: application/json\r\nContent-Length: 40\r\n",
                b"GET /pools/%ED%A0%80/backends/x HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth,
                b"TRACE /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth] * 25
    with caplog.at_level(logging.DEBUG):
        answers = await asyncio.gather(*(raw(port, r, b'{"url": "http://0.0.0.0:1"}'.ljust(40)
                                             if b"POST" in r else b"") for r in requests))
    assert {a[0] for a in answers} <= {400, 401, 404, 405}
    assert not no_traceback(caplog)
    status, _, _ = await raw(port, b"GET /stats HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth)
    assert status == 200
