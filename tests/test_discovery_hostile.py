"""Discovery against hostile sources: a nameserver (dnslib, on loopback) answering what no
zone should, and a watched file that is huge, binary, a FIFO, swapped, deleted or half
written.

The nameserver here hands out addresses outside loopback too (0.0.0.0, 192.0.2.x from
TEST-NET-1, multicast): what lbctl does with them is read from the resolution and from
``/stats`` of a real ``lbctl serve`` whose pool has no health checks and gets no request, so
nothing is ever sent to them. What broke before: ``0.0.0.0`` (to connect: this machine) and
multicast addresses became backends; SRV records with port 0, or with targets whose names
hold "/", "<" or quotes (names for admin paths and pages) became backends; a thousand SRV
targets were a thousand queries fired at once; a FIFO as the discovery file stopped the
event loop (every request with it); deeply nested JSON was a traceback in the event log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import socket
import threading
import urllib.request

import pytest
from dnslib import AAAA, CNAME, QTYPE, RCODE, RR, SRV, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from lbctl.config.model import Address, Discovery
from lbctl.discovery.file import FileSource, parse
from lbctl.discovery.resolution import EMPTY, FAILED, FOUND, MAX_BACKENDS, MIN_TTL, next_delay
from lbctl.discovery.sources import make_source
from lbctl.discovery.watch import Watcher


class Hostile(BaseResolver):
    """Answers from ``answer(name, rtype, reply)``, set by the test; counts queries in
    flight (``peak``), holding each for ``hold`` seconds."""

    def __init__(self) -> None:
        self.answer = lambda name, rtype, reply: None
        self.lock = threading.Lock()
        self.inflight = self.peak = self.queries = 0
        self.hold = 0.0

    def resolve(self, request, handler):
        with self.lock:
            self.inflight += 1
            self.queries += 1
            self.peak = max(self.peak, self.inflight)
        try:
            if self.hold:
                threading.Event().wait(self.hold)
            reply = request.reply()
            self.answer(str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype], reply)
            return reply
        finally:
            with self.lock:
                self.inflight -= 1


@pytest.fixture
def ns():
    """A hostile nameserver on 127.0.0.1, over UDP and TCP on one port."""
    resolver = Hostile()
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    while True:
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet)
        port = udp.server.server_address[1]
        try:
            tcp = DNSServer(resolver, address="127.0.0.1", port=port, tcp=True, logger=quiet)
            break
        except OSError:                     # the TCP port is taken: another pair
            udp.server.server_close()
    udp.start_thread()
    tcp.start_thread()
    resolver.port = port
    yield resolver
    udp.stop()
    tcp.stop()


def dns(ns, name="api.test", **kw):
    return make_source(Discovery(dns=Address(name, 8080), resolver=Address("127.0.0.1", ns.port),
                                 timeout=kw.pop("timeout", 2.0), **kw))


def srv(ns, **kw):
    return make_source(Discovery(srv="_http._tcp.api.test",
                                 resolver=Address("127.0.0.1", ns.port),
                                 timeout=kw.pop("timeout", 2.0), **kw))


def a_records(addresses, ttl=60):
    def answer(name, rtype, reply):
        if rtype == "A":
            for address in addresses:
                reply.add_answer(RR(name + ".", QTYPE.A, rdata=A(address), ttl=ttl))
    return answer


# ---- A/AAAA ----------------------------------------------------------------------------------

async def test_four_thousand_addresses_are_four_thousand_backends(ns):
    ns.answer = a_records([f"127.0.{i >> 8}.{i & 255}" for i in range(4000)])
    r = await dns(ns).resolve()
    assert r.kind == FOUND and len(r.backends) == 4000
    assert r.backends[0].name == "127.0.0.0:8080" and r.backends[-1].name == "127.0.15.159:8080"


@pytest.mark.parametrize("ttl, delay", [(2**31 - 1, 10.0), (0, MIN_TTL), (3, 3.0)])
async def test_ttls_are_bounded_by_the_interval_and_floored(ns, ttl, delay):
    ns.answer = a_records(["127.0.0.2"], ttl=ttl)
    source = dns(ns, interval=10.0)
    r = await source.resolve()
    assert r.ttl == ttl and source.next_delay(r) == delay == next_delay(10.0, r.ttl)


async def test_addresses_no_backend_can_have_are_left_out(ns):
    ns.answer = a_records(["192.0.2.10", "0.0.0.0", "255.255.255.255", "224.0.0.1",
                           "127.0.0.2"])
    r = await dns(ns).resolve()
    assert r.kind == FOUND
    assert [b.name for b in r.backends] == ["127.0.0.2:8080", "192.0.2.10:8080"]


async def test_an_answer_of_only_unusable_addresses_is_a_failure_not_an_empty_pool(ns):
    """0.0.0.0 is what a filtering resolver answers for a name it blocks: not the truth
    about the service, so the last good set stays."""
    ns.answer = a_records(["0.0.0.0"])
    r = await dns(ns).resolve()
    assert r.kind == FAILED and "0.0.0.0 means any address" in r.reason

    def v6(name, rtype, reply):
        if rtype == "AAAA":
            reply.add_answer(RR(name + ".", QTYPE.AAAA, rdata=AAAA("::"), ttl=60))
            reply.add_answer(RR(name + ".", QTYPE.AAAA, rdata=AAAA("ff02::1"), ttl=60))
    ns.answer = v6
    r = await dns(ns).resolve()
    assert r.kind == FAILED and "no address a backend can have" in r.reason


async def test_ipv4_mapped_addresses_are_judged_as_the_address_they_map(ns):
    """To a dual-stack socket ::ffff:0.0.0.0 is 0.0.0.0: this machine, not a backend."""
    def mapped(name, rtype, reply):
        if rtype == "AAAA":
            for address in ("::ffff:0.0.0.0", "::ffff:224.0.0.1", "::ffff:127.0.0.3"):
                reply.add_answer(RR(name + ".", QTYPE.AAAA,
                                    rdata=AAAA(ipaddress.ip_address(address).exploded), ttl=60))
    ns.answer = mapped
    r = await dns(ns).resolve()
    assert [ipaddress.ip_address(b.host) for b in r.backends] == [
        ipaddress.ip_address("::ffff:127.0.0.3")]


async def test_cname_loops_fail_and_dangling_cnames_are_empty(ns):
    def loop(name, rtype, reply):
        reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME("loop2.test."), ttl=60))
        reply.add_answer(RR("loop2.test.", QTYPE.CNAME, rdata=CNAME(name + "."), ttl=60))
    ns.answer = loop
    r = await dns(ns).resolve()
    assert r.kind == FAILED and "CNAME" in r.reason

    def dangling(name, rtype, reply):
        reply.add_answer(RR(name + ".", QTYPE.CNAME, rdata=CNAME("elsewhere.test."), ttl=60))
    ns.answer = dangling
    r = await dns(ns).resolve()
    assert r.kind == EMPTY


async def test_records_for_another_name_or_type_are_not_taken(ns):
    def other(name, rtype, reply):
        reply.add_answer(RR("other.test.", QTYPE.A, rdata=A("127.0.0.9"), ttl=60))
        if rtype == "A":
            reply.add_answer(RR(name + ".", QTYPE.AAAA, rdata=AAAA("::1"), ttl=60))
    ns.answer = other
    r = await dns(ns).resolve()
    assert r.kind == EMPTY


async def test_a_truncated_answer_without_tcp_is_a_failure():
    resolver = Hostile()

    def truncated(name, rtype, reply):
        reply.header.tc = 1
    resolver.answer = truncated
    quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False)
    while True:                             # a UDP port whose TCP twin has nothing on it
        udp = DNSServer(resolver, address="127.0.0.1", port=0, logger=quiet)
        resolver.port = udp.server.server_address[1]
        probe = socket.socket()
        try:
            probe.connect(("127.0.0.1", resolver.port))
        except ConnectionRefusedError:
            break
        finally:
            probe.close()
        udp.server.server_close()
    udp.start_thread()
    try:
        r = await dns(resolver).resolve()
    finally:
        udp.stop()
    assert r.kind == FAILED and "Truncated" in r.reason


# ---- SRV ---------------------------------------------------------------------------------------

def srv_records(records, addresses=("127.0.0.5",)):
    def answer(name, rtype, reply):
        if rtype == "SRV":
            for priority, weight, port, target in records:
                reply.add_answer(RR(name + ".", QTYPE.SRV,
                                    rdata=SRV(priority, weight, port, target), ttl=60))
        elif rtype == "A" and not name.startswith("gone"):
            for address in addresses:
                reply.add_answer(RR(name + ".", QTYPE.A, rdata=A(address), ttl=60))
        elif name.startswith("gone"):
            reply.header.rcode = RCODE.NXDOMAIN
    return answer


async def test_port_zero_is_left_out_and_weight_zero_is_the_lightest(ns):
    ns.answer = srv_records([(0, 0, 0, "t1.test."), (0, 0, 8080, "t2.test."),
                             (0, 65535, 8081, "t3.test.")])
    r = await srv(ns).resolve()
    assert [(b.name, b.port, b.weight) for b in r.backends] == [
        ("t2.test:8080", 8080, 0.01), ("t3.test:8081", 8081, 1000.0)]


async def test_a_target_that_does_not_exist_is_left_out(ns):
    ns.answer = srv_records([(0, 5, 8080, "gone.test."), (0, 5, 8081, "here.test.")])
    r = await srv(ns).resolve()
    assert [b.name for b in r.backends] == ["here.test:8081"]
    ns.answer = srv_records([(0, 5, 8080, "gone.test.")])
    r = await srv(ns).resolve()
    assert r.kind == EMPTY and r.reason == "no SRV target has an address"


@pytest.mark.parametrize("target", ["a/b.test.", "<script>.test.", 'q"uote.test.',
                                    "sp\\032ace.test.", "back\\\\slash.test."])
async def test_targets_that_are_not_host_names_never_name_a_backend(ns, target):
    ns.answer = srv_records([(0, 1, 8080, target), (0, 1, 8081, "ok.test.")])
    r = await srv(ns).resolve()
    assert [b.name for b in r.backends] == ["ok.test:8081"]
    ns.answer = srv_records([(0, 1, 8080, target)])
    r = await srv(ns).resolve()
    assert r.kind == FAILED and "usable target" in r.reason


async def test_a_target_with_unusable_addresses_only_brings_no_backend(ns):
    ns.answer = srv_records([(0, 1, 8080, "t.test.")], addresses=("0.0.0.0",))
    r = await srv(ns).resolve()
    assert r.kind == EMPTY


async def test_a_thousand_targets_are_asked_a_few_at_a_time(ns):
    """Each target needs its own A and AAAA lookup (no additional section): at most 32
    targets' questions are in flight together, so at most 64 queries."""
    ns.answer = srv_records([(i % 3, i, 1000 + i, f"t{i}.test.") for i in range(1000)])
    ns.hold = 0.002
    r = await asyncio.wait_for(srv(ns, timeout=5.0).resolve(), 60)
    assert r.kind == FOUND and len(r.backends) == 1000
    assert ns.queries == 1 + 2 * 1000
    assert ns.peak <= 2 * 32, ns.peak
    assert {b.backup for b in r.backends} == {False, True}


