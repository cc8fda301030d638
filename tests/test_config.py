"""Config loading: defaults, every class of problem (checked by its message), and --effective.

Every test writes a real file, because the file name is part of every message.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lbctl.config import ConfigError, load_config
from lbctl.config.effective import effective_toml
from lbctl.config.loader import build_config, summary
from lbctl.config.model import (
    Address, Admin, BackendConfig, Config, Health, Limits, Listen, Outlier, Route, Timeouts,
)
from lbctl.config.problems import Problems
from lbctl.config.schema import CONFIG, POOL

REPO = Path(__file__).resolve().parent.parent

# The smallest valid config; tests append to it or replace parts of it.
ROUTE = '''
[[routes]]
pool = "api"
'''
POOL_API = '''
[pools.api]

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
'''
BASE = ROUTE + POOL_API

# Every table and key, none at its default.
FULL = '''
[listen]
address = "[::1]:8443"

[admin]
address = "127.0.0.1:9901"
token = "s3cret-admin-token-0123"

[limits]
drain_timeout = 0
max_connections_per_client = 20

[[routes]]
host = "*.Example.com"
path_prefix = "/v1"
pool = "api"

[pools.api]
algorithm = "consistent_hash"
hash_key = "header:X-User"
retries = 0
slow_start = "30s"
panic_threshold = 50
ewma_decay = "5s"
max_idle_connections = 8
idle_timeout = "4s"

[pools.api.health]
type = "http"
method = "head"
path = "/status"
host = "internal.example"
interval = "2s"
timeout = "500ms"
rise = 1
fall = 5
expect_status = [200, 204, "300-399"]
expect_body = "ok|fine"
initial = "down"

[pools.api.outlier]
consecutive_failures = 3
ejection_time = "10s"
max_ejection_time = "1m"
max_ejection_percent = 25
failure_on = ["connect", "5xx"]

[[pools.api.backends]]
url = "https://[::1]"
name = "v6"
weight = 0.5
backup = true
'''


def write(tmp_path: Path, text: str, name: str = "lb.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env=env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    messages = [str(p) for p in info.value.problems]
    assert str(info.value) == "\n".join(messages)
    return messages


def problem(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    """The one problem in ``text``, without the file name prefix (checked here)."""
    found = problems(tmp_path, text, env)
    assert len(found) == 1, found
    prefix = f"{tmp_path / 'lb.toml'}: "
    assert found[0].startswith(prefix)
    return found[0][len(prefix):]


# ---- good files and defaults ----

def test_sample_config_loads():
    config = load_config(REPO / "sample.toml", env={})
    assert summary(config) == "2 routes, 2 pools, 5 backends"
    assert config.listen.address == Address("127.0.0.1", 8080)
    assert config.admin == Admin(Address("127.0.0.1", 9900), None)
    ports = sorted({b.port for pool in config.pools.values() for b in pool.backends})
    assert ports == [9001, 9002, 9003]
    assert all(pool.health and pool.health.path == "/healthz" for pool in config.pools.values())


def test_defaults_fill_everything_not_written(tmp_path):
    config = load(tmp_path, BASE)
    assert config.path == str(tmp_path / "lb.toml")
    assert config.listen == Listen(Address("127.0.0.1", 8080))
    assert config.admin is None                     # no [admin]: no admin API
    assert config.limits == Limits()
    assert config.routes == (Route(pool="api", host=None, path_prefix="/"),)
    pool = config.pools["api"]
    assert (pool.name, pool.algorithm, pool.hash_key, pool.retries) == ("api", "round_robin", None, 1)
    assert pool.timeouts == Timeouts(connect=2.0, response=30.0)
    assert pool.health is None and pool.outlier is None
    assert pool.backends == (BackendConfig(url="http://127.0.0.1:9001", name="127.0.0.1:9001",
                                           scheme="http", host="127.0.0.1", port=9001,
                                           weight=1.0, backup=False),)


def test_empty_tables_mean_all_defaults(tmp_path):
    config = load(tmp_path, BASE + "[pools.api.health]\n[pools.api.outlier]\n[admin]\n[limits]\n")
    assert config.pools["api"].health == Health()
    assert config.pools["api"].outlier == Outlier()
    assert config.admin == Admin()
    assert config.limits == Limits()


def test_config_is_immutable(tmp_path):
    config = load(tmp_path, BASE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pools["api"].retries = 5  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.pools["new"] = config.pools["api"]  # type: ignore[index]


def test_durations_and_sizes_are_parsed_once_at_load(tmp_path):
    config = load(tmp_path, BASE + '''
[pools.api.timeouts]
connect = "150ms"
response = 5

[limits]
header_timeout = "1m"
max_body_size = "1MiB"
max_header_size = 32768
''')
    assert config.pools["api"].timeouts == Timeouts(connect=0.15, response=5.0)
    assert config.limits.header_timeout == 60.0
    assert config.limits.max_body_size == 2**20
    assert config.limits.max_header_size == 32768


def test_every_table_and_key_in_full(tmp_path):
    config = load(tmp_path, FULL)
    assert config.listen.address == Address("::1", 8443)
    assert str(config.listen.address) == "[::1]:8443"
    assert config.admin == Admin(Address("127.0.0.1", 9901), "s3cret-admin-token-0123")
    assert config.limits.drain_timeout == 0.0 and config.limits.max_connections_per_client == 20
    assert config.routes == (Route(pool="api", host="*.example.com", path_prefix="/v1"),)
    pool = config.pools["api"]
    assert (pool.algorithm, pool.hash_key, pool.retries, pool.slow_start, pool.panic_threshold,
            pool.ewma_decay, pool.max_idle_connections, pool.idle_timeout) == \
        ("consistent_hash", "header:X-User", 0, 30.0, 50.0, 5.0, 8, 4.0)
    assert pool.health == Health(type="http", method="HEAD", path="/status", host="internal.example",
                                 interval=2.0, timeout=0.5, rise=1, fall=5,
                                 expect_status=((200, 200), (204, 204), (300, 399)),
                                 expect_body="ok|fine", initial="down")
    assert pool.outlier == Outlier(3, 10.0, 60.0, 25.0, ("connect", "5xx"))
    assert pool.backends == (BackendConfig(url="https://[::1]", name="v6", scheme="https",
                                           host="::1", port=443, weight=0.5, backup=True),)


@pytest.mark.parametrize("url, scheme, host, port, name", [
    ("http://127.0.0.1:9001", "http", "127.0.0.1", 9001, "127.0.0.1:9001"),
    ("http://backend.internal", "http", "backend.internal", 80, "backend.internal:80"),
    ("https://backend.internal/", "https", "backend.internal", 443, "backend.internal:443"),
    ("http://[::1]:9001", "http", "::1", 9001, "[::1]:9001"),
])
def test_backend_url_parts_and_default_name(tmp_path, url, scheme, host, port, name):
    config = load(tmp_path, ROUTE + f'[[pools.api.backends]]\nurl = "{url}"\n')
    backend = config.pools["api"].backends[0]
    assert (backend.scheme, backend.host, backend.port, backend.name) == (scheme, host, port, name)


# ---- reading the file ----

def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert str(info.value) == f"{tmp_path / 'nope.toml'}: cannot read the config file: it does not exist"
    assert info.value.exit_code == 2


def test_directory_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value) == f"{tmp_path}: cannot read the config file: it is a directory"


def test_toml_syntax_error_reports_line_and_column(tmp_path):
    text = '[listen]\naddress = "127.0.0.1:8080"\n\n[[routes]]\npool = api\n'
    assert problem(tmp_path, text) == "line 5, column 8: invalid TOML: invalid value"


def test_toml_error_at_end_of_file_reports_its_position(tmp_path):
    assert problem(tmp_path, 'a = 1\nb = [1,') == \
        "line 2, column 8: invalid TOML: invalid value (at end of file)"


def test_duplicate_toml_key_is_a_syntax_error_with_position(tmp_path):
    message = problem(tmp_path, BASE + "[pools.api]\nretries = 2\n")
    assert message.startswith("line ") and "invalid TOML" in message


def test_not_utf8_reports_position(tmp_path):
    path = tmp_path / "lb.toml"
    path.write_bytes(b'[listen]\naddress = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: line 2, column 15: not valid UTF-8 (TOML files are UTF-8 text)"


# ---- unknown keys ----

def test_misspelled_key_names_its_path_and_the_suggestion(tmp_path):
    text = BASE + '[[pools.api.backends]]\nurl = "http://127.0.0.1:9002"\nwieght = 3\n'
    assert problem(tmp_path, text) == "pools.api.backends[1].wieght: unknown key; did you mean 'weight'?"


@pytest.mark.parametrize("text, expected", [
    ("[pool.api]\n", "pool: unknown key; did you mean 'pools'?"),
    ("[listen]\nadress = '127.0.0.1:80'\n", "listen.adress: unknown key; did you mean 'address'?"),
    ("[pools.api.health]\nintervall = 5\n", "pools.api.health.intervall: unknown key; did you mean 'interval'?"),
    ("[pools.api.timeout]\nconnect = 1\n", "pools.api.timeout: unknown key; did you mean 'timeouts'?"),
    ("[pools.api]\nalgoritm = 'p2c'\n", "pools.api.algoritm: unknown key; did you mean 'algorithm'?"),
])
def test_unknown_keys_everywhere_get_suggestions(tmp_path, text, expected):
    # Written as a separate document so each table appears once.
    doc = ROUTE + text + ("" if "[pools.api]" in text else "[pools.api]\n") + \
        '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n'
    assert problem(tmp_path, doc) == expected


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path):
    assert problem(tmp_path, BASE + "[pools.api.timeouts]\nzzz = 1\n") == \
        "pools.api.timeouts.zzz: unknown key; expected connect, response"


def test_pool_name_with_a_dot_is_quoted_in_the_key_path(tmp_path):
    text = '[[routes]]\npool = "a.b"\n[pools."a.b"]\nretries = "x"\n' \
           '[[pools."a.b".backends]]\nurl = "http://127.0.0.1:9001"\n'
    assert problem(tmp_path, text) == 'pools."a.b".retries: expected an integer >= 0, found "x"'


# ---- wrong types and values: a message each, never an exception ----

@pytest.mark.parametrize("key, value, expected", [
    ("weight", '"three"', 'pools.api.backends[0].weight: expected a number from 0.01 to 1000, found "three"'),
    ("weight", "0", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found 0"),
    ("weight", "-2.5", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found -2.5"),
    ("weight", "inf", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found inf"),
    ("weight", "true", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found true"),
    ("weight", "0.001", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found 0.001"),
    ("weight", "1e5", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found 100000.0"),
    ("weight", "1e308", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found 1e+308"),
    ("weight", "5e-324", "pools.api.backends[0].weight: expected a number from 0.01 to 1000, found 5e-324"),
    ("backup", '"yes"', 'pools.api.backends[0].backup: expected true or false, found "yes"'),
    ("name", '"a b"', 'pools.api.backends[0].name: expected a non-empty name without "/", '
                      'spaces or control characters, found "a b"'),
])
def test_backend_values(tmp_path, key, value, expected):
    text = ROUTE + f'[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n{key} = {value}\n'
    assert problem(tmp_path, text) == expected


@pytest.mark.parametrize("key", ["rise", "fall"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_rise_and_fall_below_one(tmp_path, key, value):
    assert problem(tmp_path, BASE + f"[pools.api.health]\n{key} = {value}\n") == \
        f"pools.api.health.{key}: expected an integer >= 1, found {value}"


def test_rise_as_a_float_is_not_an_integer(tmp_path):
    assert problem(tmp_path, BASE + "[pools.api.health]\nrise = 2.5\n") == \
        "pools.api.health.rise: expected an integer >= 1, found 2.5"


def test_bad_duration_names_the_key_and_the_units(tmp_path):
    assert problem(tmp_path, BASE + '[pools.api.timeouts]\nconnect = "2 secs"\n') == \
        'pools.api.timeouts.connect: expected a duration such as "150ms", "2s", "1m" or a number ' \
        'of seconds (greater than zero), found "2 secs"'


def test_zero_timeout_is_not_allowed(tmp_path):
    assert problem(tmp_path, BASE + '[pools.api.timeouts]\nresponse = "0s"\n').startswith(
        "pools.api.timeouts.response: expected a duration")


def test_bad_size_names_the_key(tmp_path):
    assert problem(tmp_path, BASE + '[limits]\nmax_body_size = "1 parsec"\n') == \
        'limits.max_body_size: expected a size such as "64KiB", "1MiB", "10MB" or a number of ' \
        'bytes, found "1 parsec"'


def test_table_where_a_value_belongs_and_the_reverse(tmp_path):
    found = problems(tmp_path, 'listen = "127.0.0.1:80"\n' + BASE + '[pools.api.timeouts.connect]\nx = 1\n')
    assert [p.split(": ", 1)[1] for p in found] == [
        'listen: expected a table, found "127.0.0.1:80"',
        'pools.api.timeouts.connect: expected a duration such as "150ms", "2s", "1m" or a number '
        'of seconds (greater than zero), found a table',
    ]


# ---- addresses ----

@pytest.mark.parametrize("address", [
    "localhost", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", ":8080",
    "[::1]8080", "[not-v6]:8080", "host name:80", "",
])
def test_address_not_host_port(tmp_path, address):
    assert problem(tmp_path, BASE + f'[listen]\naddress = "{address}"\n') == \
        'listen.address: expected an address "host:port" with port 1-65535, IPv6 in brackets ' \
        f'like "[::1]:8080", found "{address}"'


def test_bare_ipv6_address_gets_the_bracket_hint(tmp_path):
    assert problem(tmp_path, BASE + '[listen]\naddress = "::1:8080"\n').endswith(
        'found "::1:8080"; IPv6 addresses go in brackets, like "[::1]:8080"')


@pytest.mark.parametrize("address, parsed", [
    ("0.0.0.0:80", Address("0.0.0.0", 80)),
    ("localhost:65535", Address("localhost", 65535)),
    ("[::]:8080", Address("::", 8080)),
    ("lb-1.internal:1", Address("lb-1.internal", 1)),
])
def test_good_addresses(tmp_path, address, parsed):
    assert load(tmp_path, BASE + f'[listen]\naddress = "{address}"\n').listen.address == parsed


# ---- backend URLs ----

@pytest.mark.parametrize("url, hint", [
    ("127.0.0.1:9001", '; add the scheme, like "http://127.0.0.1:9001"'),
    ("ftp://127.0.0.1:9001", ""),
    ("http://127.0.0.1:99999", ""),
    ("http://127.0.0.1:0", ""),
    ("http://:9001", ""),
    ("http://user@127.0.0.1:9001", ""),
    ("http://127.0.0.1:9001/?x=1", ""),
    ("http://127.0.0.1:9001/api", "; backends are addressed by host and port; the request path is "
                                  "forwarded as is"),
])
def test_bad_backend_url(tmp_path, url, hint):
    text = ROUTE + f'[[pools.api.backends]]\nurl = "{url}"\n'
    assert problem(tmp_path, text) == \
        'pools.api.backends[0].url: expected a URL "http://host:port" or "https://host:port" ' \
        f'with no path, query or user, found "{url}"{hint}'


def test_backend_without_url(tmp_path):
    text = ROUTE + '[[pools.api.backends]]\nname = "a"\n'
    assert problem(tmp_path, text) == \
        'pools.api.backends[0].url: missing; expected a URL "http://host:port" or ' \
        '"https://host:port" with no path, query or user'


# ---- pools and backends ----

def test_pool_with_no_backends(tmp_path):
    assert problem(tmp_path, ROUTE + "[pools.api]\nretries = 1\n") == \
        "pools.api.backends: missing; expected at least one backend, as [[pools.api.backends]] " \
        "tables with a url, or a [pools.api.discovery] table"


def test_pool_with_an_empty_backend_list(tmp_path):
    assert problem(tmp_path, ROUTE + "[pools.api]\nbackends = []\n").startswith(
        "pools.api.backends: missing; expected at least one backend")


def test_backends_as_a_single_table(tmp_path):
    assert problem(tmp_path, ROUTE + '[pools.api.backends]\nurl = "http://127.0.0.1:9001"\n') == \
        "pools.api.backends: expected an array of tables ([[pools.api.backends]]), found a table"


def test_no_pools_at_all(tmp_path):
    found = problems(tmp_path, ROUTE)
    assert [p.split(": ", 1)[1] for p in found] == [
        'routes[0].pool: expected the name of a pool defined under [pools] (none are defined), '
        'found "api"',
        "pools: missing; expected at least one pool, as a table like [pools.api] with "
        "[[pools.api.backends]]",
    ]


def test_duplicate_backend_names(tmp_path):
    text = BASE + '''
[[pools.api.backends]]
url = "http://127.0.0.1:9002"
name = "a"

[[pools.api.backends]]
url = "http://127.0.0.1:9003"
name = "a"
'''
    assert problem(tmp_path, text) == \
        'pools.api.backends[2].name: expected a name unique in the pool, found "a", already used ' \
        'by pools.api.backends[1]'


def test_duplicate_default_backend_names_say_where_the_name_came_from(tmp_path):
    text = BASE + '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001/"\n'
    assert problem(tmp_path, text) == \
        'pools.api.backends[1]: expected a backend name unique in the pool; the default name ' \
        '(host:port of url) "127.0.0.1:9001" is already used by pools.api.backends[0]; give one ' \
        'of them a name'


def test_same_backend_name_in_two_pools_is_fine(tmp_path):
    text = BASE + '[[routes]]\npool = "web"\n[[pools.web.backends]]\nurl = "http://127.0.0.1:9001"\n'
    assert summary(load(tmp_path, text)) == "2 routes, 2 pools, 2 backends"


def test_unknown_algorithm_gets_a_suggestion(tmp_path):
    assert problem(tmp_path, ROUTE + '[pools.api]\nalgorithm = "leastconn"\n' + POOL_API.split("\n", 2)[2]) == \
        'pools.api.algorithm: expected one of "round_robin", "random", "weighted", "least_conn", ' \
        '"p2c", "ewma", "consistent_hash", found "leastconn"; did you mean \'least_conn\'?'


def test_algorithm_choices_are_the_balancing_registry():
    from lbctl.balancing import ALGORITHMS
    assert POOL.fields["algorithm"].choices == tuple(ALGORITHMS)


def with_pool(**keys: str) -> str:
    lines = "".join(f"{k} = {v}\n" for k, v in keys.items())
    return ROUTE + f"[pools.api]\n{lines}" + '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n'


def test_consistent_hash_without_hash_key(tmp_path):
    assert problem(tmp_path, with_pool(algorithm='"consistent_hash"')) == \
        'pools.api.hash_key: missing; expected a hash key for algorithm "consistent_hash": ' \
        '"ip", "path", "header:NAME" or "cookie:NAME"'


def test_hash_key_with_another_algorithm(tmp_path):
    assert problem(tmp_path, with_pool(algorithm='"p2c"', hash_key='"ip"')) == \
        'pools.api.hash_key: expected no hash_key for algorithm "p2c" (it is only used by ' \
        '"consistent_hash"), found "ip"'


def test_hash_key_with_the_default_algorithm(tmp_path):
    assert problem(tmp_path, with_pool(hash_key='"ip"')).startswith(
        'pools.api.hash_key: expected no hash_key for algorithm "round_robin"')


@pytest.mark.parametrize("hash_key", ["ip", "path", "header:X-User", "cookie:session"])
def test_good_hash_keys(tmp_path, hash_key):
    config = load(tmp_path, with_pool(algorithm='"consistent_hash"', hash_key=f'"{hash_key}"'))
    assert config.pools["api"].hash_key == hash_key


@pytest.mark.parametrize("hash_key, hint", [
    ("header:", ""), ("header", ""), ("cookie:a b", ""), ("query:x", ""), ("ipp", "; did you mean 'ip'?"),
])
def test_bad_hash_key_form(tmp_path, hash_key, hint):
    assert problem(tmp_path, with_pool(algorithm='"consistent_hash"', hash_key=f'"{hash_key}"')) == \
        'pools.api.hash_key: expected "ip", "path", "header:NAME" or "cookie:NAME", ' \
        f'found "{hash_key}"{hint}'


def test_pool_numbers(tmp_path):
    found = problems(tmp_path, with_pool(retries="-1", panic_threshold="101", max_idle_connections="1.5"))
    assert [p.split(": ", 1)[1] for p in found] == [
        "pools.api.retries: expected an integer >= 0, found -1",
        "pools.api.panic_threshold: expected a number from 0 to 100, found 101",
        "pools.api.max_idle_connections: expected an integer >= 0, found 1.5",
    ]


# ---- health ----

@pytest.mark.parametrize("value, ranges", [
    ("200", ((200, 200),)),
    ('"200-399"', ((200, 399),)),
    ('[200, 204]', ((200, 200), (204, 204))),
    ('[200, "300-399"]', ((200, 200), (300, 399))),
    ('["204"]', ((204, 204),)),
])
def test_expect_status_ints_and_ranges(tmp_path, value, ranges):
    config = load(tmp_path, BASE + f"[pools.api.health]\nexpect_status = {value}\n")
    assert config.pools["api"].health.expect_status == ranges


@pytest.mark.parametrize("value, shown", [
    ('"399-200"', '"399-200"'), ("[99]", "[99]"), ('"2xx"', '"2xx"'), ("[]", "[]"), ("600", "600"),
    ("true", "true"),
])
def test_bad_expect_status(tmp_path, value, shown):
    assert problem(tmp_path, BASE + f"[pools.api.health]\nexpect_status = {value}\n") == \
        'pools.api.health.expect_status: expected HTTP statuses (100-599): 200, "200-399", or an ' \
        f'array like [200, "300-399"], found {shown}'


def test_health_type_and_initial(tmp_path):
    found = problems(tmp_path, BASE + '[pools.api.health]\ntype = "htp"\ninitial = "Down"\n')
    assert [p.split(": ", 1)[1] for p in found] == [
        'pools.api.health.type: expected one of "http", "tcp", found "htp"; did you mean \'http\'?',
        'pools.api.health.initial: expected one of "up", "down", found "Down"; did you mean \'down\'?',
    ]


def test_tcp_health_with_http_only_keys(tmp_path):
    assert problem(tmp_path, BASE + '[pools.api.health]\ntype = "tcp"\npath = "/healthz"\n') == \
        'pools.api.health.path: expected no path with type = "tcp" (a TCP check only connects), ' \
        'found "/healthz"'


def test_health_path_and_body_regex(tmp_path):
    found = problems(tmp_path, BASE + '[pools.api.health]\npath = "healthz"\nexpect_body = "ok("\n')
    assert found[0].endswith('pools.api.health.path: expected a path starting with "/", found "healthz"')
    assert "pools.api.health.expect_body: expected a regular expression (Python syntax); it does " \
           "not compile: missing ), unterminated subpattern at position 2, found \"ok(\"" in found[1]


# ---- outlier ----

def test_outlier_values(tmp_path):
    found = problems(tmp_path, BASE + '''[pools.api.outlier]
consecutive_failures = 0
max_ejection_percent = 150
failure_on = ["connect", "5xxx"]
''')
    assert [p.split(": ", 1)[1] for p in found] == [
        "pools.api.outlier.consecutive_failures: expected an integer >= 1, found 0",
        "pools.api.outlier.max_ejection_percent: expected a number from 0 to 100, found 150",
        'pools.api.outlier.failure_on: expected a non-empty array of distinct values, each one of '
        '"connect", "reset", "timeout", "5xx", "truncated", "invalid", found ["connect", "5xxx"]; '
        'did you mean \'5xx\'?',
    ]


def test_outlier_max_ejection_time_below_ejection_time(tmp_path):
    assert problem(tmp_path, BASE + '[pools.api.outlier]\nejection_time = "10m"\n') == \
        "pools.api.outlier.max_ejection_time: expected at least outlier.ejection_time (10m), " \
        "found the default 5m"


# ---- routes ----

def test_route_names_a_pool_that_does_not_exist(tmp_path):
    text = '[[routes]]\npool = "apii"\n' + POOL_API
    assert problem(tmp_path, text) == \
        'routes[0].pool: expected the name of a pool defined under [pools] (api), found "apii"; ' \
        "did you mean 'api'?"


def test_route_without_pool(tmp_path):
    text = BASE + '[[routes]]\npath_prefix = "/v1"\n'
    assert problem(tmp_path, text) == \
        "routes[1].pool: missing; expected the name of a pool defined under [pools]"


def test_config_without_routes(tmp_path):
    assert problem(tmp_path, POOL_API) == \
        "routes: missing; expected at least one route, as [[routes]] tables with a pool " \
        "(a request that no route matches gets 404)"


def test_routes_as_a_table(tmp_path):
    assert problem(tmp_path, '[routes]\npool = "api"\n' + POOL_API) == \
        "routes: expected an array of tables ([[routes]]), found a table"


@pytest.mark.parametrize("host", ["api.example.com", "*.example.com", "localhost", "10.0.0.1"])
def test_good_route_hosts(tmp_path, host):
    assert load(tmp_path, BASE + f'[[routes]]\nhost = "{host}"\npool = "api"\n').routes[1].host == host


@pytest.mark.parametrize("host, hint", [
    ("api.example.com:443", "; the port is ignored when matching, leave it out"),
    ("http://api.example.com", "; the port is ignored when matching, leave it out"),
    ("api.*.com", ""), ("*example.com", ""), ("api example", ""), ("", ""),
])
def test_bad_route_hosts(tmp_path, host, hint):
    assert problem(tmp_path, BASE + f'[[routes]]\nhost = "{host}"\npool = "api"\n') == \
        'routes[1].host: expected a host name like "api.example.com" or "*.example.com", ' \
        f'without a port, found "{host}"{hint}'


def test_path_prefix_must_start_with_a_slash(tmp_path):
    assert problem(tmp_path, BASE + '[[routes]]\npath_prefix = "v1"\npool = "api"\n') == \
        'routes[1].path_prefix: expected a path starting with "/", found "v1"'


# ---- listen and admin ----

def test_admin_token_from_the_environment(tmp_path):
    config = load(tmp_path, BASE + "[admin]\n", env={"LBCTL_ADMIN_TOKEN": "from-env-0123456789"})
    assert config.admin.token == "from-env-0123456789"


def test_admin_token_in_the_file_wins_over_the_environment(tmp_path):
    config = load(tmp_path, BASE + '[admin]\ntoken = "from-file-0123456789"\n',
                  env={"LBCTL_ADMIN_TOKEN": "e"})
    assert config.admin.token == "from-file-0123456789"


def test_no_admin_table_means_no_admin_api_even_with_a_token(tmp_path):
    assert load(tmp_path, BASE, env={"LBCTL_ADMIN_TOKEN": "x"}).admin is None


def test_admin_on_a_public_address_needs_a_token(tmp_path):
    text = BASE + '[admin]\naddress = "0.0.0.0:9900"\n'
    assert problem(tmp_path, text) == \
        "admin.token: missing; expected a token (or env LBCTL_ADMIN_TOKEN) because admin.address " \
        "0.0.0.0:9900 is not a loopback address"
    token = "t" * 16
    assert load(tmp_path, text, env={"LBCTL_ADMIN_TOKEN": token}).admin.token == token


def test_empty_admin_token(tmp_path):
    assert problem(tmp_path, BASE + '[admin]\ntoken = ""\n') == \
        'admin.token: expected a non-empty string, found ""'


@pytest.mark.parametrize("token, message", [
    ("   ", "expected a token of at least 16 characters, found a blank one"),
    ("s3cret", "expected at least 16 characters (e.g. the output of `openssl rand -hex 16`), "
               "found 6"),
    ("a token with spaces", "expected printable ASCII without spaces (it is sent in an "
                            "Authorization header), found other characters"),
])
def test_trivial_admin_tokens_are_refused_and_never_printed(tmp_path, token, message):
    assert problem(tmp_path, BASE + f'[admin]\ntoken = "{token}"\n') == f"admin.token: {message}"
    env_problem = problem(tmp_path, BASE + "[admin]\n", env={"LBCTL_ADMIN_TOKEN": token})
    assert env_problem == f"admin.token (from env LBCTL_ADMIN_TOKEN): {message}"
    if token.strip():
        assert token not in env_problem


def test_admin_and_listen_on_the_same_address(tmp_path):
    text = BASE + '[listen]\naddress = "127.0.0.1:9900"\n[admin]\naddress = "127.0.0.1:9900"\n'
    assert problem(tmp_path, text) == \
        "admin.address: expected an address other than listen.address, found the same one " \
        "(127.0.0.1:9900)"


# ---- many problems at once ----

def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = '''
[listen]
adress = "127.0.0.1:8080"

[[routes]]
pool = "apii"

[pools.api]
algorithm = "leastconn"

[pools.api.health]
rise = 0

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
weight = "three"

[[pools.api.backends]]
url = "127.0.0.1:9002"
'''
    found = problems(tmp_path, text)
    file = tmp_path / "lb.toml"
    assert found == [
        f"{file}: listen.adress: unknown key; did you mean 'address'?",
        f'{file}: routes[0].pool: expected the name of a pool defined under [pools] (api), found '
        f'"apii"; did you mean \'api\'?',
        f'{file}: pools.api.algorithm: expected one of "round_robin", "random", "weighted", '
        f'"least_conn", "p2c", "ewma", "consistent_hash", found "leastconn"; did you mean '
        f"'least_conn'?",
        f"{file}: pools.api.health.rise: expected an integer >= 1, found 0",
        f'{file}: pools.api.backends[0].weight: expected a number from 0.01 to 1000, found "three"',
        f'{file}: pools.api.backends[1].url: expected a URL "http://host:port" or '
        f'"https://host:port" with no path, query or user, found "127.0.0.1:9002"; add the '
        f'scheme, like "http://127.0.0.1:9001"',
    ]


# Any shape of document, however wrong, gives problems, never an exception: the keys are drawn
# from the real ones so the checks run deep, the values from every TOML type.
_toml_scalars = st.one_of(
    st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["2s", "150ms", "1MiB", "http://127.0.0.1:9001", "127.0.0.1:80", "api",
                     "consistent_hash", "ip", "200-399", "tcp", "down", "*.x.com", "/"]),
)
_keys = st.sampled_from(sorted({*CONFIG.keys, *POOL.keys, "url", "name", "weight", "pool", "host",
                                "path_prefix", "address", "token", "rise", "expect_status", "api",
                                "type", "connect", "failure_on", "header_timeout"}))
_documents = st.recursive(
    _toml_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _documents, max_size=6))
def test_any_document_gives_problems_not_exceptions(data):
    problems_found = Problems("fuzz.toml")
    config = build_config(data, "fuzz.toml", problems_found, env={})
    assert isinstance(config, Config)
    assert all(str(p).startswith("fuzz.toml: ") for p in problems_found.items)


# ---- --effective round trip ----

def assert_round_trip(tmp_path: Path, config: Config, env: dict[str, str] | None = None) -> str:
    text = effective_toml(config, header="effective")
    again = load_config(write(tmp_path, text, "effective.toml"), env=env or {})
    assert dataclasses.replace(again, path=config.path) == config
    return text


def test_effective_sample_round_trips(tmp_path):
    config = load_config(REPO / "sample.toml", env={})
    text = assert_round_trip(tmp_path, config)
    assert '[[routes]]\npool = "api"\npath_prefix = "/api"\n' in text
    assert '[pools.api.timeouts]\nconnect = "2s"\nresponse = "10s"\n' in text
    assert 'timeout = "500ms"' in text
    assert 'max_header_size = "64KiB"' in text
    assert "expect_status = [\"200-299\"]" in text


def test_effective_fills_in_every_default(tmp_path):
    text = assert_round_trip(tmp_path, load(tmp_path, BASE))
    assert text.startswith("# effective\n")
    for line in ['[listen]\naddress = "127.0.0.1:8080"', '[limits]\nheader_timeout = "10s"',
                 'algorithm = "round_robin"', '[pools.api.timeouts]\nconnect = "2s"\nresponse = "30s"',
                 'name = "127.0.0.1:9001"\nweight = 1\nbackup = false', 'max_body_size = 0']:
        assert line in text
    assert "[admin]" not in text and "[pools.api.health]" not in text   # absent means off


def test_effective_round_trips_every_key_and_hides_the_token(tmp_path):
    config = load(tmp_path, FULL + '[pools."odd.name"]\n[[pools."odd.name".backends]]\n'
                                  'url = "http://h:1"\n')
    effective = effective_toml(config)
    assert "s3cret" not in effective
    assert "# admin.token is set but not shown" in effective
    assert '[pools."odd.name".timeouts]' in effective
    # The token comes back from the environment, as the comment says.
    assert_round_trip(tmp_path, config, env={"LBCTL_ADMIN_TOKEN": "s3cret-admin-token-0123"})


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(connect=st.floats(min_value=1e-6, max_value=1e6), weight=st.floats(min_value=0.01, max_value=1000),
       size=st.integers(min_value=1, max_value=2**40))
def test_effective_round_trips_any_value(tmp_path, connect, weight, size):
    config = load(tmp_path, ROUTE + f'''
[limits]
max_body_size = {size}

[pools.api.timeouts]
connect = {connect!r}

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
weight = {weight!r}
''')
    assert_round_trip(tmp_path, config)


def test_nested_table_missing_a_required_key_is_a_problem_not_a_type_error():
    # No table has a required nested key yet (a future [listen.tls] with its cert will).
    from lbctl.config.kinds import Str
    from lbctl.config.schema import Section

    @dataclasses.dataclass(frozen=True)
    class Tls:
        cert: str

    @dataclasses.dataclass(frozen=True)
    class Outer:
        tls: Tls | None = None

    found = Problems("x.toml")
    read = Section(Outer, tls=Section(Tls, optional=True, cert=Str(required=True))).read(
        {"tls": {}}, "listen", found)
    assert [str(p) for p in found.items] == ["x.toml: listen.tls.cert: missing; expected a non-empty string"]
    assert read.bad == {"tls", "tls.cert"}
