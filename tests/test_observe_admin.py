"""The admin API against a real proxy with traffic: /stats, /metrics, operations, tokens."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import replace

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from lbctl.config.model import Address, Admin
from tests.support import backend_config, config

TOKEN = "s3cret-token"


def with_admin(cfg, token: str | None = TOKEN, metrics: bool = True):
    return replace(cfg, admin=Admin(Address("127.0.0.1", 0), token=token, metrics=metrics))


class Client:
    """Requests to the proxy and to its admin API."""

    def __init__(self, session: aiohttp.ClientSession, proxy) -> None:
        self.session = session
        self.proxy = proxy
        self.base = f"http://127.0.0.1:{proxy.address[1]}"
        self.admin = "http://127.0.0.1:%d" % proxy.admin.bound[1]
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    async def get(self, path: str = "/", **kw) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
        async with self.session.get(self.base + path, **kw) as resp:
            await resp.read()
            return resp.status, resp.headers.get("X-Backend", ""), resp.headers

    async def call(self, method: str, path: str, auth: bool = True, **kw):
        # POSTs say JSON, as lbctl's own client does (the API refuses other content types).
        json_type = {"Content-Type": "application/json"} if method == "POST" else {}
        headers = {**json_type, **(self.auth if auth else {}), **kw.pop("headers", {})}
        async with self.session.request(method, self.admin + path, headers=headers, **kw) as resp:
            body = await resp.text()
            return resp.status, body, resp.headers


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def two_backends(backends, session, **pool_options):
    a, b = await backends.start("a"), await backends.start("b")
    cfg = with_admin(config({"api": [backend_config(a.url, "a"), backend_config(b.url, "b")]},
                            **pool_options))
    proxy = await backends.proxy(cfg)
    return a, b, Client(session, proxy)


async def test_stats_counts_match_the_requests_sent(backends, session):
    a, b, client = await two_backends(backends, session)
    seen = Counter()
    for _ in range(10):
        status, name, _ = await client.get("/x")
        assert status == 200
        seen[name] += 1
    status, body, _ = await client.call("GET", "/stats")
    assert status == 200
    import json
    doc = json.loads(body)
    assert doc["version"] and doc["uptime"] >= 0 and doc["config"] == "<test>"
    assert doc["loaded_at"] > 0
    pool = doc["pools"][0]
    assert pool["name"] == "api" and pool["algorithm"] == "round_robin"
    by_name = {b["name"]: b for b in pool["backends"]}
    for name in ("a", "b"):
        backend = by_name[name]
        assert backend["state"] == "up"
        assert backend["requests"] == seen[name] == 5        # round robin: 5 each
        assert backend["responses"]["2xx"] == 5
        assert backend["bytes_out"] == 5 * len(name)          # body is the backend's name
        assert backend["latency"]["p50"] is not None
        assert sum(backend["history"]["requests"]) == 5
        assert backend["inflight"] == 0 and backend["weight"] == 1.0
    assert doc["frontend"]["requests"] == 10 and doc["frontend"]["responses"]["2xx"] == 10
    lean = json.loads((await client.call("GET", "/stats?history=0"))[1])
    assert "history" not in lean["pools"][0]["backends"][0]
    assert lean["pools"][0]["backends"][0]["requests"] == 5


async def test_metrics_parse_and_match_the_requests_sent(backends, session):
    async def fail(request, body):
        return web.Response(status=503, text="busy")
    a = await backends.start("a")
    bad = await backends.start("bad", fail)
    cfg = with_admin(config({"api": [backend_config(a.url, "a"), backend_config(bad.url, "bad")]},
                            retries=0))
    client = Client(session, await backends.proxy(cfg))
    for _ in range(8):
        await client.get("/")
    status, text, headers = await client.call("GET", "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    requests = {(s.labels["backend"], s.labels["class"]): s.value
                for s in families["lbctl_requests"].samples if s.name == "lbctl_requests_total"}
    assert requests[("a", "2xx")] == 4 and requests[("bad", "5xx")] == 4
    assert requests[("a", "5xx")] == 0 and requests[("bad", "error")] == 0
    hist = families["lbctl_request_duration_seconds"]
    counts = {s.labels["backend"]: s.value for s in hist.samples
              if s.name.endswith("_count")}
    assert counts == {"a": 4, "bad": 4}
    inf = [s for s in hist.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf"]
    assert sorted(s.value for s in inf) == [4, 4]
    up = {s.labels["backend"]: s.value for s in families["lbctl_backend_up"].samples}
    assert up == {"a": 1, "bad": 1}
    assert all(s.value == 0 for s in families["lbctl_backend_inflight"].samples)
    assert "lbctl_retries" in families
    front = {s.labels["class"]: s.value for s in families["lbctl_http_responses"].samples
             if s.name == "lbctl_http_responses_total"}
    assert front["2xx"] == 4 and front["5xx"] == 4


async def test_retries_and_connect_errors_are_counted(backends, session):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    a = await backends.start("a")
    cfg = with_admin(config({"api": [backend_config(f"http://127.0.0.1:{dead_port}", "dead"),
                                     backend_config(a.url, "a")]}, retries=1))
    client = Client(session, await backends.proxy(cfg))
    for _ in range(4):
        status, name, _ = await client.get("/")
        assert (status, name) == (200, "a")
    import json
    doc = json.loads((await client.call("GET", "/stats"))[1])
    by_name = {b["name"]: b for b in doc["pools"][0]["backends"]}
    # Round robin alternates the first try; each time "dead" came first, "a" was a retry.
    assert by_name["dead"]["connect_errors"] == by_name["dead"]["requests"] >= 1
    assert by_name["a"]["retries"] == by_name["dead"]["connect_errors"]
    assert doc["pools"][0]["retries"] == by_name["a"]["retries"]


async def test_token_is_required_when_set(backends, session):
    _, _, client = await two_backends(backends, session)
    for path in ("/stats", "/metrics"):
        status, body, headers = await client.call("GET", path, auth=False)
        assert status == 401 and "token" in body
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, _, _ = await client.call("GET", path, headers={"Authorization": "Bearer nope"},
                                         auth=False)
        assert status == 401
        status, _, _ = await client.call("GET", path)
        assert status == 200
    status, _, _ = await client.call("POST", "/pools/api/backends/a/disable", auth=False)
    assert status == 401
    assert client.proxy.runtime.pools["api"].pool.by_name["a"].admin.value == "enabled"


async def test_no_token_on_loopback_needs_no_header(backends, session):
    a = await backends.start("a")
    proxy = await backends.proxy(with_admin(config({"api": [backend_config(a.url, "a")]}),
                                            token=None))
    client = Client(session, proxy)
    assert (await client.call("GET", "/stats", auth=False))[0] == 200


async def test_post_endpoints_answer_get_with_405_and_unknown_names_with_404(backends, session):
    _, _, client = await two_backends(backends, session)
    for action in ("disable", "enable", "drain", "weight"):
        status, body, headers = await client.call("GET", f"/pools/api/backends/a/{action}")
        assert status == 405 and headers["Allow"] == "POST" and "POST" in body
    import json
    status, body, _ = await client.call("POST", "/pools/nope/backends/a/disable")
    assert status == 404 and "nope" in json.loads(body)["error"]
    status, body, _ = await client.call("POST", "/pools/api/backends/zz/drain")
    assert status == 404 and "zz" in json.loads(body)["error"]
    status, body, _ = await client.call("POST", "/pools/api/backends/a/weight", json={"w": 1})
    assert status == 400
    status, body, _ = await client.call("POST", "/pools/api/backends/a/weight",
                                        json={"weight": -1})
    assert status == 400


async def test_disable_drain_enable_and_weight_change_routing_at_the_backends(backends, session):
    a, b, client = await two_backends(backends, session, algorithm="weighted")
    status, body, _ = await client.call("POST", "/pools/api/backends/a/disable")
    assert status == 200 and '"disabled"' in body
    before = len(a.seen)
    for _ in range(6):
        assert (await client.get())[1] == "b"
    assert len(a.seen) == before

    await client.call("POST", "/pools/api/backends/a/enable")
    names = Counter([(await client.get())[1] for _ in range(6)])
    assert names == {"a": 3, "b": 3}

    status, body, _ = await client.call("POST", "/pools/api/backends/b/weight", json={"weight": 3})
    assert status == 200
    names = Counter([(await client.get())[1] for _ in range(8)])
    assert names == {"a": 2, "b": 6}                # smooth weighted round robin: exact 1:3


async def test_drain_lets_the_request_in_flight_finish_and_sends_no_new_ones(backends, session):
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(request, body):
        arrived.set()
        await release.wait()
        return web.Response(text="slow", headers={"X-Backend": "slow"})
    slow_b = await backends.start("slow", slow)
    fast = await backends.start("fast")
    cfg = with_admin(config({"api": [backend_config(slow_b.url, "slow"),
                                     backend_config(fast.url, "fast")]}))
    client = Client(session, await backends.proxy(cfg))
    pending = asyncio.ensure_future(client.get())       # round robin: slow first
    await arrived.wait()
    status, body, _ = await client.call("POST", "/pools/api/backends/slow/drain")
    assert status == 200 and '"draining"' in body and '"inflight": 1' in body
    for _ in range(4):
        assert (await client.get())[1] == "fast"
    release.set()
    status, name, _ = await pending
    assert (status, name) == (200, "slow")
    assert len(slow_b.seen) == 1


async def test_metrics_off_still_serves_stats_without_counters(backends, session):
    a = await backends.start("a")
    cfg = with_admin(config({"api": [backend_config(a.url, "a")]}), metrics=False)
    client = Client(session, await backends.proxy(cfg))
    assert client.proxy.observer.request_end is None   # nothing watches whole requests
    await client.get()
    import json
    doc = json.loads((await client.call("GET", "/stats"))[1])
    assert doc["metrics"] is False
    assert doc["pools"][0]["backends"][0]["responses"]["2xx"] == 0
    assert doc["pools"][0]["backends"][0]["requests"] == 1     # the pool's own count


async def test_explain_header_for_an_admin_token_holder_only(backends, session):
    a, b, client = await two_backends(backends, session, algorithm="p2c")
    status, _, headers = await client.get()
    assert "X-LB-Decision" not in headers
    status, _, headers = await client.get(headers={"X-LB-Explain": "1",
                                                   "X-LB-Admin-Token": "wrong"})
    assert "X-LB-Decision" not in headers
    status, name, headers = await client.get(headers={"X-LB-Explain": "1",
                                                      "X-LB-Admin-Token": TOKEN})
    decision = headers["X-LB-Decision"]
    assert decision.startswith("algorithm=p2c;") and f"chosen={name};" in decision
    assert "a(inflight=" in decision and "b(inflight=" in decision     # both draws shown
    assert "two random choices" in decision
    # Neither header reached a backend: the admin token is not the backend's business.
    for backend in (a, b):
        for seen in backend.seen:
            assert not any(k.lower().startswith("x-lb-") for k in seen.headers)


async def test_pool_explain_option_adds_the_header_to_every_response(backends, session):
    a, b, client = await two_backends(backends, session, algorithm="ewma", explain=True)
    for _ in range(3):
        status, name, headers = await client.get()
        assert headers["X-LB-Decision"].startswith("algorithm=ewma;")
        assert f"chosen={name}" in headers["X-LB-Decision"]


async def test_health_probes_show_in_metrics_and_stats(backends, session):
    from lbctl.config.model import Health
    a = await backends.start("a")
    cfg = with_admin(config({"api": [backend_config(a.url, "a")]},
                            health=Health(path="/healthz", interval=0.05, timeout=1.0)))
    proxy = await backends.proxy(cfg)
    probed = asyncio.Event()
    def on_probe(pool, backend, result, flipped):
        if proxy.health.of(backend).ok >= 2:
            probed.set()
    proxy.health.on_probe = on_probe
    await asyncio.wait_for(probed.wait(), 10)
    client = Client(session, proxy)
    families = {f.name: f for f in text_string_to_metric_families(
        (await client.call("GET", "/metrics"))[1])}
    ok = [s.value for s in families["lbctl_health_probes"].samples
          if s.name == "lbctl_health_probes_total" and s.labels["result"] == "ok"]
    assert ok and ok[0] >= 2
    import json
    backend = json.loads((await client.call("GET", "/stats"))[1])["pools"][0]["backends"][0]
    assert backend["last_probe"]["ok"] is True and backend["last_probe"]["time"] > 0
    assert backend["probes"]["ok"] >= 2


async def test_a_5xx_held_back_for_a_retry_counts_as_that_backends_5xx(backends, session):
    async def fail(request, body):
        return web.Response(status=503, text="busy")
    bad = await backends.start("bad", fail)
    good = await backends.start("good")
    cfg = with_admin(config({"api": [backend_config(bad.url, "bad"),
                                     backend_config(good.url, "good")]},
                            retries=1, retry_on=("connect", "reset", "5xx")))
    client = Client(session, await backends.proxy(cfg))
    status, name, _ = await client.get()              # round robin: "bad" first, then "good"
    assert (status, name) == (200, "good")
    import json
    doc = json.loads((await client.call("GET", "/stats"))[1])
    by_name = {b["name"]: b for b in doc["pools"][0]["backends"]}
    assert by_name["bad"]["responses"]["5xx"] == 1 and by_name["bad"]["errors"] == 1
    assert by_name["good"]["responses"]["2xx"] == 1 and by_name["good"]["retries"] == 1
    assert doc["frontend"]["responses"] == {"1xx": 0, "2xx": 1, "3xx": 0, "4xx": 0, "5xx": 0}