# ---- files ---------------------------------------------------------------------------------------

def file_source(path, interval=10.0) -> FileSource:
    return FileSource(Discovery(file=str(path), interval=interval))


async def test_a_fifo_is_refused_without_stopping_the_event_loop(tmp_path):
    fifo = tmp_path / "backends.json"
    os.mkfifo(fifo)
    ticks = 0

    async def ticker():
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)
    task = asyncio.get_running_loop().create_task(ticker())
    await asyncio.sleep(0.01)
    before = ticks
    r = await asyncio.wait_for(file_source(fifo).resolve(), 5)
    await asyncio.sleep(0.01)
    task.cancel()
    assert r.kind == FAILED and r.reason == "cannot read the file: it is a FIFO, not a regular file"
    assert ticks > before


@pytest.mark.parametrize("target, reason", [
    ("/dev/zero", "it is a character device, not a file"),
    ("/dev/null", "it is a character device, not a file"),
])
async def test_a_symlink_to_a_device_is_refused(tmp_path, target, reason):
    link = tmp_path / "backends.json"
    link.symlink_to(target)
    r = await file_source(link).resolve()
    assert r.kind == FAILED and r.reason == f"cannot read the file: {reason}"


@pytest.mark.parametrize("content, reason", [
    (b"[" * 100_000 + b"]" * 100_000, "invalid JSON: nested too deeply"),
    (b"[" + b"9" * 5000 + b"]", "invalid JSON"),
    (bytes(range(256)) * 10, "not UTF-8 text"),
    (b'[{"url": "http://127.0.0.1:1", "name": "\\ud800"}]', r'found "\ud800"'),
    (b'[{"url": "http://127.0.0.1:1", "name": "a\\u009b31m"}]', r'found "a\u009b31m"'),
    (b'[{"url": "http://0.0.0.0:1"}]', "[0].url: expected a URL"),
    (b'[{"url": "http://127.0.0.1:1"}, {"url": "http://127.0.0.1:2", "name": "127.0.0.1:1"}]',
     "expected a name unique in the file"),
    (b'[{"url": "http://127.0.0.1:1"', "invalid JSON"),          # half written
    (b'[{"url": "http://[::ffff:0.0.0.0]:1"}]', "[0].url: expected a URL"),
    (b'[{"url": "http://127.0.0.1:1", "\\u001b[2J\\u202e": 1}]',
     r'[0]."\u001b[2J\u202e": unknown key'),
    (b'[{"url": "http://127.0.0.1:1", "url": "http://127.0.0.1:2"}]',
     'the key "url" is given twice in one object'),
    (b"", "the file is empty"),
])
async def test_broken_files_fail_with_the_reason_and_no_traceback(tmp_path, caplog, content,
                                                                  reason):
    path = tmp_path / "backends.json"
    path.write_bytes(content)
    changes = []
    w = Watcher("api", Discovery(file=str(path)), lambda p, b: changes.append(b))
    with caplog.at_level(logging.DEBUG):
        r = await w.resolve_once()
    assert r.kind == FAILED and reason in r.reason, r.reason
    assert r.reason.isprintable()
    assert not [x for x in caplog.records if x.exc_info or x.levelno >= logging.ERROR]
    assert changes == []


