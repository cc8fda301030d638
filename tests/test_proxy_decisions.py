"""X-LB-Decision on an explained request: on the proxy's own 502, 503 and 504 too, and after
a retry it lists every attempt, each earlier one with its outcome."""

from __future__ import annotations

import asyncio

from lbctl.config.model import Timeouts
from tests.support import backend_config, config, raw_exchange, split_responses

GET = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


async def answer(proxy) -> tuple[int, dict, bytes]:
    [(status, headers, body)] = split_responses(
        await asyncio.wait_for(raw_exchange(proxy.address[1], GET), 10))
    return status, headers, body


def attempts(decision: str) -> list[str]:
    return decision.split(" | ")


async def test_a_retry_lists_both_backends_tried_and_the_first_ones_outcome(backends, free_port):
    good = await backends.start("good")
    dead = backend_config(f"http://127.0.0.1:{free_port()}", "dead")
    proxy = await backends.proxy(config({"p": [dead, backend_config(good.url, "good")]},
                                        explain=True, retries=1))
    status, headers, body = await answer(proxy)        # round robin: "dead" first
    assert status == 200 and body == b"good"
    first, second = attempts(headers["x-lb-decision"])
    assert first.startswith("algorithm=round_robin;") and "chosen=dead;" in first
    assert first.endswith("; outcome=connect")
    assert "chosen=good;" in second
    assert "outcome=" not in second                    # its answer is the one relayed


async def test_the_proxys_502_carries_every_attempt(backends, free_port):
    dead = [backend_config(f"http://127.0.0.1:{free_port()}", f"dead{i}") for i in (1, 2)]
    proxy = await backends.proxy(config({"p": dead}, explain=True, retries=1))
    status, headers, _ = await answer(proxy)
    assert status == 502
    tried = attempts(headers["x-lb-decision"])
    assert len(tried) == 2
    assert {"chosen=dead1;" in t for t in tried} == {True, False}
    assert all(t.endswith("; outcome=connect") for t in tried)


async def test_the_proxys_503_says_no_candidate_was_eligible(backends):
    a = await backends.start("a")
    proxy = await backends.proxy(config({"p": [backend_config(a.url, "a")]}, explain=True))
    state = proxy.runtime.pools["p"]
    state.pool.set_healthy(state.pool.backends[0], False)
    status, headers, _ = await answer(proxy)
    assert status == 503 and headers["retry-after"] == "1"
    decision = headers["x-lb-decision"]
    assert "chosen=-;" in decision and "why=no eligible candidate left" in decision


async def test_the_proxys_504_names_the_backend_and_the_timeout(backends):
    async def hang(reader, writer):
        await reader.read(-1)
    port = await backends.start_raw(hang)
    proxy = await backends.proxy(config(
        {"p": [backend_config(f"http://127.0.0.1:{port}", "slow")]},
        timeouts=Timeouts(connect=1.0, response=0.2), retries=0, explain=True))
    status, headers, _ = await answer(proxy)
    assert status == 504
    [only] = attempts(headers["x-lb-decision"])
    assert "chosen=slow;" in only and only.endswith("; outcome=timeout")


async def test_unexplained_answers_carry_no_decision(backends, free_port):
    dead = backend_config(f"http://127.0.0.1:{free_port()}", "dead")
    proxy = await backends.proxy(config({"p": [dead]}, retries=0))
    status, headers, _ = await answer(proxy)
    assert status == 502 and "x-lb-decision" not in headers
