"""Discovery sources against a real DNS server on loopback (dnslib), and discovery files."""

from __future__ import annotations

import json
import os

import pytest

from lbctl.config.model import Address, Discovery
from lbctl.discovery.entries import EntryError, backend_from_entry
from lbctl.discovery.file import FileSource, parse
from lbctl.discovery.resolution import EMPTY, FAILED, FOUND, MIN_TTL, next_delay
from lbctl.discovery.sources import make_source

from tests.dns_support import DnsServer


@pytest.fixture
def zone():
    with DnsServer() as z:
        yield z


def dns(zone, name="api.test", port=8080, **kw):
    return make_source(Discovery(dns=Address(name, port), resolver=Address("127.0.0.1", zone.port),
                                 timeout=kw.pop("timeout", 1.0), **kw))


def srv(zone, name="_http._tcp.api.test", **kw):
    return make_source(Discovery(srv=name, resolver=Address("127.0.0.1", zone.port),
                                 timeout=1.0, **kw))


# ---- A/AAAA ---------------------------------------------------------------------------------

async def test_every_address_is_a_backend_on_the_port(zone):
    zone.set_a("api.test", ["127.0.0.3", "127.0.0.2"], ttl=30)
    zone.set_aaaa("api.test", ["::1"], ttl=20)
    r = await dns(zone, scheme="https").resolve()
    assert r.kind == FOUND and r.ttl == 20
    # Sorted by address, whatever order the nameserver rotated them into.
    assert [(b.name, b.url, b.source, b.server_name) for b in r.backends] == [
        ("127.0.0.2:8080", "https://127.0.0.2:8080", "dns", "api.test"),
        ("127.0.0.3:8080", "https://127.0.0.3:8080", "dns", "api.test"),
        ("[::1]:8080", "https://[::1]:8080", "dns", "api.test"),
    ]
    assert all(b.weight == 1.0 and not b.backup for b in r.backends)


async def test_nxdomain_and_no_records_are_authoritative_empties(zone):
    r = await dns(zone).resolve()
    assert (r.kind, r.reason) == (EMPTY, "NXDOMAIN")
    zone.set_aaaa("api.test", [])           # the name exists, with no addresses
    r = await dns(zone).resolve()
    assert (r.kind, r.reason) == (EMPTY, "no A or AAAA records")


async def test_servfail_and_silence_are_failures(zone):
    zone.set_a("api.test", ["127.0.0.2"])
    zone.servfail = True
    r = await dns(zone).resolve()
    assert (r.kind, r.reason) == (FAILED, "SERVFAIL")
    zone.servfail = False
    zone.silent = True
    r = await dns(zone, timeout=0.3).resolve()
    assert (r.kind, r.reason) == (FAILED, "timeout after 0.3s")
    assert zone.count("api.test", "A") >= 2


async def test_names_are_absolute_no_search_domain(zone):
    zone.set_a("api.test", ["127.0.0.2"])
    await dns(zone).resolve()
    assert set(k[0] for k in zone.queries) == {"api.test"}


# ---- SRV ------------------------------------------------------------------------------------

async def test_srv_gives_ports_weights_and_backups(zone):
    zone.set_srv("_http._tcp.api.test", [(10, 5, 9001, "a.test"), (10, 65535, 9003, "c.test"),
                                         (20, 0, 9002, "b.test")], ttl=60)
    zone.set_a("a.test", ["127.0.0.1"], ttl=30)
    zone.set_a("b.test", ["127.0.0.3"])
    zone.set_a("c.test", ["127.0.0.4", "127.0.0.5"])
    r = await srv(zone).resolve()
    assert r.kind == FOUND and r.ttl == 30
    assert [(b.name, b.url, b.weight, b.backup, b.server_name) for b in r.backends] == [
        ("a.test:9001", "http://127.0.0.1:9001", 5.0, False, "a.test"),
        # A target with two addresses: one backend each, told apart by the address.
        ("c.test:9003@127.0.0.4", "http://127.0.0.4:9003", 1000.0, False, "c.test"),
        ("c.test:9003@127.0.0.5", "http://127.0.0.5:9003", 1000.0, False, "c.test"),
        # Priority 20 > 10: a backup. Weight 0 ("rarely") is the lowest weight there is.
        ("b.test:9002", "http://127.0.0.3:9002", 0.01, True, "b.test"),
    ]
    assert all(b.source == "srv" for b in r.backends)


async def test_srv_targets_are_looked_up_when_not_in_the_additional_section(zone):
    zone.additional = False
    zone.set_srv("_http._tcp.api.test", [(1, 1, 9001, "a.test")])
    zone.set_aaaa("a.test", ["::1"])
    r = await srv(zone).resolve()
    assert [b.url for b in r.backends] == ["http://[::1]:9001"]
    assert zone.count("a.test", "AAAA") == 1


async def test_srv_target_that_does_not_exist_is_left_out(zone):
    zone.set_srv("_http._tcp.api.test", [(1, 1, 9001, "a.test"), (1, 1, 9002, "gone.test")])
    zone.set_a("a.test", ["127.0.0.1"])
    r = await srv(zone).resolve()
    assert [b.name for b in r.backends] == ["a.test:9001"]


