"""Passive ejection in the simulator: serve's own OutlierDetector, told each attempt's outcome.

Constant service and uniform arrivals make round_robin's schedule exact, so ejection times
can be asserted to the tick of the virtual clock rather than within a tolerance.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from lbctl.cli import main
from lbctl.config.model import Outlier
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.verdict import verdict
from lbctl.simulate.results import summarize, to_json
from lbctl.simulate.scenario import (BackendSpec, Event, proxy_settings, Scenario, Service, Workload,
                                     load_scenario, parse_scenario)

CONSTANT = Service("constant", mean=0.010)
OUTLIER = Outlier(consecutive_failures=3, ejection_time=10.0, max_ejection_time=35.0,
                  max_ejection_percent=50.0)


def pool(n=4, *, requests=4000, timeline=(), outlier=OUTLIER, retries=0, timeout=math.inf,
         client=math.inf):
    """n backends, 100 requests/s evenly spaced: round_robin sends each one every n/100 s."""
    backends = tuple(BackendSpec(f"b{i}", CONSTANT) for i in range(1, n + 1))
    return Scenario(backends=backends,
                    workload=Workload("uniform", rate=100.0, requests=requests),
                    timeline=tuple(timeline), client_timeout=client, seed=3,
                    proxy=proxy_settings(retries=retries, timeout=timeout, outlier=outlier))



def test_a_fast_failing_backend_is_ejected_after_n_failures_and_its_share_drops(sends):
    sc = pool(timeline=[Event(5.0, "error", ("b2",), fraction=1.0, latency=0.001)])
    rec = run_algorithm(sc, "round_robin")
    at, index, until = rec.ejections[0]
    assert rec.backends[index].name == "b2" and until == pytest.approx(at + 10.0)
    # Ejected by the third failed attempt, which ends 1 ms after it was sent.
    failed = [t for t, name in sends if name == "b2" and t >= 5.0]
    assert at == pytest.approx(failed[2] + 0.001)
    assert not [t for t in failed if at < t < until]         # nothing sent while out
    # Only b2 is ever ejected; the same run without ejection sends it a quarter of the load.
    assert {i for _, i, _ in rec.ejections} == {index}
    with_ejection = summarize(rec).backends[1]
    without = summarize(run_algorithm(pool(timeline=sc.timeline, outlier=None),
                                      "round_robin")).backends[1]
    assert with_ejection.ejections == len(rec.ejections) and without.ejections == 0
    assert without.share == pytest.approx(0.25, abs=0.001)
    assert with_ejection.share < 0.15


def test_ejection_time_doubles_on_repeat_up_to_the_cap_in_virtual_time():
    # b1 fails every request from the start: out 10 s, back, three failures, out 20 s,
    # then 40 s capped at max_ejection_time = 35 s, and 35 s twice more within 120 s.
    sc = pool(requests=12_000, timeline=[Event(0.0, "error", ("b1",), latency=0.001)])
    rec = run_algorithm(sc, "round_robin")
    lengths = [until - at for at, _, until in rec.ejections]
    assert lengths == pytest.approx([10.0, 20.0, 35.0, 35.0, 35.0])
    # Each ejection comes right after the previous one ended: three more picks of b1
    # (round_robin passes it every 40 ms) once the pool re-admits it.
    for (_, _, ended), (again, _, _) in zip(rec.ejections, rec.ejections[1:]):
        assert ended < again < ended + 0.2


@pytest.mark.parametrize("percent, most", [(50.0, 2), (25.0, 1), (20.0, 0)])
def test_max_ejection_percent_is_respected(percent, most):
    # Three of four backends fail everything: only `most` of them may be out at once.
    sc = pool(requests=3000, timeline=[Event(0.0, "error", ("b1", "b2", "b3"), latency=0.001)],
              outlier=Outlier(consecutive_failures=3, ejection_time=5.0,
                              max_ejection_percent=percent))
    rec = run_algorithm(sc, "round_robin")
    times = sorted({t for at, _, until in rec.ejections for t in (at, until - 1e-9)})
    out_at = [sum(1 for at, _, until in rec.ejections if at <= t < until) for t in times]
    assert max(out_at, default=0) == most
    assert all(rec.backends[i].name != "b4" for _, i, _ in rec.ejections)


def test_a_client_timeout_reports_the_attempt_when_the_proxy_gives_up(sends):
    # b2 black-holes everything; the client gives up after 200 ms but serve keeps waiting
    # (a closed client connection is a half-close to it) until its 1 s response timeout:
    # the third "timeout" (at the third send + 1 s) ejects b2.
    events = [Event(0.0, "blackhole", ("b2",))]
    sc = pool(requests=1000, timeline=events, timeout=1.0, client=0.2)
    rec = run_algorithm(sc, "round_robin")
    third = [t for t, name in sends if name == "b2"][2]
    assert rec.ejections[0][:2] == (pytest.approx(third + 1.0), 1)
    # Errors are the client's: every request b2 got timed out at 200 ms, none retried.
    assert summarize(rec).errors == sum(1 for _, name in sends if name == "b2")
    # failure_on without "timeout": the same run ejects nobody.
    quiet = Outlier(consecutive_failures=3, failure_on=("5xx",))
    assert run_algorithm(pool(requests=1000, timeline=events, timeout=1.0, client=0.2,
                              outlier=quiet), "round_robin").ejections == []


def write(tmp_path, text, name="scenario.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


SCENARIO = """
seed = 5
algorithms = ["round_robin", "p2c"]
[workload]
rate = 200
duration = "20s"
[proxy]
retries = 1
timeout = "500ms"
[proxy.outlier]
consecutive_failures = 3
ejection_time = "2s"
[[backends]]
count = 4
service = { dist = "exponential", mean = "10ms" }
[[timeline]]
at = "2s"
backend = "b2"
event = "fail"
fraction = 0.5
"""


def test_same_seed_same_output_and_json_keeps_its_shape(tmp_path):
    path = write(tmp_path, SCENARIO)
    runner = CliRunner()
    out = tmp_path / "out.csv"
    first = runner.invoke(main, ["simulate", path, "--json", "--csv", str(out)])
    csv_text = out.read_text()
    second = runner.invoke(main, ["simulate", path, "--json", "--csv", str(out)])
    assert first.exit_code == 0 and first.output == second.output
    assert out.read_text() == csv_text
    table = runner.invoke(main, ["simulate", path])
    assert table.output == runner.invoke(main, ["simulate", path]).output
    assert "Passive ejections" in table.output
    assert "passive ejection took out b2" in " ".join(table.output.split()).lower()
    # The CSV counts ejections per backend; --json keeps exactly SPEC.md's keys.
    rows = list(csv.DictReader(io.StringIO(csv_text)))
    assert {r["backend"] for r in rows if int(r["ejections"])} == {"b2"}
    doc = json.loads(first.output)
    assert set(doc) == {"seed", "requests", "results"}
    assert set(doc["results"][0]) == {"algorithm", "latency", "errors", "backends", "fairness"}
    assert set(doc["results"][0]["backends"][0]) == {"name", "requests", "share", "utilization"}
    # --no-outlier: the same run without ejection, and no ejection table.
    off = runner.invoke(main, ["simulate", path, "--no-outlier"])
    assert off.exit_code == 0 and "ejection" not in off.output.lower()


def test_verdict_mentions_ejection_only_when_it_happened():
    sc = pool(requests=2000, timeline=[Event(1.0, "error", ("b2",), latency=0.001)])
    results = [summarize(run_algorithm(sc, a)) for a in ("round_robin", "least_conn")]
    assert "passive ejection took out b2" in " ".join(verdict(results, sc)).lower()
    calm = pool(requests=2000)
    assert "ejection" not in " ".join(verdict([summarize(run_algorithm(calm, a))
                                               for a in ("round_robin", "least_conn")], calm))
    assert to_json(3, results) == to_json(3, results)


@pytest.mark.parametrize("table, message", [
    ("consecutive_failures = 0", "proxy.outlier.consecutive_failures: expected an integer"),
    ('ejection_time = "soon"', "proxy.outlier.ejection_time: expected"),
    ("max_ejection_percent = 150", "proxy.outlier.max_ejection_percent: expected"),
    ('failure_on = ["5xx", "boom"]', "proxy.outlier.failure_on: expected"),
    ("consecutive_failure = 3", "proxy.outlier.consecutive_failure: unknown key; "
                                "did you mean 'consecutive_failures'?"),
    ('ejection_time = "10m"', "proxy.outlier.max_ejection_time: expected at least "
                              "proxy.outlier.ejection_time (10m), found the default 5m"),
    ('ejection_time = "20s"\nmax_ejection_time = "10s"',
     'proxy.outlier.max_ejection_time: expected at least proxy.outlier.ejection_time (20s), '
     'found "10s"'),
])
def test_outlier_errors_name_the_file_and_key_path(tmp_path, table, message):
    path = write(tmp_path, f"[proxy.outlier]\n{table}\n[[backends]]\n")
    with pytest.raises(UserError) as err:
        load_scenario(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)
    assert err.value.exit_code == Exit.USAGE


def test_outlier_defaults_are_serves():
    sc = parse_scenario({"proxy": {"outlier": {}}, "backends": [{}]})
    assert sc.proxy.outlier == Outlier()
    assert parse_scenario({"backends": [{}]}).proxy.outlier is None
    with pytest.raises(UserError, match=r"proxy\.outlier: expected a table"):
        parse_scenario({"proxy": {"outlier": 5}, "backends": [{}]})


CONFIG = """
[listen]
address = "127.0.0.1:8080"
[[routes]]
pool = "api"
[pools.api]
algorithm = "least_conn"
[pools.api.outlier]
consecutive_failures = 2
ejection_time = "15s"
failure_on = ["5xx"]
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
[[pools.api.backends]]
url = "http://127.0.0.1:9002"
[pools.plain]
[[pools.plain.backends]]
url = "http://127.0.0.1:9003"
"""


def test_config_pool_brings_its_outlier_table(tmp_path):
    write(tmp_path, CONFIG, "lb.toml")
    sc = load_scenario(write(tmp_path, 'config = "lb.toml"\npool = "api"\n'))
    assert sc.proxy.outlier == Outlier(consecutive_failures=2, ejection_time=15.0,
                                       failure_on=("5xx",))
    # A scenario's [proxy.outlier] changes single keys on top of the config's.
    sc = load_scenario(write(tmp_path, 'config = "lb.toml"\npool = "api"\n'
                                       '[proxy.outlier]\nmax_ejection_percent = 100\n'))
    assert sc.proxy.outlier == Outlier(consecutive_failures=2, ejection_time=15.0,
                                       max_ejection_percent=100.0, failure_on=("5xx",))
    assert sc.with_overrides(outlier=False).proxy.outlier is None
    # A pool without [outlier] has none, as in serve.
    plain = load_scenario(write(tmp_path, 'config = "lb.toml"\npool = "plain"\n'))
    assert plain.proxy.outlier is None