def test_a_byte_order_mark_is_not_an_error():
    r = parse(b'\xef\xbb\xbf[{"url": "http://127.0.0.1:1"}]')
    assert r.kind == FOUND and [b.name for b in r.backends] == ["127.0.0.1:1"]


async def test_a_huge_file_is_refused(tmp_path):
    path = tmp_path / "backends.json"
    with open(path, "wb") as f:
        f.truncate(16 * 1024 * 1024 + 1)
    r = await file_source(path).resolve()
    assert r.kind == FAILED and "larger than 16 MiB" in r.reason


def test_more_backends_than_a_pool_takes_from_discovery_is_a_failure():
    entries = [{"url": f"http://127.0.0.{1 + i // 60000}:{1 + i % 60000}"}
               for i in range(MAX_BACKENDS + 1)]
    r = parse(json.dumps(entries).encode())
    assert r.kind == FAILED and "more than the 10,000" in r.reason
    assert parse(json.dumps(entries[:MAX_BACKENDS]).encode()).kind == FOUND


async def test_a_file_deleted_swapped_and_half_written_keeps_the_last_good_set(tmp_path, caplog):
    path = tmp_path / "backends.json"
    path.write_text('[{"url": "http://127.0.0.1:9001", "name": "one"}]')
    changes = []
    w = Watcher("api", Discovery(file=str(path), interval=0.5),
                lambda pool, backends: changes.append([b.name for b in backends]))
    source = w.source
    with caplog.at_level(logging.DEBUG):
        await w.resolve_once()
        assert changes == [["one"]]
        path.unlink()                                       # deleted
        assert source.changed()
        r = await w.resolve_once()
        assert r.kind == FAILED and "does not exist" in r.reason
        other = tmp_path / "other.json"                      # a symlink swapped in
        other.write_text('[{"url": "http://127.0.0.1:9002", "name": "two"}]')
        path.symlink_to(other)
        assert source.changed()
        await w.resolve_once()
        assert changes[-1] == ["two"]
        other.write_text('[{"url": "http://127.0.0.1:9003", "na')    # edited in place, half
        assert source.changed()
        r = await w.resolve_once()
        assert r.kind == FAILED and changes[-1] == ["two"]
        other.write_text('[{"url": "http://127.0.0.1:9003", "name": "three"}]')
        await w.resolve_once()
        assert changes[-1] == ["three"]
    assert w.status.failures == 2
    assert not [x for x in caplog.records if x.exc_info or x.levelno >= logging.ERROR]


