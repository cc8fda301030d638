"""``[store]`` and the rate limits' names and headers in the config: checked without any
network, every problem with its key path, a password never in a message or in
``validate --effective``."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
from pathlib import Path

import pytest

from lbctl.config import ConfigError, load_config
from lbctl.config.effective import effective_toml
from tests.process import ENV, LBCTL

POOL = '''
[[routes]]
pool = "api"
{route}

[pools.api]
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
'''
SECRET = "pa55-w0rd-in-the-url"


def write(tmp_path: Path, text: str, name: str = "lb.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_text(store: str, route: str = "") -> str:
    return f"[store]\n{store}\n" + POOL.format(route=route)


def load(tmp_path: Path, store: str, route: str = "", env=None):
    return load_config(write(tmp_path, config_text(store, route)), env=env or {})


def problems(tmp_path: Path, store: str, route: str = "", env=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, store, route, env)
    prefix = f"{tmp_path / 'lb.toml'}: "
    return [str(p)[len(prefix):] for p in info.value.problems]


def test_default_is_the_local_store(tmp_path):
    config = load_config(write(tmp_path, POOL.format(route="")), env={})
    assert config.store.backend == "local"
    text = effective_toml(config)
    assert '[store]\nbackend = "local"\n' in text and "on_error" not in text


def test_redis_store_with_every_key(tmp_path):
    store = load(tmp_path, 'backend = "redis"\nurl = "redis://cache.internal/2"\n'
                           'password_env = "LB_PW"\ntimeout = "20ms"\non_error = "closed"\n'
                           'max_connections = 4', env={"LB_PW": "from-env"}).store
    assert (store.url, store.password, store.timeout, store.on_error, store.max_connections) == \
        ("redis://cache.internal:6379/2", "from-env", 0.02, "closed", 4)
    assert "from-env" not in repr(store)


@pytest.mark.parametrize("url, shown", [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://[::1]/3", "redis://[::1]:6379/3"),
    ("rediss://user@cache:6380", "rediss://user@cache:6380/0"),
    ("unix:///run/redis/redis.sock", "unix:///run/redis/redis.sock"),
    ("unix:///run/redis/redis.sock?db=5", "unix:///run/redis/redis.sock?db=5"),
])
def test_url_shapes(tmp_path, url, shown):
    assert load(tmp_path, f'backend = "redis"\nurl = "{url}"').store.url == shown


@pytest.mark.parametrize("url, hint", [
    ("127.0.0.1:6379", "add the scheme"),
    ("http://127.0.0.1:6379", None),
    ("redis://127.0.0.1:6379/zero", "the path is the database number"),
    ("redis://127.0.0.1:6379/0?timeout=1", "the database number goes in the path"),
    ("redis://127.0.0.1:99999/0", None),
    ("redis:///0", None),
    ("unix://run/redis.sock", "a socket path is absolute"),
    ("unix:///run/redis.sock?timeout=2", 'the only query a unix:// URL takes is "?db=N"'),
])
def test_bad_urls_name_the_key_and_the_shape(tmp_path, url, hint):
    [message] = problems(tmp_path, f'backend = "redis"\nurl = "{url}"')
    assert message.startswith("store.url: expected a Redis URL like ")
    if hint:
        assert hint in message


def test_a_bad_url_never_shows_its_password(tmp_path):
    [message] = problems(tmp_path, f'backend = "redis"\nurl = "redis://u:{SECRET}@h:6379/x"')
    assert SECRET not in message and 'found "redis://***@h:6379/x"' in message


def test_redis_needs_a_url_and_local_takes_no_redis_keys(tmp_path):
    assert problems(tmp_path, 'backend = "redis"') == [
        'store.url: missing; expected a Redis URL like "redis://127.0.0.1:6379/0" (backend = "redis")']
    found = problems(tmp_path, f'url = "redis://u:{SECRET}@h/0"\non_error = "open"')
    assert found == ['store.url: expected no url with backend = "local" (it only applies to '
                     'backend = "redis"), found a URL',
                     'store.on_error: expected no on_error with backend = "local" (it only '
                     'applies to backend = "redis"), found "open"']


def test_on_error_and_backend_are_words_from_a_list(tmp_path):
    found = problems(tmp_path, 'backend = "memcached"\non_error = "fail"')
    assert found[0].startswith('store.backend: expected one of "local", "redis", found "memcached"')
    assert found[1] == 'store.on_error: expected one of "local", "open", "closed", found "fail"'


def test_password_sources(tmp_path):
    url = f'backend = "redis"\nurl = "redis://:{SECRET}@h/0"\n'
    assert load(tmp_path, url).store.password == SECRET
    assert problems(tmp_path, url + 'password_env = "LB_PW"', env={"LB_PW": "x"}) == [
        "store.password_env: expected either a password in store.url or password_env, found both"]
    assert problems(tmp_path, 'backend = "redis"\nurl = "redis://h/0"\npassword_env = "LB_PW"') == [
        "store.password_env: expected the environment variable LB_PW to be set to the store's "
        "password, found it unset"]


def test_ca_only_for_rediss_and_it_must_load(tmp_path):
    found = problems(tmp_path, 'backend = "redis"\nurl = "redis://h/0"\nca = "ca.pem"')
    assert found == ['store.ca: expected no ca for a redis:// store (it only applies to '
                     'rediss://), found "ca.pem"']
    (tmp_path / "ca.pem").write_text("not a certificate")
    [message] = problems(tmp_path, 'backend = "redis"\nurl = "rediss://h/0"\nca = "ca.pem"')
    assert message.startswith(f"store.ca: cannot load {tmp_path / 'ca.pem'} as a PEM CA bundle")


def test_effective_hides_a_url_password_and_keeps_password_env(tmp_path):
    config = load(tmp_path, f'backend = "redis"\nurl = "redis://:{SECRET}@h/0"')
    text = effective_toml(config)
    assert SECRET not in text and "# store.url had a password, not shown" in text
    assert 'url = "redis://h:6379/0"' in text
    env_config = load(tmp_path, 'backend = "redis"\nurl = "redis://h/0"\npassword_env = "LB_PW"',
                      env={"LB_PW": SECRET})
    text = effective_toml(env_config)
    assert SECRET not in text and 'password_env = "LB_PW"' in text
    again = load_config(write(tmp_path, text, "effective.toml"), env={"LB_PW": SECRET})
    assert dataclasses.replace(again, path=env_config.path) == env_config


def test_validate_does_not_connect(tmp_path):
    # A port nothing listens on, and one that would hang: validate answers at once either way.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    path = write(tmp_path, config_text(f'backend = "redis"\nurl = "redis://127.0.0.1:{port}/0"\n'
                                       'on_error = "closed"'))
    done = subprocess.run([LBCTL, "validate", str(path)], capture_output=True, text=True,
                          env=ENV, timeout=60)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK (1 route, 1 pool, 1 backend)")


# ---- rate limit names and headers ----

def test_limit_names_default_to_host_and_path(tmp_path):
    config = load_config(write(tmp_path, '''
[[routes]]
host = "api.example.com"
path_prefix = "/v1:x"
pool = "api"
rate_limit = { rate = 1 }

[[routes]]
pool = "api"
rate_limit = { rate = 1, name = "everything", headers = "both" }

[pools.api]
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
'''), env={})
    assert [r.rate_limit.name for r in config.routes] == ["api.example.com/v1%3Ax", "everything"]
    assert [r.rate_limit.headers for r in config.routes] == ["ietf", "both"]


def test_routes_share_a_name_only_with_the_same_limit(tmp_path):
    text = '''
[[routes]]
path_prefix = "/a"
pool = "api"
rate_limit = { rate = 5, name = "shared" }

[[routes]]
path_prefix = "/b"
pool = "api"
rate_limit = { rate = 5, name = "shared", headers = "legacy" }

[[routes]]
path_prefix = "/c"
pool = "api"
rate_limit = { rate = 6, name = "shared" }

[pools.api]
[[pools.api.backends]]
url = "http://127.0.0.1:9001"
'''
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    assert [p.where + ": " + p.message for p in info.value.problems] == [
        'routes[2].rate_limit.name: expected a name no other limit uses, or the same rate, per, '
        'burst and key as routes[0].rate_limit, found "shared"']


@pytest.mark.parametrize("value", ['"a b"', '"a:b"', '"quo\\"te"', '""', '"é"'])
def test_bad_limit_names(tmp_path, value):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, POOL.format(route=f"rate_limit = {{ rate = 1, name = {value} }}")),
                    env={})
    [problem] = info.value.problems
    assert problem.where == "routes[0].rate_limit.name"


def test_rates_beyond_a_million_a_second_are_refused(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, POOL.format(route='rate_limit = { rate = 2000000 }')), env={})
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [
        "routes[0].rate_limit.rate: expected at most 1,000,000 per second (rate / per), "
        "found 2,000,000 per second"]
    load_config(write(tmp_path, POOL.format(route='rate_limit = { rate = 60000000, per = "1m" }')),
                env={})
