"""``lbctl validate`` through click's runner and through the installed ``lbctl`` executable."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lbctl.cli import main
from lbctl.config import load_config

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample.toml"

BROKEN = '''
[[routes]]
pool = "apii"

[pools.api]
algorithm = "leastconn"

[[pools.api.backends]]
url = "http://127.0.0.1:9001"
wieght = 3
'''


def runner() -> CliRunner:
    # click < 8.2 mixes stderr into stdout unless told not to; 8.2+ always keeps them apart.
    try:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        return CliRunner()


def run(*args: str, env: dict[str, str] | None = None):
    return runner().invoke(main, list(args), env=env or {"LBCTL_ADMIN_TOKEN": ""})


def test_valid_config_prints_a_one_line_summary():
    result = run("validate", str(SAMPLE))
    assert result.exit_code == 0
    assert result.stdout == f"{SAMPLE}: OK (2 routes, 2 pools, 5 backends)\n"
    assert result.stderr == ""


def test_singular_counts(tmp_path):
    path = tmp_path / "one.toml"
    path.write_text('[[routes]]\npool = "a"\n[[pools.a.backends]]\nurl = "http://h:1"\n')
    assert run("validate", str(path)).stdout == f"{path}: OK (1 route, 1 pool, 1 backend)\n"


def test_invalid_config_prints_every_problem_on_stderr_and_exits_2(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    result = run("validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}: routes[0].pool: expected the name of a pool defined under [pools] (api), "
        f"found \"apii\"; did you mean 'api'?",
        f'{path}: pools.api.algorithm: expected one of "round_robin", "random", "weighted", '
        f'"least_conn", "p2c", "ewma", "consistent_hash", found "leastconn"; did you mean '
        f"'least_conn'?",
        f"{path}: pools.api.backends[0].wieght: unknown key; did you mean 'weight'?",
        f"{path}: invalid (3 problems)",
    ]


def test_syntax_error_shows_line_and_column(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_text('[listen]\naddress = 127.0.0.1:8080\n')
    result = run("validate", str(path))
    assert result.exit_code == 2
    # tomllib stops after "127.0.0.1" (a float followed by junk): the column points there.
    assert result.stderr.splitlines()[0].startswith(f"{path}: line 2, column 16: invalid TOML: ")


def test_missing_file(tmp_path):
    result = run("validate", str(tmp_path / "nope.toml"))
    assert result.exit_code == 2
    assert result.stderr == (f"{tmp_path / 'nope.toml'}: cannot read the config file: it does not exist\n"
                             f"{tmp_path / 'nope.toml'}: invalid (1 problem)\n")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_effective_prints_toml_that_loads_back_to_the_same_config(tmp_path):
    result = run("validate", "--effective", str(SAMPLE))
    assert result.exit_code == 0
    assert result.stdout.startswith(f"# {SAMPLE}: OK (2 routes, 2 pools, 5 backends)\n")
    assert 'response = "30s"' in result.stdout      # a default the sample does not write
    out = tmp_path / "effective.toml"
    out.write_text(result.stdout)
    again = load_config(out, env={})
    assert dataclasses.replace(again, path=str(SAMPLE)) == load_config(SAMPLE, env={})
    # ...and the effective file is itself valid through the CLI.
    assert run("validate", str(out)).exit_code == 0


def test_effective_on_an_invalid_config_prints_problems_only(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    result = run("validate", "--effective", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "wieght" in result.stderr


def test_admin_token_from_the_environment_is_used_and_not_printed(tmp_path):
    path = tmp_path / "public.toml"
    path.write_text(SAMPLE.read_text().replace('address = "127.0.0.1:9900"', 'address = "0.0.0.0:9900"'))
    assert run("validate", str(path)).exit_code == 2
    result = run("validate", "--effective", str(path), env={"LBCTL_ADMIN_TOKEN": "t0ken-0123456789abcdef"})
    assert result.exit_code == 0
    assert "t0ken" not in result.stdout
    assert "# admin.token is set but not shown" in result.stdout


def test_help_has_an_example():
    result = run("validate", "--help")
    assert result.exit_code == 0
    assert "lbctl validate sample.toml" in result.stdout
    assert "--effective" in result.stdout


def test_missing_argument_is_a_usage_error():
    result = run("validate")
    assert result.exit_code == 2
    assert "Missing argument 'CONFIG'" in result.stderr


# ---- the real executable ----

LBCTL = Path(sys.executable).parent / "lbctl"


def lbctl(*args: str) -> subprocess.CompletedProcess[str]:
    if not LBCTL.exists():
        pytest.skip(f"lbctl is not installed next to {sys.executable}")
    env = dict(os.environ)
    env.pop("LBCTL_ADMIN_TOKEN", None)
    # The installed entry point, running this checkout's code even if the environment's
    # editable install points at another one.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run([str(LBCTL), *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=60)


def test_installed_lbctl_validates_the_sample():
    result = lbctl("validate", "sample.toml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "sample.toml: OK (2 routes, 2 pools, 5 backends)\n"


def test_installed_lbctl_reports_a_broken_file_without_a_traceback(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN + 'weight = "three"\n')
    result = lbctl("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{path}: pools.api.backends[0].weight: expected a number from 0.01 to 1000, found \"three\"" in result.stderr
    assert result.stderr.endswith(f"{path}: invalid (4 problems)\n")


def test_installed_lbctl_reports_bad_toml_without_a_traceback(tmp_path):
    path = tmp_path / "syntax.toml"
    path.write_bytes(b"[[routes]\npool = \"a\"\n")
    result = lbctl("validate", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"{path}: line 1, column 9: invalid TOML: ")   # "]]" expected
