"""consistent_hash keys as the proxy reads them: an empty value is no key.

Before, ``Cookie: sid=`` and an empty ``X-User:`` were keys like any other, so every such
request (a logged-out user, a client that sends the header blank) went to one backend.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support import backend_config, config, raw_exchange, split_responses


async def hashed_proxy(backends, hash_key: str):
    a, b = await backends.start("a"), await backends.start("b")
    cfg = config({"api": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                 algorithm="consistent_hash", hash_key=hash_key)
    return (await backends.proxy(cfg)).address[1]


async def served_by(port: int, header: bytes, n: int = 8) -> Counter:
    request = b"GET / HTTP/1.1\r\nHost: t\r\n" + header + b"\r\n\r\n"
    raw = await raw_exchange(port, request * (n - 1) + request.replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    return Counter(headers["x-backend"] for _, headers, _ in split_responses(raw))


@pytest.mark.parametrize("hash_key, empty, present", [
    ("cookie:sid", b"Cookie: sid=", b"Cookie: sid=user-1"),
    ("cookie:sid", b'Cookie: theme=dark; sid=""', b"Cookie: theme=dark; sid=user-1"),
    ("header:X-User", b"X-User:", b"X-User: user-1"),
    ("header:X-User", b"X-User:   ", b"X-User: user-1"),
])
async def test_an_empty_key_is_spread_like_a_missing_one(backends, hash_key, empty, present):
    port = await hashed_proxy(backends, hash_key)
    assert await served_by(port, empty) == {"a": 4, "b": 4}     # round-robin fallback
    assert len(await served_by(port, present)) == 1             # a real key sticks
