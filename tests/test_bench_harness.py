"""The proxy benchmark's pure parts: reading wrk and nginx's counters, and the ratios it reports.

The benchmark itself (``bench/proxy.py``) starts real proxies and is no test; these check that
what it prints is computed from what the tools said.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from proxybench import load, report  # noqa: E402

WRK_OUT = """\
Running 6s test @ http://127.0.0.1:40000/small
  1 threads and 64 connections
  Latency Distribution
     50%    1.21ms
     75%    1.50ms
     90%    2.00ms
     99%    6.30ms
  120000 requests in 6.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 0
  Non-2xx or 3xx responses: 3
Requests/sec:  20000.00
Transfer/sec:      3.33MB
bench-latency-us p50=1207 p99=6312 p999=41020 max=52000
"""


def test_wrk_exact_percentiles_come_from_the_lua_hook():
    r = load.parse_wrk(WRK_OUT)
    assert r["rps"] == 20000.0 and r["requests"] == 120000
    assert (r["p50_ms"], r["p99_ms"], r["p999_ms"]) == (1.207, 6.312, 41.02)
    assert r["socket_errors"] == 3 and r["non_2xx"] == 3


def test_wrk_without_the_hook_falls_back_to_its_rounded_table():
    r = load.parse_wrk(WRK_OUT.replace("bench-latency-us", "other"))
    assert (r["p50_ms"], r["p99_ms"], r["p999_ms"]) == (1.21, 6.3, None)


def test_counter_readings_leave_out_their_own_connections():
    text = "Active connections: 3\nserver accepts handled requests\n 70 70 5000\nReading: 0\n"
    assert load.parse_stub_status(text) == (70, 5000)
    # Two backends read twice: each later reading is one connection and one request per
    # backend; 10 connections and 1000 requests between them are the proxy's.
    assert load.counters_delta((100, 9000), (112, 10002), [1, 2]) == (10, 1000)


def _run(target, workload, rnd, rps, us, p99):
    return {"round": rnd, "workload": workload, "target": target, "rps": rps, "p50_ms": 1.0,
            "p99_ms": p99, "p999_ms": 2 * p99, "requests": int(rps * 6), "socket_errors": 0,
            "non_2xx": 0, "proxy_cpu": 0.9, "user_us": us * 0.6, "sys_us": us * 0.4,
            "us_per_req": us, "conns_per_req": 0.0, "conns_per_req_run": 0.0,
            "upstream_reqs_per_req": 1.0, "other_cpu": 0.0}


def test_ratios_to_nginx_and_envoy_and_the_worst_round():
    runs = []
    for rnd, lbctl_p99 in ((1, 3.0), (2, 6.0), (3, 3.0)):
        runs += [_run("nginx", "small", rnd, 40000, 20.0, 2.0),
                 _run("envoy", "small", rnd, 20000, 40.0, 2.5),
                 _run("lbctl", "small", rnd, 30000, 30.0, lbctl_p99)]
    summary = report.summarize(runs, ["nginx", "envoy", "lbctl"])
    s = summary["small"]["lbctl"]
    assert s["rps_x_nginx"] == pytest.approx(0.75)
    assert s["rps_x_envoy"] == pytest.approx(1.5)
    assert s["us_x_envoy"] == pytest.approx(0.75)
    assert s["p99_x_nginx"] == pytest.approx(1.5)               # the median round
    assert s["p99_x_nginx_worst_round"] == pytest.approx(3.0)   # round 2
    doc = {"summary": summary, "order": ["nginx", "envoy", "lbctl"],
           "kinds": {"nginx": "nginx", "envoy": "envoy", "lbctl": "lbctl"},
           "rss_kib": {"lbctl": {"peak_kib": 30 * 1024, "total_kib": 30 * 1024,
                                 "processes": 1}},
           "idle": {}, "params": {"rounds": 3, "duration": 6, "threads": 1, "connections": 64,
                                  "workers": 1, "pinning": "proxy on CPU 0"}}
    checks = {c["what"]: c["ok"] for c in report.checks(doc)}
    assert checks["small req/s vs nginx"] is True
    assert checks["small req/s vs Envoy"] is True
    assert checks["small p99 vs nginx, worst round"] is False
    assert checks["peak RSS MiB per process"] is True
    md = report.render_markdown(doc)
    assert "| req/s | nginx | Envoy | lbctl | lbctl / nginx | lbctl / Envoy |" in md
    assert "| small, keep-alive | 40,000 | 20,000 | 30,000 | 0.75 | 1.50 |" in md


FOLDED = """\
main (x.py:1);uv__io_poll (linux.c:1);uv__read (stream.c:2);read (libc.so.6) 30
main (x.py:1);uv__io_poll (linux.c:1);UpstreamConnection.data_received (/src/lbctl/proxy/upstream.py:9);Exchange.flush_writes (/src/lbctl/proxy/exchange.py:3);writev (libc.so.6) 20
main (x.py:1);task_step (_asynciomodule.c:1);_attempt (/src/lbctl/proxy/forward.py:5);write (libc.so.6) 10
main (x.py:1);task_step (_asynciomodule.c:1);_attempt (/src/lbctl/proxy/forward.py:5);upstream_request_head (/src/lbctl/proxy/framing.py:2);connection_tokens (/src/lbctl/proxy/framing.py:7) 15
main (x.py:1);task_step (_asynciomodule.c:1);_attempt (/src/lbctl/proxy/forward.py:5) 5
main (x.py:1);uv__io_poll (linux.c:1);epoll_pwait (libc.so.6) 20
"""


def test_profile_stages_are_decided_by_the_deepest_frame_that_names_one(tmp_path):
    from proxybench import profile
    path = tmp_path / "stacks.txt"
    path.write_text(FOLDED)
    doc = profile.breakdown(path)
    assert doc["samples"] == 100
    stages = doc["stages"]
    # A shared helper (connection_tokens) is charged to its caller; the request flow's own
    # write is the upstream write; a bare read is uvloop's, before any protocol sees it.
    assert stages["upstream write"] == pytest.approx(0.25)
    assert stages["response relay"] == pytest.approx(0.20)
    assert stages["request flow (task, futures, timers)"] == pytest.approx(0.05)
    assert stages["socket reads (uvloop, both sides)"] == pytest.approx(0.30)
    assert stages["event loop (uvloop, asyncio)"] == pytest.approx(0.20)
    assert doc["syscalls"] == pytest.approx({"read": 0.3, "writev": 0.2, "write": 0.1,
                                             "epoll_pwait": 0.2})
    text = profile.render_breakdown(doc, 100.0)
    assert "25.0 us  upstream write" in text


def test_paired_ratios_compare_two_trees_round_by_round():
    runs = [{"workload": "small", "target": t, "round": r, "us_per_req": us}
            for t, r, us in (("lbctl", 1, 40.0), ("base", 1, 50.0),
                             ("lbctl", 2, 60.0), ("base", 2, 60.0))]
    [pair] = report.paired(runs, {"lbctl": "lbctl", "base": "lbctl", "nginx": "nginx"})
    assert pair["other"] == "base" and pair["rounds"] == [0.8, 1.0]
    assert pair["us_ratio"] == pytest.approx(0.9)
