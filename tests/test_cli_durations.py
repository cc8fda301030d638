"""One rule for durations everywhere: a number is seconds, text has a unit.

The command-line half walks click's command tree, so a duration option added to any command
is tested here without anyone listing it; an option whose name says it is a time but whose
type is not ``Duration`` fails the walk. The config half walks the schema the same way and
loads one file that writes every duration key as quoted plain text ("31").
"""

from __future__ import annotations

import re
import subprocess

import click
import pytest

from lbctl.cli import main
from lbctl.cli.params import Duration
from lbctl.config import load_config
from lbctl.config import schema
from lbctl.config.kinds import Duration as DurationKind
from lbctl.config.schema import Section
from tests.process import ENV, LBCTL

# Option or config-key names that can only mean a time. A new option named like this must
# take a Duration, or this test says so.
TIME_LIKE = re.compile(r"timeout|interval|duration|latency|delay|period|leeway|decay|"
                       r"ttl|wait|backoff|^mean$|_time$|^per$|slow_start|grace|age")


def walk_commands(command: click.Command, path: tuple[str, ...] = ()):
    """(path, command) for every command under ``command``, groups included."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk_commands(sub, (*path, name))


def all_options():
    for path, command in walk_commands(main):
        for param in command.params:
            if isinstance(param, click.Option):
                yield path, command, param


def duration_options():
    return [(path, command, param) for path, command, param in all_options()
            if isinstance(param.type, Duration)]


def option_id(item) -> str:
    path, _, param = item
    return " ".join(path) + " " + param.opts[-1]


def parse(path, command: click.Command, option: click.Option, value: str) -> float:
    """Parse ``--option=value`` exactly as the command would, with placeholders for its
    required arguments; the command body does not run."""
    args = []
    for param in command.params:
        if isinstance(param, click.Argument) and param.required:
            args.append("1" if isinstance(param.type, (click.types.FloatParamType,
                                                       click.types.IntParamType)) else "x")
    ctx = command.make_context(" ".join(path), [*args, f"{option.opts[-1]}={value}"])
    return ctx.params[option.name]


def test_the_walk_finds_every_known_duration_option():
    found = {option_id(item) for item in duration_options()}
    assert {"check --timeout", "check --warn-latency", "check --crit-latency",
            "stats --interval", "simulate --duration", "simulate --mean",
            "demo --duration"} <= found


def test_no_time_option_escapes_the_duration_type():
    offenders = [option_id(item) for item in all_options()
                 if TIME_LIKE.search(item[2].name) and not isinstance(item[2].type, Duration)]
    assert offenders == []


@pytest.mark.parametrize("item", duration_options(), ids=option_id)
@pytest.mark.parametrize("text, seconds", [
    ("2", 2.0), ("2s", 2.0), ("150ms", 0.15), ("1m", 60.0), ("1.5", 1.5), ("1h30m", 5400.0),
])
def test_every_duration_option_takes_numbers_and_units(item, text, seconds, capsys):
    path, command, option = item
    assert parse(path, command, option, text) == pytest.approx(seconds)


@pytest.mark.parametrize("item", duration_options(), ids=option_id)
@pytest.mark.parametrize("text", ["2 parsecs", "-1", "1d", "", "s"])
def test_every_duration_option_refuses_nonsense_and_says_what_it_wants(item, text, capsys):
    path, command, option = item
    with pytest.raises(click.BadParameter) as info:
        parse(path, command, option, text)
    message = info.value.format_message()
    assert "150ms" in message and "number of seconds" in message and repr(text) in message


@pytest.mark.parametrize("item", duration_options(), ids=option_id)
def test_zero_is_refused_exactly_where_it_makes_no_sense(item, capsys):
    path, command, option = item
    if option.type.positive:
        with pytest.raises(click.BadParameter, match="above zero"):
            parse(path, command, option, "0")
    else:
        assert parse(path, command, option, "0") == 0.0


def test_demo_duration_zero_means_until_stopped_and_says_so():
    option = next(p for p in main.commands["demo"].params if p.name == "duration")
    assert not option.type.positive
    assert "0" in option.help and "Ctrl-C" in option.help


def test_check_timeout_as_a_plain_number_in_a_real_process(tmp_path):
    """The report's own example: `lbctl check lb.toml --timeout 2` was refused."""
    cfg = tmp_path / "lb.toml"
    cfg.write_text('[[routes]]\npool = "api"\n[pools.api]\n'
                   '[[pools.api.backends]]\nurl = "http://127.0.0.1:9"\n')
    proc = subprocess.run([LBCTL, "check", str(cfg), "--timeout", "2", "--warn-latency", "1",
                           "-q"], capture_output=True, text=True, env=ENV, timeout=30)
    # Port 9 (discard) is closed on loopback: the probe fails, and that is WARNING/CRITICAL,
    # not UNKNOWN (3), which is what a refused option would be.
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout.startswith("LBCTL CRITICAL - api 0/1 up")


# ---- the config file -------------------------------------------------------------------

