"""Scenario files: what they mean, and one clear error with a key path for each mistake."""

from __future__ import annotations

import math

import pytest

from lbctl.config.loader import ConfigError
from lbctl.config.model import PoolConfig
from lbctl.errors import UserError
from lbctl.exitcodes import Exit
from lbctl.simulate.scenario import load_scenario, parse_scenario
from lbctl.simulate.workload import lognormal_params, service_sampler
from lbctl.simulate.scenario import Service

import random


def write(tmp_path, text, name="scenario.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_full_scenario(tmp_path):
    (tmp_path / "samples.txt").write_text("# measured\n10ms\n0.020\n\n30ms\n")
    sc = load_scenario(write(tmp_path, """
seed = 7
algorithms = ["p2c", "ewma"]
[workload]
arrivals = "uniform"
load = 0.5
duration = "60s"
[proxy]
retries = 2
timeout = "500ms"
[client]
timeout = "2s"
[[backends]]
name = "fast"
count = 2
concurrency = 4
service = { dist = "lognormal", mean = "10ms", p99 = "80ms" }
speed = 2.0
[[backends]]
name = "old"
service = { dist = "empirical", file = "samples.txt" }
weight = 3
[[timeline]]
at = "10s"
backend = "old"
event = "slow"
factor = 3
"""))
    assert [b.name for b in sc.backends] == ["fast1", "fast2", "old"]
    assert sc.backends[2].weight == 3 and sc.backends[0].concurrency == 4
    assert sc.backends[2].service.values == (0.010, 0.020, 0.030)
    # capacity: 2 x 4 x 2 / 10ms + 1 / 20ms = 1600 + 50 per second
    assert sc.capacity == pytest.approx(1650)
    assert sc.workload.rate == pytest.approx(825)
    assert sc.workload.duration == 60 and sc.workload.requests == 0
    assert sc.proxy.retries == 2 and sc.proxy.timeouts.response == 0.5 and sc.client_timeout == 2
    assert sc.timeline[0].action == "slow" and sc.timeline[0].factor == 3
    assert sc.algorithms == ("p2c", "ewma") and sc.seed == 7


def test_lognormal_from_mean_and_p99():
    mu, sigma = lognormal_params(0.010, 0.080)
    assert math.exp(mu + sigma ** 2 / 2) == pytest.approx(0.010)
    assert math.exp(mu + 2.3263478740408408 * sigma) == pytest.approx(0.080)
    draw = service_sampler(Service("lognormal", mean=0.010, p99=0.080), random.Random(1))
    values = sorted(draw() for _ in range(100_000))
    # 100k draws: the p99 estimate's relative standard error is about 1.5%, the mean's
    # (sigma ~ 1.2) well under 1%; 8% and 5% are generous multiples of those.
    assert values[98_999] == pytest.approx(0.080, rel=0.08)
    assert sum(values) / len(values) == pytest.approx(0.010, rel=0.05)


def test_config_pool_gives_names_weights_and_settings(tmp_path):
    write(tmp_path, """
[listen]
address = "127.0.0.1:8080"
[[routes]]
pool = "api"
[pools.api]
algorithm = "weighted"
retries = 2
[pools.api.timeouts]
response = "3s"
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
name = "api-1"
weight = 3
[[pools.api.backends]]
url = "http://127.0.0.1:9002"
""", "lb.toml")
    sc = load_scenario(write(tmp_path, """
config = "lb.toml"
pool = "api"
[[backends]]
service = { dist = "constant", mean = "5ms" }
"""))
    assert [(b.name, b.weight) for b in sc.backends] == [("api-1", 3.0), ("127.0.0.1:9002", 1.0)]
    assert sc.configured == "weighted"
    assert sc.proxy.retries == 2 and sc.proxy.timeouts.response == 3.0


def test_config_pool_must_exist_and_the_config_must_be_valid(tmp_path):
    write(tmp_path, '[[routes]]\npool = "api"\n[pools.api]\n[[pools.api.backends]]\n'
                    'url = "http://127.0.0.1:9001"\n', "lb.toml")
    with pytest.raises(UserError, match=r'pool: expected a pool of .*lb.toml \(api\), '
                                        r'found "apii"; did you mean .api.'):
        load_scenario(write(tmp_path, 'config = "lb.toml"\npool = "apii"\n'))
    write(tmp_path, '[[routes]]\npool = "api"\n[pools.api]\nalgorithm = "fastest"\n'
                    '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n', "bad.toml")
    with pytest.raises(UserError, match="pools.api.algorithm"):
        load_scenario(write(tmp_path, 'config = "bad.toml"\npool = "api"\n'))


# Each message reads exactly like `lbctl validate`'s: FILE: KEY.PATH: expected ..., found ...
BAD = [
    ('[[backends]]\nservice = { dist = "exponential", mean = "fast" }\n',
     'backends[0].service.mean: expected a duration such as "150ms", "2s", "1m" or a number '
     'of seconds (greater than zero), found "fast"'),
    ('[[backends]]\nservice = { dist = "gaussian", mean = "1s" }\n',
     'backends[0].service.dist: expected one of "exponential", "constant", "uniform", '
     '"lognormal", "empirical", found "gaussian"'),
    ('[[backends]]\ncount = 0\n', "backends[0].count: expected an integer from 1 to 100000, "
                                    "found 0"),
    ('[[backends]]\ncount = 2\n[[backends]]\nspeed = -1\n',
     "backends[1].speed: expected a number > 0, found -1"),
    ('[[backends]]\nconcurency = 2\n', "backends[0].concurency: unknown key; did you mean "
                                        "'concurrency'?"),
    ('[[backends]]\nservice = { dist = "lognormal", mean = "10ms", p99 = "5ms" }\n',
     'backends[0].service.p99: expected a duration above the mean and at most 15.0 x the mean '
     '(a lognormal cannot be more skewed), found "5ms"'),
    ('[[backends]]\nservice = { dist = "uniform", min = "10ms" }\n',
     'backends[0].service.max: missing; expected a value: dist = "uniform" needs min and max'),
    ('[[backends]]\nservice = { dist = "constant", mean = "1s", p99 = "2s" }\n',
     'backends[0].service.p99: expected no p99 with dist = "constant" (it uses mean)'),
    ('[[backends]]\nservice = { dist = "empirical", file = "nope.txt" }\n',
     'backends[0].service.file: cannot read "nope.txt": it does not exist'),
    ('algorithms = ["p2c", "least_con"]\n[[backends]]\n',
     "algorithms: expected a non-empty array of distinct values, each one of"),
    ('algorithms = ["p2c", "least_con"]\n[[backends]]\n', "did you mean 'least_conn'?"),
    ('[workload]\nrate = 10\nload = 0.5\n[[backends]]\n',
     "workload.load: expected rate or load, not both"),
    ('[workload]\narrivals = "bursty"\n[[backends]]\n',
     'workload.arrivals: expected one of "poisson", "uniform", found "bursty"'),
    ('[workload]\nrequests = 1.5\n[[backends]]\n',
     "workload.requests: expected an integer >= 1, found 1.5"),
    ('[workload]\nrequests = 200_000_000\n[[backends]]\n',
     "workload.requests: expected at most 100,000,000 requests, found 200000000"),
    ('[workload]\nspeedup = 2\n[[backends]]\n',
     'workload.speedup: expected speedup only with replay = "access.log"'),
    ('[[backends]]\n[[timeline]]\nat = "1s"\nbackend = "b9"\nevent = "down"\n',
     'timeline[0].backend: expected the name of a simulated backend (b1), found "b9"'),
    ('[[backends]]\n[[timeline]]\nat = "1s"\nbackend = "b1"\nevent = "explode"\n',
     'timeline[0].event: expected one of "down", "up", "refuse", "reset", "blackhole", '
     '"error", "slow", "recover", "fail", found "explode"'),
    ('[[backends]]\n[[timeline]]\nat = "1s"\nbackend = "b1"\nevent = "slow"\n',
     'timeline[0].factor: missing; expected a factor with event = "slow" (3 = three times '
     'slower)'),
    ('[[backends]]\n[[timeline]]\nat = "1s"\nbackend = "b1"\nevent = "down"\nfactor = 2\n',
     'timeline[0].factor: expected no factor with event = "down"'),
    ('[[backends]]\n[[timeline]]\nat = "1s"\nbackend = "b1"\nevent = "down"\nmode = "x"\n',
     'timeline[0].mode: expected one of "refuse", "reset", "blackhole", "error", found "x"'),
    ('[[backends]]\nfailure = { mode = "slow" }\n',
     'backends[0].failure.factor: missing; expected a factor with mode = "slow"'),
    ('[[backends]]\nfailure = { mode = "refuse", fraction = 2 }\n',
     "backends[0].failure.fraction: expected a number from 0 to 1, found 2"),
    ('[proxy]\nretries = "two"\n[[backends]]\n', 'proxy.retries: expected an integer >= 0, '
                                                  'found "two"'),
    ('[proxy]\ntimeout = "1s"\n[proxy.timeouts]\nresponse = "2s"\n[[backends]]\n',
     "proxy.timeout: expected either timeout or timeouts.response, not both"),
    ('[proxy.health]\nfall = 0\n[[backends]]\n', "proxy.health.fall: expected an integer "
                                                   ">= 1, found 0"),
    ('[client]\ntimeout = "-1s"\n[[backends]]\n', "client.timeout: expected"),
    ('pool = "api"\n[[backends]]\n', 'config: missing; expected both config = "lb.toml" and '
                                      'pool = "NAME"'),
    ('seed = 1\n', "backends: missing; expected at least one [[backends]] group"),
    ('[[backends]]\nname = "x"\n[[backends]]\nname = "x"\n',
     'backends: expected unique backend names, found "x" twice'),
    ('[[backends]\n', "line 1, column 11: invalid TOML: expected ']]'"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_scenario_names_the_key_path(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert message in str(info.value)
    assert str(info.value).startswith(path + ": ")
    assert info.value.exit_code == Exit.USAGE


def test_every_problem_is_reported_at_once_like_validate(tmp_path):
    path = write(tmp_path, '[workload]\nrat = 10\n[proxy]\nretries = -1\n'
                           '[[backends]]\nspeed = 0\nconcurrency = "two"\n')
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}: workload.rat: unknown key; did you mean 'rate'?",
        f"{path}: proxy.retries: expected an integer >= 0, found -1",
        f"{path}: backends[0].speed: expected a number > 0, found 0",
        f'{path}: backends[0].concurrency: expected an integer >= 1, found "two"',
    ]


def test_a_scenario_or_samples_file_that_is_not_utf8_is_a_clean_error(tmp_path):
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'# caf\xe9\n[[backends]]\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: line 1, column 6: not valid UTF-8"):
        load_scenario(str(bad))
    (tmp_path / "samples.txt").write_bytes(b"10ms\n\xff\xfe20ms\n")
    with pytest.raises(ConfigError) as info:
        load_scenario(write(tmp_path, '[[backends]]\nservice = { dist = "empirical", '
                                      'file = "samples.txt" }\n'))
    assert "backends[0].service.file: samples.txt line 2: not valid UTF-8" in str(info.value)


def test_defaults_are_serves_pool_config():
    # No [proxy]: serve's PoolConfig, so an attempt times out after serve's 30 s and a
    # black hole is a 504 then, not a request that never ends.
    sc = parse_scenario({"backends": [{}], "timeline": [
        {"at": 0, "backend": "b1", "event": "blackhole"}]})
    assert sc.proxy == PoolConfig(name="sim", backends=())
    assert sc.proxy.timeouts.response == 30.0 and sc.proxy.retry_on == ("connect", "reset")
    assert sc.proxy.health is None and sc.proxy.outlier is None


def test_retry_on_follows_serve_and_is_checked_like_serve(tmp_path):
    sc = load_scenario(write(tmp_path, '[proxy]\nretries = 2\nretry_on = ["timeout", "5xx"]\n'
                                       '[[backends]]\ncount = 2\n'))
    assert sc.proxy.retry_on == ("timeout", "5xx")
    assert load_scenario(write(tmp_path, '[[backends]]\ncount = 2\n')).proxy.retry_on == \
        ("connect", "reset")                        # serve's default
    with pytest.raises(UserError, match=r"proxy.retry_on: .*did you mean '5xx'"):
        load_scenario(write(tmp_path, '[proxy]\nretry_on = ["5XX"]\n[[backends]]\ncount = 2\n'))