async def test_srv_target_that_fails_fails_the_lookup(zone):
    zone.additional = False
    zone.set_srv("_http._tcp.api.test", [(1, 1, 9001, "a.test")])
    zone.set_a("a.test", ["127.0.0.1"])
    original = zone.resolve

    def servfail_for_targets(request, handler):
        reply = original(request, handler)
        if str(request.q.qname).startswith("a.test"):
            reply.header.rcode = 2
            reply.rr = []
        return reply

    zone.resolve = servfail_for_targets
    r = await srv(zone).resolve()
    assert (r.kind, r.reason) == (FAILED, "target a.test: SERVFAIL")


async def test_srv_empty_cases(zone):
    r = await srv(zone).resolve()
    assert (r.kind, r.reason) == (EMPTY, "NXDOMAIN")
    zone.set_srv("_http._tcp.api.test", [(0, 0, 0, "")])       # target ".": no service here
    r = await srv(zone).resolve()
    assert r.kind == EMPTY and "not available" in r.reason


# ---- when to look again ---------------------------------------------------------------------

@pytest.mark.parametrize("interval, ttl, expected", [
    (10.0, 300.0, 10.0),        # the interval caps a long TTL
    (10.0, 3.0, 3.0),           # a short TTL brings the next lookup forward
    (10.0, 0.0, MIN_TTL),       # ...but never into a busy loop
    (0.2, 0.0, 0.2),            # an interval below MIN_TTL is the user's choice
    (10.0, None, 10.0),         # no TTL (a failure, a file): the interval
])
def test_next_delay_is_min_of_ttl_and_interval(interval, ttl, expected):
    assert next_delay(interval, ttl) == expected


# ---- files ----------------------------------------------------------------------------------

def test_file_entries_with_defaults():
    r = parse(json.dumps([{"url": "http://127.0.0.1:9001"},
                          {"url": "https://[::1]:9443", "name": "v6", "weight": 2.5}]).encode())
    assert r.kind == FOUND
    assert [(b.name, b.scheme, b.host, b.port, b.weight, b.source) for b in r.backends] == [
        ("127.0.0.1:9001", "http", "127.0.0.1", 9001, 1.0, "file"),
        ("v6", "https", "::1", 9443, 2.5, "file")]


def test_an_empty_list_is_an_authoritative_empty_but_an_empty_file_is_not():
    assert parse(b"[]").kind == EMPTY
    r = parse(b"")
    assert r.kind == FAILED and "empty" in r.reason


@pytest.mark.parametrize("document, reason", [
    (b'[{"url": "http://127.0.0.1:1"},', "line 1, column 32: invalid JSON: Expecting value"),
    (b'{"url": "http://127.0.0.1:1"}', 'expected a JSON array of {"url": ..., "name": ..., '
                                       '"weight": ...}'),
    (b'["http://127.0.0.1:1"]', '[0]: expected an object like {"url": "http://10.0.0.1:8080"}, '
                                'found "http://127.0.0.1:1"'),
    (b'[{"name": "a"}]', '[0].url: missing; expected a URL like "http://10.0.0.1:8080"'),
    (b'[{"url": "http://127.0.0.1:1", "wieght": 2}]', "[0].wieght: unknown key; expected url, "
                                                      "name, weight"),
    (b'[{"url": "http://127.0.0.1:1", "weight": 0}]', "[0].weight: expected a number from 0.01 "
                                                      "to 1000, found 0"),
    (b'[{"url": "http://127.0.0.1:1", "weight": 1001}]', "[0].weight: expected a number from "
                                                         "0.01 to 1000, found 1001"),
    (b'[{"url": "http://127.0.0.1:1", "weight": true}]', "[0].weight: expected a number from "
                                                         "0.01 to 1000, found true"),
    (b'[{"url": "http://127.0.0.1:1", "name": "a b"}]', '[0].name: expected a non-empty name '
                                                        'without "/", spaces or control '
                                                        'characters, found "a b"'),
    (b'[{"url": "127.0.0.1:1"}]', '[0].url: expected a URL'),
    (b'[{"url": "http://127.0.0.1:1/path"}]', '[0].url: expected a URL'),
    (b'[{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:1"}]',
     '[1]: expected a name unique in the file, found "127.0.0.1:1", already used by [0]'),
    (b"\xff[]", "not UTF-8 text"),
])
def test_a_broken_file_names_the_problem(document, reason):
    r = parse(document)
    assert r.kind == FAILED
    assert r.reason.startswith(reason)


def test_entry_errors_carry_their_path():
    with pytest.raises(EntryError) as info:
        backend_from_entry({"url": 5}, "admin")
    assert str(info.value).startswith("url: expected a URL")


async def test_file_source_reads_only_when_the_file_changed(tmp_path):
    path = tmp_path / "backends.json"
    source = FileSource(Discovery(file=str(path), interval=5.0))
    assert source.next_delay(parse(b"[]")) == 1.0          # polled every second at most
    assert source.changed()
    r = await source.resolve()
    assert (r.kind, r.reason) == (FAILED, "cannot read the file: it does not exist")
    assert not source.changed()                             # still missing: nothing to read
    tmp = tmp_path / "backends.json.tmp"
    tmp.write_text(json.dumps([{"url": "http://127.0.0.1:9001", "name": "a"}]))
    os.replace(tmp, path)
    assert source.changed()
    r = await source.resolve()
    assert [b.name for b in r.backends] == ["a"]
    assert not source.changed()
    tmp.write_text(json.dumps([{"url": "http://127.0.0.1:9002", "name": "a"}]))
    os.replace(tmp, path)                                   # same size, new inode
    assert source.changed()
    assert (await source.resolve()).backends[0].port == 9002
