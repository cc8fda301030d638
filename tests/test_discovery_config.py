"""``[pools.X.discovery]`` in the config file: checked without resolving anything."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lbctl.config.effective import effective_toml
from lbctl.config.loader import ConfigError, load_config, summary
from lbctl.config.model import Address

from tests.process import ENV, LBCTL

ROUTE = '[[routes]]\npool = "api"\n\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "lb.toml"
    path.write_text(ROUTE + text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return [f"{p.where}: {p.message}" for p in info.value.problems]


def discovery(tmp_path: Path, body: str, extra: str = ""):
    return load_config(write(tmp_path, f"[pools.api.discovery]\n{body}\n{extra}")) \
        .pools["api"].discovery


def test_dns_with_defaults(tmp_path):
    d = discovery(tmp_path, 'dns = "api.internal:8080"')
    assert d.dns == Address("api.internal", 8080)
    assert (d.srv, d.file, d.resolver, d.scheme) == (None, None, None, None)
    assert (d.interval, d.timeout) == (10.0, 2.0)


def test_srv_with_every_key(tmp_path):
    d = discovery(tmp_path, 'srv = "_http._tcp.api.internal."\ninterval = "30s"\n'
                            'timeout = "500ms"\nresolver = "[::1]:5353"\nscheme = "https"')
    assert d.srv == "_http._tcp.api.internal"         # the trailing dot is implied
    assert (d.interval, d.timeout, d.scheme) == (30.0, 0.5, "https")
    assert d.resolver == Address("::1", 5353)


def test_resolver_port_defaults_to_53(tmp_path):
    assert discovery(tmp_path, 'dns = "a.b:80"\nresolver = "10.0.0.2"').resolver == \
        Address("10.0.0.2", 53)


def test_file_is_relative_to_the_config_file(tmp_path):
    d = discovery(tmp_path, 'file = "api.json"')
    assert d.file == str(tmp_path / "api.json")


def test_the_pool_needs_no_static_backends_and_may_have_both(tmp_path):
    config = load_config(write(tmp_path, '[pools.api.discovery]\ndns = "a.b:80"\n'
                                         '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n'))
    assert [b.name for b in config.pools["api"].backends] == ["127.0.0.1:9001"]
    assert summary(config) == "1 route, 1 pool, 1 backend, 1 pool with discovery (not resolved)"


def test_a_source_is_required(tmp_path):
    assert problems(tmp_path, '[pools.api.discovery]\ninterval = "5s"\n') == [
        "pools.api.discovery: missing; expected a source: one of dns, srv or file"]


def test_one_source_per_pool(tmp_path):
    assert problems(tmp_path, '[pools.api.discovery]\ndns = "a.b:80"\nfile = "x.json"\n') == [
        "pools.api.discovery.file: expected one source per pool, found both dns and file"]


@pytest.mark.parametrize("key", ["resolver", "scheme"])
def test_dns_only_keys_with_a_file(tmp_path, key):
    value = '"127.0.0.1"' if key == "resolver" else '"https"'
    [problem] = problems(tmp_path, f'[pools.api.discovery]\nfile = "x.json"\n{key} = {value}\n')
    assert problem.startswith(f"pools.api.discovery.{key}: expected no {key} with file")


@pytest.mark.parametrize("line, expected", [
    ('dns = "api.internal"', 'pools.api.discovery.dns: expected a DNS name and a port like '
                             '"api.internal:8080", found "api.internal"'),
    ('dns = "10.0.0.1:80"', 'pools.api.discovery.dns: expected a DNS name and a port like '
                            '"api.internal:8080", found "10.0.0.1:80"; an address needs no '
                            'discovery: list it under backends instead'),
    ('dns = "api.internal:0"', None),
    ('dns = "bad name:80"', None),
    ('srv = "_http._tcp..internal"', 'pools.api.discovery.srv: expected a DNS name like '
                                     '"_http._tcp.api.internal", found "_http._tcp..internal"'),
    ('srv = 5', None),
    ('file = ""', None),
    ('dns = "a.b:80"\nresolver = "ns.example:53"', None),
    ('dns = "a.b:80"\nresolver = "127.0.0.1:99999"', None),
    ('dns = "a.b:80"\nscheme = "ftp"', None),
    ('dns = "a.b:80"\ninterval = "0s"', None),
    ('dns = "a.b:80"\ntimeout = "-1s"', None),
])
def test_bad_values_name_the_key(tmp_path, line, expected):
    [problem] = problems(tmp_path, f"[pools.api.discovery]\n{line}\n")
    key = line.splitlines()[-1].split(" =")[0]
    assert problem.startswith(f"pools.api.discovery.{key}: expected ")
    if expected is not None:
        assert problem == expected


def test_unknown_key_gets_a_suggestion(tmp_path):
    assert problems(tmp_path, '[pools.api.discovery]\ndns = "a.b:80"\nintervall = "5s"\n') == [
        "pools.api.discovery.intervall: unknown key; did you mean 'interval'?"]


def test_without_discovery_a_pool_still_needs_backends(tmp_path):
    [problem] = problems(tmp_path, "[pools.api]\n")
    assert problem.endswith("or a [pools.api.discovery] table")


@pytest.mark.parametrize("body", [
    'dns = "api.internal:8080"\nresolver = "127.0.0.1:5353"\nscheme = "https"\ninterval = "1m"',
    'srv = "_http._tcp.api.internal"\ntimeout = "250ms"',
    'file = "backends.json"\ninterval = "2s"',
])
def test_effective_round_trips(tmp_path, body):
    config = load_config(write(tmp_path, f"[pools.api.discovery]\n{body}\n"))
    again = tmp_path / "again.toml"
    again.write_text(effective_toml(config))
    assert load_config(again).pools["api"] == config.pools["api"]


def test_validate_does_not_resolve(tmp_path):
    # A name nothing can resolve, a file that does not exist, a nameserver nobody runs: all
    # are for serve to find out; validate checks the keys and says so.
    path = write(tmp_path, '[pools.api.discovery]\ndns = "nothing.invalid:80"\n'
                           'resolver = "127.0.0.1:9"\n\n[pools.web.discovery]\n'
                           'file = "missing.json"\n')
    path.write_text(path.read_text().replace('pool = "api"', 'pool = "api"\n\n[[routes]]\n'
                                             'pool = "web"\npath_prefix = "/web"', 1))
    done = subprocess.run([LBCTL, "validate", str(path)], capture_output=True, text=True,
                          env=ENV, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == \
        f"{path}: OK (2 routes, 2 pools, 0 backends, 2 pools with discovery (not resolved))"


def test_simulating_a_discovered_pool_says_what_to_do(tmp_path):
    from lbctl.errors import UserError
    from lbctl.simulate.scenario import pool_from_config
    path = write(tmp_path, '[pools.api.discovery]\ndns = "api.internal:80"\n')
    with pytest.raises(UserError) as info:
        pool_from_config(str(path), "api")
    assert "lists no backends (they come from its [discovery])" in str(info.value)