# ---- a real serve: what /stats shows of a hostile answer, with nothing sent to it ------------

async def test_serve_shows_what_it_took_from_a_hostile_answer_and_sends_nothing(ns, tmp_path,
                                                                                  serve_process,
                                                                                  free_port):
    ns.answer = a_records(["192.0.2.10", "192.0.2.11", "0.0.0.0", "224.0.0.1"])
    listen, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    path.write_text(f'[listen]\naddress = "127.0.0.1:{listen}"\n[admin]\n'
                    f'address = "127.0.0.1:{admin}"\n[[routes]]\npool = "api"\n'
                    f'[pools.api]\n[pools.api.discovery]\ndns = "api.test:8080"\n'
                    f'resolver = "127.0.0.1:{ns.port}"\ninterval = "1h"\n')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")

    def stats():
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats?history=0", timeout=5) as r:
            return json.loads(r.read())
    doc = await asyncio.to_thread(stats)
    pool = doc["pools"][0]
    assert [(b["name"], b["source"], b["requests"]) for b in pool["backends"]] == [
        ("192.0.2.10:8080", "dns", 0), ("192.0.2.11:8080", "dns", 0)]
    assert pool["discovery"]["state"] == "ok" and pool["discovery"]["backends"] == 2
    assert not [line for line in proc.lines if "Traceback" in line]


