"""``retry_on``: what a pool's retries may be spent on, beyond the always-safe defaults."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp import web

from lbctl.config.model import Timeouts
from tests.support import backend_config, config


async def fetch(port: int, method: str = "GET"):
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"http://127.0.0.1:{port}/",
                                   data=b"x" if method == "POST" else None) as resp:
            return resp.status, await resp.text()


def answering(status: int, text: str):
    async def handler(request, body):
        return web.Response(status=status, text=text)
    return handler


async def pair(backends, first_handler, **options):
    """A proxy whose round robin tries ``bad`` first, then ``good``."""
    bad = await backends.start("bad", first_handler)
    good = await backends.start("good", answering(200, "good"))
    proxy = await backends.proxy(config({"p": [backend_config(bad.url, "bad"),
                                               backend_config(good.url, "good")]}, **options))
    return proxy.address[1], bad, good


async def test_by_default_a_5xx_is_relayed_not_retried(backends):
    port, bad, good = await pair(backends, answering(503, "busy"))
    assert await fetch(port) == (503, "busy")
    assert len(good.seen) == 0


async def test_retry_on_5xx_tries_another_backend_for_idempotent_requests(backends):
    port, bad, good = await pair(backends, answering(503, "busy"),
                                 retry_on=("connect", "reset", "5xx"))
    assert await fetch(port) == (200, "good")
    assert [s.method for s in bad.seen] == ["GET"]
    # the rotation went bad -> good, so the POST goes to "bad"; not idempotent: its 503 is
    # relayed and the POST is never sent to a second backend
    assert await fetch(port, "POST") == (503, "busy")
    assert [s.method for s in good.seen] == ["GET"]


async def test_the_last_attempt_relays_its_5xx(backends):
    bad = await backends.start("bad", answering(502, "first"))
    worse = await backends.start("worse", answering(500, "second"))
    proxy = await backends.proxy(config({"p": [backend_config(bad.url, "bad"),
                                               backend_config(worse.url, "worse")]},
                                        retry_on=("5xx",), retries=3))
    assert await fetch(proxy.address[1]) == (500, "second")


async def test_retry_on_timeout_is_opt_in(backends):
    release = asyncio.Event()

    async def hang(request, body):
        await release.wait()
        return web.Response(text="late")
    port, bad, good = await pair(backends, hang, timeouts=Timeouts(connect=1, response=0.3))
    assert (await fetch(port))[0] == 504                     # default: no retry after a timeout
    release.set()

    release2 = asyncio.Event()

    async def hang2(request, body):
        await release2.wait()
        return web.Response(text="late")
    port, bad, good = await pair(backends, hang2, timeouts=Timeouts(connect=1, response=0.3),
                                 retry_on=("connect", "reset", "timeout"))
    assert await fetch(port) == (200, "good")
    assert (await fetch(port))[0] == 200                     # rotation moved on to "bad" next
    release2.set()


def test_retry_on_is_validated_with_its_key_path(tmp_path):
    from lbctl.config.loader import ConfigError, load_config
    (tmp_path / "lb.toml").write_text('[[routes]]\npool = "p"\n[pools.p]\nretry_on = ["5XX"]\n'
                                      '[[pools.p.backends]]\nurl = "http://127.0.0.1:9001"\n')
    try:
        load_config(tmp_path / "lb.toml")
    except ConfigError as exc:
        assert "pools.p.retry_on" in str(exc) and "'5xx'" in str(exc)
    else:
        raise AssertionError("invalid retry_on accepted")


def test_the_proxys_own_resource_failures_are_never_retried_and_answer_503():
    """Out of descriptors here would be out of descriptors for any backend: a 503 (with
    Retry-After, see tests/test_hardening_fds.py), whatever retry_on names."""
    from lbctl.balancing import Outcome
    from lbctl.balancing.attempts import AttemptPolicy
    policy = AttemptPolicy(3, ("connect", "reset", "timeout", "5xx"))
    assert not policy.may_retry(Outcome.LOCAL, 1, replayable=True)
    assert not policy.may_retry(Outcome.TRUNCATED, 1, replayable=True)
    assert policy.client_status(Outcome.LOCAL) == 503
