"""The client address: believed from forwarding headers only when the peer is trusted."""

from __future__ import annotations

import aiohttp
import pytest

from lbctl.gateway.client_ip import ClientResolver, forwarded_for, parse_ip
from tests.gateway_support import load, pool

XFF = b"X-Forwarded-For"


def resolve(trusted, peer, headers, header="X-Forwarded-For"):
    return ClientResolver(trusted, header).resolve(peer, headers)


def test_no_trusted_proxies_means_the_peer_whatever_the_headers_say():
    assert resolve([], "192.0.2.9", [(XFF, b"1.2.3.4")]) == ("192.0.2.9", "192.0.2.9", False)


def test_untrusted_peer_headers_are_ignored():
    assert resolve(["10.0.0.0/8"], "192.0.2.9", [(XFF, b"1.2.3.4")])[0] == "192.0.2.9"


def test_trusted_peer_right_most_untrusted_address_wins():
    trusted = ["10.0.0.0/8"]
    # client-written junk, the real client, then two trusted hops
    headers = [(XFF, b"6.6.6.6, 198.51.100.7"), (b"x-forwarded-for", b"10.0.0.2")]
    client, sent, ok = resolve(trusted, "10.0.0.1", headers)
    assert (client, ok) == ("198.51.100.7", True)
    assert sent == "6.6.6.6, 198.51.100.7, 10.0.0.2, 10.0.0.1"


def test_all_trusted_gives_the_left_most_and_garbage_stops_the_walk():
    assert resolve(["10.0.0.0/8"], "10.0.0.1", [(XFF, b"10.0.0.9, 10.0.0.5")])[0] == "10.0.0.9"
    assert resolve(["10.0.0.0/8"], "10.0.0.1", [(XFF, b"1.2.3.4, nonsense, 10.0.0.5")])[0] == "10.0.0.5"
    assert resolve(["10.0.0.0/8"], "10.0.0.1", [])[0] == "10.0.0.1"


def test_forwarded_header_mode_reads_for_and_ignores_x_forwarded_for():
    headers = [(XFF, b"6.6.6.6"),
               (b"Forwarded", b'for=198.51.100.7;proto=https, for="[2001:db8::1]:4711"')]
    assert resolve(["2001:db8::/32"], "2001:db8::9", headers, "Forwarded")[0] == "198.51.100.7"
    assert resolve(["10.0.0.0/8"], "10.0.0.1", headers, "Forwarded")[0] == "2001:db8::1"


@pytest.mark.parametrize("text, ip", [
    ("1.2.3.4", "1.2.3.4"), ("1.2.3.4:80", "1.2.3.4"), ("[::1]:80", "::1"), ("::1", "::1"),
    ('"[2001:db8::1]"', "2001:db8::1"), ("::ffff:10.0.0.1", "10.0.0.1"), ("unknown", None),
    ("_hidden", None), ("", None),
])
def test_parse_chain_entries(text, ip):
    parsed = parse_ip(text)
    assert (str(parsed) if parsed else None) == ip


def test_forwarded_elements_without_for_count_as_unknown():
    assert forwarded_for([b"proto=https, for=1.2.3.4;by=x"]) == ["unknown", "1.2.3.4"]


async def get(port: int, headers=None):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/", headers=headers) as r:
            return r.status


async def test_allow_ips_use_the_resolved_address(backends, tmp_path):
    a = await backends.start("a")
    config = load(tmp_path, '''
[listen]
trusted_proxies = ["127.0.0.1"]

[[routes]]
pool = "api"
allow = { ips = ["198.51.100.0/24"] }
''' + pool(a.url))
    proxy = await backends.proxy(config)
    port = proxy.address[1]
    assert await get(port, {"X-Forwarded-For": "198.51.100.7"}) == 200
    assert await get(port, {"X-Forwarded-For": "203.0.113.1"}) == 403
    assert await get(port) == 403                     # the proxy itself, 127.0.0.1
    assert a.seen[0].headers["X-Forwarded-For"] == "198.51.100.7, 127.0.0.1"


async def test_allow_ips_cannot_be_spoofed_from_an_untrusted_peer(backends, tmp_path):
    a = await backends.start("a")
    config = load(tmp_path, '''
[[routes]]
pool = "api"
allow = { ips = ["198.51.100.0/24"] }
''' + pool(a.url))
    proxy = await backends.proxy(config)
    assert await get(proxy.address[1], {"X-Forwarded-For": "198.51.100.7"}) == 403
    assert await get(proxy.address[1], {"Forwarded": "for=198.51.100.7"}) == 403
    assert a.seen == []


async def test_consistent_hash_by_ip_uses_the_resolved_address(backends, tmp_path):
    a, b = await backends.start("a"), await backends.start("b")
    config = load(tmp_path, f'''
[listen]
trusted_proxies = ["127.0.0.0/8"]

[[routes]]
pool = "api"

[pools.api]
algorithm = "consistent_hash"
hash_key = "ip"

[[pools.api.backends]]
url = "{a.url}"
name = "a"

[[pools.api.backends]]
url = "{b.url}"
name = "b"
''')
    proxy = await backends.proxy(config)
    port = proxy.address[1]
    names = set()
    async with aiohttp.ClientSession() as session:
        for i in range(40):
            async with session.get(f"http://127.0.0.1:{port}/",
                                   headers={"X-Forwarded-For": f"198.51.100.{i}"}) as r:
                names.add(await r.text())
    assert names == {"a", "b"}     # many clients behind one proxy spread over both backends


async def test_forwarded_mode_through_the_proxy(backends, tmp_path):
    a = await backends.start("a")
    config = load(tmp_path, '''
[listen]
trusted_proxies = ["127.0.0.1"]
client_ip_header = "Forwarded"

[[routes]]
pool = "api"
allow = { ips = ["198.51.100.7"] }
''' + pool(a.url))
    proxy = await backends.proxy(config)
    port = proxy.address[1]
    # X-Forwarded-For is not the configured header: it cannot move the client address.
    assert await get(port, {"X-Forwarded-For": "198.51.100.7"}) == 403
    assert await get(port, {"Forwarded": 'for="198.51.100.7:5555";proto=https'}) == 200
    seen = a.seen[-1].headers
    assert seen["X-Forwarded-For"] == "198.51.100.7, 127.0.0.1"
    assert "Forwarded" not in seen
