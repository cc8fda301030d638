"""API keys through the proxy: who gets in, what the backend sees, 401 versus 403."""

from __future__ import annotations

import aiohttp
import pytest

from lbctl.config.keys import digest_of
from lbctl.gateway.api_key import KeyRing
from tests.gateway_support import load, pool, sha256_hex
from tests.support import raw_exchange, split_responses

KEY_A = "a-very-long-random-key-for-team-a-0123456789"
KEY_B = "another-random-key-for-team-b-9876543210"


def api_config(tmp_path, url: str, route_extra: str = "", env=None):
    return load(tmp_path, f'''
[keys.team-a]
hash = "{sha256_hex(KEY_A)}"

[keys.team-b]
env = "TEAM_B_KEY"

[[routes]]
path_prefix = "/admin"
pool = "api"
auth = {{ type = "api_key", header = "X-API-Key" }}
allow = {{ consumers = ["team-a"] }}

[[routes]]
path_prefix = "/read"
pool = "api"
auth = {{ type = "api_key" }}
allow = {{ methods = ["GET", "HEAD"] }}

[[routes]]
pool = "api"
auth = {{ type = "api_key", header = "X-API-Key" }}
{route_extra}
''' + pool(url), env=env if env is not None else {"TEAM_B_KEY": KEY_B})


async def status_of(port: int, path: str = "/", headers=None, method: str = "GET"):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}{path}", headers=headers) as r:
            return r.status, dict(r.headers), await r.text()


@pytest.fixture
async def proxy_port(backends, tmp_path):
    a = await backends.start("a")
    proxy = await backends.proxy(api_config(tmp_path, a.url))
    return proxy.address[1], a


async def test_valid_key_passes_and_the_backend_sees_the_consumer_not_the_key(proxy_port):
    port, a = proxy_port
    status, _, body = await status_of(port, "/x", {"X-API-Key": KEY_A, "X-Consumer": "root"})
    assert (status, body) == (200, "a")
    seen = a.seen[-1].headers
    assert "X-API-Key" not in seen
    assert seen["X-Consumer"] == "team-a"            # the client's own X-Consumer was dropped
    assert [v for k, v in a.seen[-1].raw_headers if k.lower() == b"x-consumer"] == [b"team-a"]


async def test_key_from_the_environment(proxy_port):
    port, a = proxy_port
    status, _, _ = await status_of(port, "/x", {"X-API-Key": KEY_B})
    assert status == 200 and a.seen[-1].headers["X-Consumer"] == "team-b"


@pytest.mark.parametrize("value", [
    "wrong-key",
    "",
    KEY_A[:-1],                 # a prefix of a valid key
    KEY_A + "x",                # a valid key with more after it
    KEY_A.upper(),
    " " + KEY_A + "-",
])
async def test_invalid_keys_are_401_and_never_reach_the_backend(proxy_port, value):
    port, a = proxy_port
    status, headers, body = await status_of(port, "/x", {"X-API-Key": value})
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("ApiKey")
    assert a.seen == []


async def test_missing_key_is_401(proxy_port):
    port, a = proxy_port
    status, headers, body = await status_of(port, "/x")
    assert status == 401 and "missing" in body and "WWW-Authenticate" in headers
    assert a.seen == []


async def test_duplicated_key_header_is_401_even_when_one_copy_is_valid(proxy_port):
    port, a = proxy_port
    for first, second in ((KEY_A, "wrong"), ("wrong", KEY_A), (KEY_A, KEY_A)):
        raw = await raw_exchange(port, (f"GET /x HTTP/1.1\r\nHost: t\r\nX-API-Key: {first}\r\n"
                                        f"x-api-key: {second}\r\nConnection: close\r\n\r\n").encode())
        (status, _, body), = split_responses(raw)
        assert status == 401, (first, second)
    assert a.seen == []


async def test_authenticated_but_not_allowed_is_403_not_401(proxy_port):
    port, a = proxy_port
    assert (await status_of(port, "/admin", {"X-API-Key": KEY_B}))[0] == 403
    assert (await status_of(port, "/admin", {"X-API-Key": "nope"}))[0] == 401
    assert (await status_of(port, "/admin", {"X-API-Key": KEY_A}))[0] == 200
    assert [s.path for s in a.seen] == ["/admin"]


async def test_methods_allow_list(proxy_port):
    port, a = proxy_port
    assert (await status_of(port, "/read", {"X-API-Key": KEY_B}))[0] == 200
    status, _, body = await status_of(port, "/read", {"X-API-Key": KEY_B}, method="DELETE")
    assert status == 403 and "method" in body
    # Authentication comes first: an unknown caller learns nothing about the allow-list.
    assert (await status_of(port, "/read", {"X-API-Key": "x"}, method="DELETE"))[0] == 401


def test_keyring_identifies_by_digest_and_checks_every_key():
    ring = KeyRing([("a", digest_of("k1")), ("b", digest_of("k2")), ("c", digest_of("k2"))])
    assert ring.identify(b"k1") == "a"
    assert ring.identify(b"k2") == "b"              # first configured name, all compared
    assert ring.identify(b"k") is None and ring.identify(b"") is None
