"""Hypothesis mutates valid requests byte by byte, and request targets piece by piece; the
proxy's invariants must hold for all (see ``tests/fuzzing.py``).

CI runs a bounded budget; ``python fuzz/fuzz_proxy.py --examples N`` runs longer.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import ADMIN_KEY, SEEDS, ProxyUnderTest, check, open_fds

INTERESTING = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"0", b"9", b"f", b"-", b"+",
               b"chunked", b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n",
               b"\r\n\r\n", b"HTTP/1.0", b"%2e", b"/..", b"_", b"\x7f", b"\xff"]


@st.composite
def mutated_requests(draw):
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["replace", "insert", "delete"]))
        piece = draw(st.one_of(st.sampled_from(INTERESTING), st.binary(min_size=1, max_size=3)))
        if op == "replace" and pos < len(data):
            data[pos:pos + len(piece)] = piece
        elif op == "insert":
            data[pos:pos] = piece
        elif pos < len(data):
            del data[pos:pos + draw(st.integers(1, 4))]
    return bytes(data)


# Request targets: paths near /admin, mutated with what backends read differently from a
# proxy (escapes, path parameters, case, dot segments, fragments) and bytes the grammar
# forbids. A few carry the admin key, so the /admin route's own path is exercised too.
TARGET_BASES = [b"/admin", b"/admin/users", b"/public/x", b"/", b"/a/b?q=1"]
TARGET_PIECES = [b"#", b";", b";x=1", b"..;", b".;", b"%2F", b"%2f", b"%5C", b"%5c", b"%2e",
                 b"%2E%2E", b"..", b".", b"//", b"/", b"\\", b"%3B", b"%41", b"%61", b"A",
                 b"D", b"?", b"%", b"%00", b"%25", b"%23", b"[", b"]", b'"', b"|", b"{", b"^",
                 b"`", b"<", b"~", b"%7E", b":", b"@", b"admin", b"ADMIN", b"/admin", b"\x80",
                 b"\x7f"]


@st.composite
def mutated_targets(draw):
    target = bytearray(draw(st.sampled_from(TARGET_BASES)))
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(target)))
        piece = draw(st.sampled_from(TARGET_PIECES))
        op = draw(st.sampled_from(["insert", "replace", "upper"]))
        if op == "upper":
            target[pos:] = bytes(target[pos:]).upper()
        elif op == "replace" and pos < len(target):
            target[pos:pos + len(piece)] = piece
        else:
            target[pos:pos] = piece
    if draw(st.booleans()):
        target[0:0] = b"http://t"                      # absolute-form, same authority as Host
    key = b"X-API-Key: " + ADMIN_KEY + b"\r\n" if draw(st.integers(0, 3)) == 0 else b""
    return b"GET " + bytes(target) + b" HTTP/1.1\r\nHost: t\r\n" + key + b"\r\n"


@pytest.fixture(scope="module")
def proxy_under_test():
    put = ProxyUnderTest()
    yield put
    put.close()


@pytest.mark.parametrize("seed", SEEDS)
def test_every_seed_is_answered_and_forwarded(proxy_under_test, seed):
    """Guards the fuzz test against passing vacuously: unmutated, each seed gets one 200
    per request and reaches the backend once per request."""
    put = proxy_under_test
    put.settle()
    before = len(put.upstream.heads)
    raw = put.send(seed)
    put.settle()
    requests = seed.count(b" HTTP/1.")
    assert raw.count(b"HTTP/1.1 200 OK") == requests, raw
    assert len(put.upstream.heads) - before == requests


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated_requests())
def test_mutated_requests_keep_the_invariants(proxy_under_test, data):
    check(proxy_under_test, data)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=mutated_targets())
def test_mutated_targets_never_reach_admin_past_its_route(proxy_under_test, data):
    check(proxy_under_test, data)


@pytest.mark.parametrize("target, forwarded", [
    (b"/admin", True), (b"/public/x", True), (b"/admin#", False), (b"/ADMIN", False),
    (b"/admin;x", False), (b"/admin%2Fx", False), (b"/public/..;/admin", False)])
def test_target_checks_are_not_vacuous(proxy_under_test, target, forwarded):
    """With the key, /admin passes its route; the bypasses of the report never reach the
    backend; so the target fuzz test above asserts something that could fail."""
    put = proxy_under_test
    put.settle()
    before = len(put.upstream.heads)
    key = b"X-API-Key: " + ADMIN_KEY + b"\r\n" if target == b"/admin" else b""
    raw = put.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + key + b"\r\n")
    put.settle()
    assert (len(put.upstream.heads) - before == 1) is forwarded, raw
    assert raw.startswith(b"HTTP/1.1 200" if forwarded else b"HTTP/1.1 400"), raw


def test_no_connection_or_descriptor_is_left_after_fuzzing(proxy_under_test):
    baseline = open_fds()
    for seed in SEEDS:
        check(proxy_under_test, seed + b"garbage\r\n\r\n")
    deadline = time.monotonic() + 5
    while (proxy_under_test.connections() or open_fds() > baseline) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy_under_test.connections() == 0
    assert open_fds() <= baseline
    # and the proxy still serves a clean request
    assert proxy_under_test.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n") \
        .startswith(b"HTTP/1.1 200 ")
