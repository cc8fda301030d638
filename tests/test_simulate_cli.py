"""`lbctl simulate` from the outside: the default lesson, --json, --csv, errors, a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbctl.cli import main

REPO = Path(__file__).resolve().parents[1]

SCENARIO = """
seed = 4
algorithms = ["round_robin", "least_conn", "p2c"]
[workload]
rate = 200
requests = 3000
[[backends]]
count = 3
service = { dist = "exponential", mean = "10ms" }
[[backends]]
name = "slow"
service = { dist = "lognormal", mean = "15ms", p99 = "60ms" }
"""


def run(*args):
    result = CliRunner().invoke(main, ["simulate", *args])
    return result


@pytest.fixture
def scenario(tmp_path):
    path = tmp_path / "scenario.toml"
    path.write_text(SCENARIO)
    return str(path)


def test_default_run_names_a_winner_and_why():
    result = run()
    assert result.exit_code == 0, result.output
    assert "Algorithms, best first" in result.output
    assert "p99 latency" in result.output
    text = " ".join(result.output.split())
    # The verdict: one sentence naming the winner, compared with the default, and why.
    assert " won with p99 " in text and "for round_robin (the default)" in text
    assert "slowest backend, slow," in text


def test_json_is_exactly_the_spec_shape(scenario):
    result = run(scenario, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.output)           # stdout holds the document and nothing else
    assert set(doc) == {"seed", "requests", "results"}
    assert doc["seed"] == 4 and doc["requests"] == 3000
    assert [r["algorithm"] for r in doc["results"]] == ["round_robin", "least_conn", "p2c"]
    for r in doc["results"]:
        assert set(r) == {"algorithm", "latency", "errors", "backends", "fairness"}
        assert set(r["latency"]) == {"mean", "p50", "p90", "p99", "p999", "max"}
        lat = r["latency"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"] < 1
        assert isinstance(r["errors"], int)
        assert [b["name"] for b in r["backends"]] == ["b1", "b2", "b3", "slow"]
        for b in r["backends"]:
            assert set(b) == {"name", "requests", "share", "utilization"}
            assert 0 <= b["utilization"] <= 1
        assert sum(b["requests"] for b in r["backends"]) == 3000
        assert sum(b["share"] for b in r["backends"]) == pytest.approx(1, abs=1e-5)
        assert 0.25 <= r["fairness"] <= 1


def test_same_seed_same_bytes_other_seed_other_bytes(scenario):
    first, second = run(scenario, "--json"), run(scenario, "--json")
    assert first.output == second.output
    assert run(scenario, "--json", "--seed", "5").output != first.output
    # The rendered report too.
    assert run(scenario).output == run(scenario).output


def test_csv_has_a_row_per_algorithm_and_backend(scenario, tmp_path):
    out = tmp_path / "out.csv"
    result = run(scenario, "--csv", str(out), "--algorithms", "p2c,least_conn")
    assert result.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["algorithm"], r["backend"]) for r in rows] == [
        (a, b) for a in ("p2c", "least_conn") for b in ("b1", "b2", "b3", "slow")]
    assert all(int(r["requests"]) > 0 and 0 < float(r["utilization"]) <= 1 for r in rows)
    assert {r["latency_p99"] for r in rows if r["algorithm"] == "p2c"}.__len__() == 1


def test_options_build_a_pool():
    result = run("--backends", "5", "--load", "0.5", "--requests", "2000",
                 "--algorithms", "random,p2c", "--json")
    doc = json.loads(result.output)
    assert doc["requests"] == 2000 and len(doc["results"][0]["backends"]) == 5
    # Load 0.5 on exponential servers: every utilization is around one half.
    for b in doc["results"][1]["backends"]:
        assert 0.35 < b["utilization"] < 0.65


@pytest.mark.parametrize("args, message", [
    (["--algorithms", "p2c,lest_conn"], "--algorithms: unknown algorithm 'lest_conn' "
                                        "(did you mean 'least_conn'?)"),
    (["--rate", "10", "--load", "0.5"], "--rate and --load"),
    (["--mean", "5ms"], "use them with --backends"),
    (["missing.toml"], "missing.toml: cannot read"),
    (["--csv", "/nonexistent/dir/out.csv"], "/nonexistent/dir/out.csv: cannot write"),
])
def test_usage_errors_are_one_line_exit_2(args, message):
    result = run(*args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_scenario_reads_like_validate_exit_2(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[[backends]]\nservice = { dist = "exponential", mean = "soon" }\n')
    result = run(str(path))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{path}: backends[0].service.mean: expected a duration")


def test_help_has_an_example():
    result = run("--help")
    assert result.exit_code == 0 and "Examples:" in result.output
    assert "lbctl simulate --backends" in result.output


def test_installed_command_in_a_subprocess(scenario):
    exe = shutil.which("lbctl", path=os.path.dirname(sys.executable)) or shutil.which("lbctl")
    if exe is None:
        pytest.skip("lbctl is not installed")
    # Import this checkout even if the installed package points at another one.
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([exe, "simulate", scenario, "--json", "--algorithms", "p2c"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""                  # no progress bar when stdout is not a terminal
    assert json.loads(proc.stdout)["results"][0]["algorithm"] == "p2c"
    bad = subprocess.run([exe, "simulate", scenario, "--algorithms", "nope"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("lbctl: --algorithms: unknown algorithm 'nope'")


def test_seeds_give_means_with_confidence_intervals(scenario):
    result = run(scenario, "--json", "--seeds", "3", "--algorithms", "round_robin,p2c")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["seeds"] == [4, 5, 6]
    for r in doc["results"]:
        assert r["ci95"]["p99"] > 0 and "errors" in r["ci95"]
        assert set(r) == {"algorithm", "latency", "errors", "backends", "fairness", "ci95"}
    text = " ".join(run(scenario, "--seeds", "3").output.split())
    assert "seeds 4-6 (means ± 95% confidence)" in text and " ±" in text


def test_series_csv_has_a_row_per_algorithm_and_interval(scenario, tmp_path):
    out = tmp_path / "series.csv"
    result = run(scenario, "--series", str(out), "--interval", "2s",
                 "--algorithms", "p2c,least_conn")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    # 3,000 requests at 200/s: 15 s of arrivals, 8 intervals of 2 s.
    assert [r["algorithm"] for r in rows] == ["p2c"] * 8 + ["least_conn"] * 8
    assert [float(r["start"]) for r in rows[:8]] == [0, 2, 4, 6, 8, 10, 12, 14]
    assert sum(int(r["requests"]) for r in rows[:8]) == 3000
    shares = [k for k in rows[0] if k.startswith("share_")]
    assert shares == ["share_b1", "share_b2", "share_b3", "share_slow"]
    for r in rows:
        assert sum(float(r[k]) for k in shares) == pytest.approx(1, abs=1e-4)
        assert float(r["p50"]) <= float(r["p99"])
    # The terminal strip: one p99 line per algorithm.
    assert "Over time:" in result.output


def test_compare_runs_two_configs_on_the_same_workload(tmp_path):
    for name, algorithm in (("old.toml", "round_robin"), ("new.toml", "least_conn")):
        (tmp_path / name).write_text(
            f'[[routes]]\npool = "api"\n[pools.api]\nalgorithm = "{algorithm}"\n'
            + "".join(f'[[pools.api.backends]]\nurl = "http://127.0.0.1:{9000 + i}"\n'
                      f'name = "api-{i}"\n' for i in (1, 2, 3)))
    (tmp_path / "world.toml").write_text(
        '[workload]\nload = 0.7\nrequests = 20000\n[[backends]]\nname = "api-1"\n'
        '[[backends]]\nname = "api-3"\nspeed = 0.33\n')
    result = run("--compare", str(tmp_path / "old.toml"), str(tmp_path / "new.toml"),
                 str(tmp_path / "world.toml"))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "two configs compared" in text
    assert "new.toml (least_conn) won with p99" in text and "for old.toml (round_robin)" in text
    assert "the slowest backend, api-3," in text
    doc = json.loads(run("--compare", str(tmp_path / "old.toml"), str(tmp_path / "new.toml"),
                         "--json").output)
    assert [r["algorithm"] for r in doc["results"]] == ["round_robin", "least_conn"]
    bad = run("--compare", str(tmp_path / "old.toml"), str(tmp_path / "nope.toml"))
    assert bad.exit_code == 2 and "nope.toml" in bad.output


EXAMPLES = sorted(p for p in (REPO / "examples" / "simulate").glob("*.toml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_every_example_runs(example):
    result = run(str(example), "--requests", "3000", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["results"]


def test_the_compare_example_runs():
    folder = REPO / "examples" / "simulate" / "compare"
    result = run("--compare", str(folder / "lb.toml"), str(folder / "lb-new.toml"),
                 str(folder / "world.toml"), "--requests", "5000")
    assert result.exit_code == 0, result.output
    assert "lb-new.toml (least_conn)" in result.output
