"""The README's commands are the ones CI and new users run; keep them, and every example in
the README and in ``--help``, honest."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from lbctl.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_commands() -> list[str]:
    return re.findall(r"```sh\n(.+?)\n```", README, re.S)[:2]


def test_readme_opens_with_a_virtualenv_install_and_the_demo_then_the_tests():
    install_run, run_tests = readme_commands()
    lines = install_run.splitlines()
    assert lines[0].startswith("cd ")                            # into the clone
    assert lines[1] == "python3 -m venv .venv && . .venv/bin/activate"
    assert lines[2].startswith("pip install . && lbctl demo")
    assert "pytest" in run_tests and "\n" not in run_tests
    assert "Python 3.10 or later" in README


def test_ci_runs_exactly_the_readme_test_command():
    _, run_tests = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert run_tests in ci


def test_packaged_demo_config_is_the_sample():
    assert (ROOT / "lbctl" / "demo" / "sample.toml").read_text() == \
        (ROOT / "sample.toml").read_text()


def help_texts() -> dict[str, str]:
    """Every command's help (docstring and options), by command path."""
    out = {}

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        ctx = click.Context(command, info_name=" ".join(("lbctl", *path)))
        out[" ".join(path)] = command.get_help(ctx)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, (*path, name))
    walk(main, ())
    return out


# Paths a text may name that are the user's own, not the repository's.
USER_FILES = re.compile(r"^(lb|broken|on|off|scenario|effective|A|B)\.toml$|"
                        r"^(results|events)\.\w+$|^(cert|key|jwt|ca|internal-ca|other-ca|"
                        r"backend-ca|samples)\.(pem|txt)$|^backends\.json$")


def tracked_files() -> tuple[set[str], set[str]]:
    """Every file of the repository (relative paths), and their base names."""
    paths = {str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
             if p.is_file() and not any(part.startswith(".") and part not in (".ci",)
                                        for part in p.relative_to(ROOT).parts)}
    return paths, {Path(p).name for p in paths}


@pytest.mark.parametrize("where", ["README.md", "--help"])
def test_no_reference_to_a_file_that_is_not_in_the_repository(where):
    texts = [README] if where == "README.md" else list(help_texts().values())
    paths, names = tracked_files()
    missing = set()
    for text in texts:
        for name in re.findall(r"(?<![\w/.$~-])((?:[\w-]+/)*[\w-]+\.(?:md|toml|py|yml|json|"
                               r"service))\b", text):
            if USER_FILES.match(name):
                continue
            if "/" in name and name not in paths and f"lbctl/{name}" not in paths:
                missing.add(name)
            elif "/" not in name and name not in names:
                missing.add(name)
    assert missing == set()


def shell_lines(text: str) -> list[str]:
    """Lines of the README's shell and console blocks, continuation lines joined."""
    lines = []
    for block in re.findall(r"```(?:sh|console)\n(.*?)```", text, re.S):
        lines += block.replace("\\\n", " ").splitlines()
    return lines


def help_example_lines(text: str) -> list[str]:
    """The lines of a --help text's examples (from "Example:" to "Options:"), continuation
    lines joined."""
    lines, inside = [], False
    for line in text.replace("\\\n", " ").splitlines():
        if re.match(r"\s*Examples?:", line):
            inside = True
        elif line.startswith(("Options:", "Commands:")):
            inside = False
        elif inside:
            lines.append(line)
    return lines


def lbctl_commands(lines: list[str]) -> list[str]:
    """The ``lbctl ...`` command in each line: prompts, crontab times, comments and shell
    plumbing cut off."""
    out = []
    for raw in lines:
        line = raw.strip()
        line = re.sub(r"^(\$ |(\S+ ){5}\s*)(?=lbctl )", "", line)    # a prompt; a crontab entry
        if not line.startswith("lbctl "):
            continue
        line = re.split(r"\s+#", line)[0]
        line = re.split(r"\s(?:\||>|2>|&&|;)\s?", line)[0]
        out.append(line.strip())
    return out


def parse(line: str) -> None:
    argv = shlex.split(line)[1:]
    command: click.Command = main
    name = "lbctl"
    while isinstance(command, click.Group):
        assert argv and argv[0] in command.commands, f"{line!r}: no such command"
        name, argv = argv[0], argv[1:]
        command = command.commands[name]
    command.make_context(name, argv)


@pytest.mark.parametrize("where", ["README.md", "--help"])
def test_every_lbctl_example_parses_against_the_real_commands(where, capsys):
    if where == "README.md":
        lines = lbctl_commands(shell_lines(README))
    else:
        lines = [line for text in help_texts().values()
                 for line in lbctl_commands(help_example_lines(text))]
    assert len(lines) >= 15
    for line in lines:
        try:
            parse(line)
        except click.UsageError as exc:
            raise AssertionError(f"{line!r}: {exc.format_message()}") from None


def test_nothing_tells_users_to_find_lbctl_with_pidof():
    for text in (README, *help_texts().values(),
                 *(p.read_text() for p in (ROOT / "contrib").rglob("*") if p.is_file())):
        assert "pidof lbctl)" not in text and "pidof -s lbctl" not in text
