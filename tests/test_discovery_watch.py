"""Watchers against a real DNS server on loopback: the discovered set follows good answers,
survives failures (logged once, counted), empties on an authoritative empty answer, and is
looked up again at min(TTL, interval)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from lbctl.config.model import Address, Discovery
from lbctl.discovery.resolution import Resolution
from lbctl.discovery.watch import Watcher, Watchers

from tests.dns_support import DnsServer
from tests.support import config as make_config


@pytest.fixture
def zone():
    with DnsServer() as z:
        yield z


def watcher(zone, changes, interval=60.0, timeout=0.5, name="api.test"):
    d = Discovery(dns=Address(name, 8080), resolver=Address("127.0.0.1", zone.port),
                  interval=interval, timeout=timeout)
    return Watcher("api", d, lambda pool, backends: changes.append(
        (pool, [x.name for x in backends])))


async def test_answers_failures_and_empties(zone, caplog):
    caplog.set_level(logging.INFO, "lbctl.discovery")
    changes = []
    w = watcher(zone, changes, timeout=0.3)
    zone.set_a("api.test", ["127.0.0.2", "127.0.0.3"])
    await w.resolve_once()
    assert changes == [("api", ["127.0.0.2:8080", "127.0.0.3:8080"])]
    assert w.status.state == "ok" and w.status.backends == 2

    await w.resolve_once()                  # the same answer: no change reported
    assert len(changes) == 1

    zone.silent = True                      # the resolver stops answering
    for _ in range(3):
        await w.resolve_once()
    assert len(changes) == 1                # the last good set stays
    assert (w.status.state, w.status.failures, w.status.resolutions) == ("failing", 3, 5)
    assert w.status.last_error == "timeout after 0.3s"
    failed = [r.getMessage() for r in caplog.records if "lookup failed" in r.getMessage()]
    assert failed == ["pool api: dns api.test:8080: lookup failed (timeout after 0.3s); "
                      "keeping the last good set of 2 backends"]      # logged once

    zone.silent = False
    zone.set_a("api.test", ["127.0.0.3", "127.0.0.4"])
    await w.resolve_once()
    assert changes[-1] == ("api", ["127.0.0.3:8080", "127.0.0.4:8080"])
    messages = [r.getMessage() for r in caplog.records]
    assert "pool api: dns api.test:8080: answering again after 3 failed lookups" in messages
    assert "pool api: dns api.test:8080: 2 backends (+127.0.0.4:8080 -127.0.0.2:8080)" in messages

    zone.remove("api.test")                 # NXDOMAIN: authoritative, the set empties
    await w.resolve_once()
    assert changes[-1] == ("api", [])
    assert w.status.state == "empty"
    assert "pool api: dns api.test:8080: NXDOMAIN: the discovered part of the pool is empty; " \
           "2 backends leave the pool" in [r.getMessage() for r in caplog.records]


async def test_a_failure_before_any_answer_says_nothing_was_discovered(zone, caplog):
    zone.servfail = True
    w = watcher(zone, [])
    await w.resolve_once()
    assert w.status.state == "failing" and w.discovered == ()
    assert any(r.getMessage().endswith("lookup failed (SERVFAIL); no backends discovered yet")
               for r in caplog.records)


async def test_a_new_failure_reason_is_logged_again(zone, caplog):
    zone.set_a("api.test", ["127.0.0.2"])
    w = watcher(zone, [], timeout=0.3)
    await w.resolve_once()
    zone.servfail = True
    await w.resolve_once()
    await w.resolve_once()
    zone.servfail, zone.silent = False, True
    await w.resolve_once()
    reasons = [r.getMessage().split("(")[1].split(")")[0] for r in caplog.records
               if "lookup failed" in r.getMessage()]
    assert reasons == ["SERVFAIL", "timeout after 0.3s"]


async def test_a_source_that_raises_is_a_failed_lookup_not_a_dead_watcher(zone):
    w = watcher(zone, [])

    async def broken():
        raise RuntimeError("boom")
    w.source.resolve = broken
    r = await w.resolve_once()
    assert r == Resolution.failed("RuntimeError: boom")


async def test_a_short_ttl_brings_the_next_lookup_forward(zone):
    # interval 60s, TTL 1s: the second lookup comes after about a second, not a minute.
    zone.set_a("api.test", ["127.0.0.2"], ttl=1)
    changes = []
    w = watcher(zone, changes, interval=60.0)
    w.start()
    try:
        await w.wait(lambda w: w.status.resolutions >= 1, timeout=5)
        zone.set_a("api.test", ["127.0.0.5"], ttl=1)
        await w.wait(lambda w: w.status.resolutions >= 2, timeout=10)
        assert changes[-1] == ("api", ["127.0.0.5:8080"])
    finally:
        await w.stop()


async def test_watchers_start_resolved_and_follow_a_reload(zone):
    zone.set_a("api.test", ["127.0.0.2"])
    zone.set_a("web.test", ["127.0.0.3"])
    changes = []
    watchers = Watchers(lambda pool, backends: changes.append((pool, [b.name for b in backends])))
    ns = Address("127.0.0.1", zone.port)

    def cfg(api_name):
        base = make_config({"api": [], "web": []})
        pools = {name: p.__class__(**{**p.__dict__, "discovery": Discovery(
            dns=Address(f"{name if name == 'web' else api_name}.test", 80), resolver=ns,
            interval=60.0, timeout=0.5)}) for name, p in base.pools.items()}
        return base.__class__(**{**base.__dict__, "pools": base.freeze(pools)})

    await watchers.start(cfg("api"))
    try:
        # The first lookups are done when start() returns: the proxy can listen now.
        assert sorted(changes) == [("api", ["127.0.0.2:80"]), ("web", ["127.0.0.3:80"])]
        web = watchers.watchers["web"]
        zone.set_a("other.test", ["127.0.0.4"])
        assert watchers.reconfigure(cfg("other")) == []
        assert watchers.watchers["web"] is web          # unchanged: the same watcher
        api = watchers.watchers["api"]
        await api.wait(lambda w: w.status.resolutions >= 1, timeout=5)
        assert changes[-1] == ("api", ["127.0.0.4:80"])
        # Until the new source answers, the pool keeps what the old one had found.
        assert api.status.backends == 1
    finally:
        await watchers.stop()
    await asyncio.sleep(0)
    assert all(w.task is None for w in watchers.watchers.values())
