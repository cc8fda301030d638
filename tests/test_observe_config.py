"""The observability keys: [admin] metrics, [log] access/format, pool explain."""

from __future__ import annotations

import dataclasses

import pytest

from lbctl.config import ConfigError, load_config
from lbctl.config.effective import effective_toml

BASE = '''
[listen]
address = "127.0.0.1:8080"

[[routes]]
pool = "p"

[pools.p]
{pool}

[[pools.p.backends]]
url = "http://127.0.0.1:9001"
'''


def write(tmp_path, extra: str = "", pool: str = "", name: str = "lb.toml"):
    path = tmp_path / name
    path.write_text(extra + BASE.format(pool=pool))
    return path


def test_defaults_metrics_on_access_log_off_explain_off(tmp_path):
    config = load_config(write(tmp_path, '[admin]\naddress = "127.0.0.1:9900"\n'), env={})
    assert config.admin.metrics is True
    assert (config.log.access, config.log.format) == ("off", "json")
    assert config.pools["p"].explain is False


def test_keys_are_read_and_a_relative_access_log_is_next_to_the_config(tmp_path):
    text = '[admin]\nmetrics = false\n\n[log]\naccess = "logs/access.log"\nformat = "combined"\n'
    config = load_config(write(tmp_path, text, pool="explain = true"), env={})
    assert config.admin.metrics is False
    assert config.log.access == str(tmp_path / "logs" / "access.log")
    assert config.log.format == "combined"
    assert config.pools["p"].explain is True
    (tmp_path / "effective.toml").write_text(effective_toml(config))
    again = load_config(tmp_path / "effective.toml", env={})
    assert dataclasses.replace(again, path=config.path) == config


@pytest.mark.parametrize("text, where, expected", [
    ('[log]\nformat = "apache"\n', "log.format", 'one of "json", "combined"'),
    ('[log]\naccess = ""\n', "log.access", 'a path to a file, or "stdout" or "off"'),
    ('[log]\naccess = "a\\nb"\n', "log.access", "a path"),
    ('[log]\nacess = "stdout"\n', "log.acess", "access"),
    ('[admin]\nmetrics = "yes"\n', "admin.metrics", "true or false"),
])
def test_bad_values_name_the_key(tmp_path, text, where, expected):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    message = str(info.value)
    assert where in message and expected in message, message


def test_stdout_and_off_are_not_paths(tmp_path):
    config = load_config(write(tmp_path, '[log]\naccess = "stdout"\n'), env={})
    assert config.log.access == "stdout"