def walk_durations(section: Section, where: str):
    for key, spec in section.fields.items():
        path = f"{where}.{key}" if where else key
        if isinstance(spec, Section):
            yield from walk_durations(spec, path)
        elif isinstance(spec, DurationKind):
            yield path, spec
        elif TIME_LIKE.search(key):
            yield path, spec        # named like a time but not a duration: the test fails


def schema_durations() -> dict[str, DurationKind]:
    found = {}
    roots = {"": schema.CONFIG, "routes[0]": schema.ROUTE, "pools.api": schema.POOL,
             "pools.api.backends[0]": schema.BACKEND, "keys.k": schema.KEY}
    for where, section in roots.items():
        found.update(walk_durations(section, where))
    return found


# Every duration key, written as quoted plain numbers: each value differs from its default
# and fits the cross-key rules (max_ejection_time >= ejection_time, leeway <= 60s).
EVERY_DURATION_QUOTED = {
    "limits.header_timeout": "11", "limits.keepalive_timeout": "61",
    "limits.body_timeout": "31", "limits.drain_timeout": "32",
    "routes[0].auth.leeway": "1.5", "routes[0].rate_limit.per": "2",
    "pools.api.slow_start": "3", "pools.api.ewma_decay": "4.5", "pools.api.idle_timeout": "16",
    "pools.api.timeouts.connect": "2.5", "pools.api.timeouts.response": "33",
    "pools.api.health.interval": "6", "pools.api.health.timeout": "0.25",
    "pools.api.outlier.ejection_time": "7", "pools.api.outlier.max_ejection_time": "301",
    "store.timeout": "0.2",
    "pools.api.discovery.interval": "12", "pools.api.discovery.timeout": "1.5",
}

CONFIG = """
[limits]
header_timeout = "${limits.header_timeout}"
keepalive_timeout = "${limits.keepalive_timeout}"
body_timeout = "${limits.body_timeout}"
drain_timeout = "${limits.drain_timeout}"

[store]
backend = "redis"
url = "redis://127.0.0.1:6379/0"
timeout = "${store.timeout}"

[[routes]]
pool = "api"
auth = { type = "jwt", algorithms = ["HS256"], secret_env = "LBCTL_TEST_SECRET", leeway = "${routes[0].auth.leeway}" }
rate_limit = { rate = 5, per = "${routes[0].rate_limit.per}" }

[pools.api]
slow_start = "${pools.api.slow_start}"
ewma_decay = "${pools.api.ewma_decay}"
idle_timeout = "${pools.api.idle_timeout}"
timeouts = { connect = "${pools.api.timeouts.connect}", response = "${pools.api.timeouts.response}" }
health = { interval = "${pools.api.health.interval}", timeout = "${pools.api.health.timeout}" }
outlier = { ejection_time = "${pools.api.outlier.ejection_time}", max_ejection_time = "${pools.api.outlier.max_ejection_time}" }
discovery = { dns = "api.internal:8080", interval = "${pools.api.discovery.interval}", timeout = "${pools.api.discovery.timeout}" }

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
"""


def resolve(config, path: str):
    value = config
    for part in path.split("."):
        match = re.fullmatch(r"(\w+)\[(\d+)\]", part)
        if match:
            value = getattr(value, match.group(1))[int(match.group(2))]
        elif isinstance(value, dict) or hasattr(value, "keys") and not hasattr(value, part):
            value = value[part]
        else:
            value = getattr(value, part)
    return value


def test_every_config_duration_is_a_duration_kind():
    found = schema_durations()
    assert [path for path, spec in found.items() if not isinstance(spec, DurationKind)] == []
    assert set(found) == set(EVERY_DURATION_QUOTED), "write the new key into EVERY_DURATION_QUOTED"


@pytest.mark.parametrize("path", sorted(schema_durations()))
@pytest.mark.parametrize("value, seconds", [("2", 2.0), (2, 2.0), ("2s", 2.0), ("2000ms", 2.0)])
def test_every_config_duration_kind_reads_numbers_and_units(path, value, seconds):
    assert schema_durations()[path].parse(value) == seconds


def test_a_config_with_every_duration_quoted_loads_as_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("LBCTL_TEST_SECRET", "s" * 32)
    cfg = tmp_path / "lb.toml"
    cfg.write_text(re.sub(r"\$\{([^}]+)\}", lambda m: EVERY_DURATION_QUOTED[m.group(1)], CONFIG))
    config = load_config(str(cfg))
    for path, text in EVERY_DURATION_QUOTED.items():
        assert resolve(config, path) == float(text), path


def test_a_quoted_duration_without_a_unit_is_fine_but_a_word_is_not(tmp_path):
    cfg = tmp_path / "lb.toml"
    cfg.write_text('[[routes]]\npool = "api"\n[pools.api.timeouts]\nconnect = "2 secs"\n'
                   '[[pools.api.backends]]\nurl = "http://127.0.0.1:9001"\n')
    proc = subprocess.run([LBCTL, "validate", str(cfg)], capture_output=True, text=True,
                          env=ENV, timeout=30)
    assert proc.returncode == 2
    assert 'pools.api.timeouts.connect: expected a duration such as "150ms", "2s", "1m" or a ' \
           'number of seconds' in proc.stderr
