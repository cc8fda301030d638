"""``lbctl simulate`` with serve's workers: each balances with its own pool, the master's
verdicts reach all of them, and what load-aware algorithms lose is measured, not guessed."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from lbctl.cli import main
from lbctl.config.loader import ConfigError
from lbctl.config.model import Health, Outlier
from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import (BackendSpec, Event, Scenario, Service, Workload,
                                     default_scenario, parse_scenario, proxy_settings)


def test_workers_is_a_proxy_key_checked_like_the_rest(tmp_path):
    sc = parse_scenario({"proxy": {"workers": 4, "retries": 0},
                         "backends": [{"count": 2}]}, "s.toml", base_dir=str(tmp_path))
    assert sc.workers == 4 and sc.proxy.retries == 0
    assert parse_scenario({"backends": [{"count": 2}]}, "s.toml",
                          base_dir=str(tmp_path)).workers == 1
    with pytest.raises(ConfigError) as bad:
        parse_scenario({"proxy": {"workers": 0}, "backends": [{"count": 2}]}, "s.toml",
                       base_dir=str(tmp_path))
    assert "proxy.workers: expected an integer from 1 to 256, found 0" in str(bad.value)


def test_one_worker_is_the_single_process_run_exactly():
    sc = replace(default_scenario(), workload=Workload(requests=5000))
    for algorithm in ("least_conn", "p2c", "round_robin"):
        one = summarize(run_algorithm(sc, algorithm))
        assert one == summarize(run_algorithm(replace(sc, workers=1), algorithm))


def test_every_request_is_counted_once_across_the_workers():
    sc = replace(default_scenario(), workload=Workload(requests=5000), workers=4)
    result = summarize(run_algorithm(sc, "least_conn"))
    assert result.requests == 5000
    assert sum(b.requests for b in result.backends) == 5000 + result.retries
    # The same seed, the same bytes.
    assert result == summarize(run_algorithm(sc, "least_conn"))


def test_load_aware_algorithms_lose_with_each_worker_seeing_its_own_share():
    # The built-in lesson (one backend 3x slower, 80% load): each worker's least_conn sees
    # only its own in-flight requests, so with more workers it steers around the slow
    # backend less well. round_robin reads no load: workers change nothing for it, beyond
    # the rotation each one keeps.
    sc = replace(default_scenario(), workload=Workload(requests=20_000))
    mean = {w: summarize(run_algorithm(replace(sc, workers=w), "least_conn")).latency["mean"]
            for w in (1, 4, 16)}
    assert mean[1] < mean[4] < mean[16], mean
    rr = {w: summarize(run_algorithm(replace(sc, workers=w), "round_robin")).latency["mean"]
          for w in (1, 16)}
    assert rr[16] == pytest.approx(rr[1], rel=0.25), rr


CONSTANT = Service("constant", mean=0.010)


def test_the_masters_ejection_counts_every_workers_failures(sends):
    # b2 fails fast from t = 5 s; 3 failures in a row eject it. With 4 workers each worker
    # sends it about a quarter of its attempts, but the master counts them all: the ejection
    # comes at the third failed attempt overall, as with one process.
    outlier = Outlier(consecutive_failures=3, ejection_time=10.0, max_ejection_time=35.0,
                      max_ejection_percent=50.0)
    sc = Scenario(backends=tuple(BackendSpec(f"b{i}", CONSTANT) for i in range(1, 5)),
                  workload=Workload("uniform", rate=100.0, requests=2000), seed=3,
                  timeline=(Event(5.0, "error", ("b2",), fraction=1.0, latency=0.001),),
                  proxy=proxy_settings(retries=0, outlier=outlier), workers=4)
    rec = run_algorithm(sc, "round_robin")
    at, index, until = rec.ejections[0]
    assert rec.backends[index].name == "b2"
    failed = [t for t, name in sends if name == "b2" and t >= 5.0]
    assert at == pytest.approx(failed[2] + 0.001)
    # No worker sends it anything while it is out.
    assert not [t for t in failed if at < t < until]


def test_health_verdicts_reach_every_worker():
    health = Health(interval=0.5, timeout=0.2, fall=1, rise=1)
    sc = Scenario(backends=tuple(BackendSpec(f"b{i}", CONSTANT) for i in range(1, 4)),
                  workload=Workload("uniform", rate=100.0, requests=1000), seed=5,
                  timeline=(Event(2.0, "down", ("b1",)),),
                  proxy=proxy_settings(retries=0, health=health), workers=3)
    rec = run_algorithm(sc, "round_robin")
    down = min(t for t, i, healthy in rec.flips if not healthy)
    # After the verdict, no request goes to b1, whichever worker it reaches.
    later = [i for t, i in zip(rec.arrival, rec.backend) if t > down + 0.011]
    assert later and 0 not in later


def test_the_cli_models_workers_and_says_so():
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", "--workers", "4", "--requests", "3000",
                                  "--algorithms", "least_conn,round_robin"])
    assert result.exit_code == 0, result.output
    assert "4 workers, each balancing on its own" in " ".join(result.output.split())
    as_json = runner.invoke(main, ["simulate", "--workers", "4", "--requests", "3000",
                                   "--algorithms", "least_conn", "--json"])
    assert json.loads(as_json.output)["requests"] == 3000
    bad = runner.invoke(main, ["simulate", "--workers", "0"])
    assert bad.exit_code == 2 and "--workers" in bad.output
