"""``lbctl completion``: the script a real shell sources completes real commands and options.

bash runs the generated completion function exactly as it would on Tab (COMP_WORDS and
COMP_CWORD set, the function called, COMPREPLY read), and the function calls the installed
``lbctl`` back. zsh and fish are checked for syntax when they are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.process import ENV, LBCTL

PATH_ENV = {**ENV, "PATH": str(Path(LBCTL).parent) + os.pathsep + ENV.get("PATH", "")}


def script(shell: str) -> str:
    proc = subprocess.run([LBCTL, "completion", shell], capture_output=True, text=True,
                          env=PATH_ENV, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bash_complete(words: list[str]) -> list[str]:
    """What bash offers after ``words`` (the last one being completed)."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    program = (f'{script("bash")}\n'
               f'COMP_WORDS=({" ".join(repr(w) for w in words)})\n'
               f'COMP_CWORD={len(words) - 1}\n'
               '_lbctl_completion lbctl\n'
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    proc = subprocess.run([bash, "--norc", "--noprofile"], input=program, capture_output=True,
                          text=True, env=PATH_ENV, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_completes_a_subcommand():
    assert bash_complete(["lbctl", "ser"]) == ["serve"]
    assert set(bash_complete(["lbctl", "re"])) == {"reload"}


def test_bash_completes_every_command_from_nothing():
    offered = set(bash_complete(["lbctl", ""]))
    assert {"demo", "serve", "reload", "validate", "check", "simulate", "stats", "backend",
            "completion"} <= offered


def test_bash_completes_options_and_choices():
    assert "--timeout" in bash_complete(["lbctl", "check", "--ti"])
    assert bash_complete(["lbctl", "completion", ""]) == ["bash", "zsh", "fish"]
    assert set(bash_complete(["lbctl", "backend", "d"])) == {"disable", "drain"}


def test_config_arguments_complete_as_file_names():
    """Click answers "file" for every config argument, and the script turns that into the
    shell's own file-name completion."""
    for words in (["lbctl", "validate", ""], ["lbctl", "serve", ""], ["lbctl", "check", ""],
                  ["lbctl", "stats", "--config", ""], ["lbctl", "reload", ""]):
        env = {**PATH_ENV, "_LBCTL_COMPLETE": "bash_complete", "COMP_WORDS": " ".join(words),
               "COMP_CWORD": str(len(words) - 1)}
        proc = subprocess.run([LBCTL], capture_output=True, text=True, env=env, timeout=30)
        assert proc.stdout.strip() == "file,", (words, proc.stdout, proc.stderr)


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_parse(shell):
    text = script(shell)
    assert "_LBCTL_COMPLETE" in text
    binary = shutil.which(shell)
    if binary is None:
        pytest.skip(f"{shell} is not installed")
    proc = subprocess.run([binary, "-n"], input=text, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_unknown_shell_is_a_usage_error():
    proc = subprocess.run([LBCTL, "completion", "tcsh"], capture_output=True, text=True,
                          env=PATH_ENV, timeout=30)
    assert proc.returncode == 2
    assert "'tcsh' is not one of 'bash', 'zsh', 'fish'" in proc.stderr
