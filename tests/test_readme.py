"""The README's two commands are the ones CI and new users run; keep them honest."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text)[:2]


def test_readme_opens_with_install_and_run_then_test():
    install_run, run_tests = readme_commands()
    assert install_run.startswith("pip install . && lbctl demo")
    assert "pytest" in run_tests


def test_ci_runs_exactly_the_readme_test_command():
    _, run_tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci


def test_packaged_demo_config_is_the_sample():
    assert (ROOT / "lbctl" / "demo" / "sample.toml").read_text() == \
        (ROOT / "sample.toml").read_text()