async def test_serve_never_takes_its_own_addresses_from_a_source(tmp_path, serve_process,
                                                                 free_port, backends):
    """A file listing lbctl's own listener or admin API: each request sent there would come
    back in and be sent there again, until every connection is used. Those entries are
    left out (logged once each), the rest of the file is taken, and requests are served."""
    real = await backends.start("real")
    listen, admin = free_port(), free_port()
    listing = tmp_path / "backends.json"
    listing.write_text(json.dumps([{"url": f"http://127.0.0.1:{listen}", "name": "me"},
                                   {"url": f"http://localhost:{admin}", "name": "admin"},
                                   {"url": real.url, "name": "real"}]))
    path = tmp_path / "lb.toml"
    path.write_text(f'[listen]\naddress = "127.0.0.1:{listen}"\n[admin]\n'
                    f'address = "127.0.0.1:{admin}"\n[[routes]]\npool = "api"\n'
                    f'[pools.api]\n[pools.api.discovery]\nfile = "{listing}"\n')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    await proc.wait_for_log(r"discovered backend me is ignored: it is the proxy's listening "
                            r"address")
    await proc.wait_for_log(r"discovered backend admin is ignored: it is the admin API's")

    def get(url):
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.headers.get("X-Backend"), r.read()
    doc = json.loads((await asyncio.to_thread(
        get, f"http://127.0.0.1:{admin}/stats?history=0"))[2])
    assert [b["name"] for b in doc["pools"][0]["backends"]] == ["real"]
    for _ in range(3):
        status, backend, _ = await asyncio.to_thread(get, f"http://127.0.0.1:{listen}/")
        assert (status, backend) == (200, "real")
    assert len([line for line in proc.lines if "is ignored" in line]) == 2
    assert not [line for line in proc.lines if "Traceback" in line]
