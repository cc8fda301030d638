"""The ops kit in ``contrib/`` and the ``Dockerfile``, checked by the tools that read them.

* Prometheus rules: ``promtool check rules`` and ``promtool test rules`` (Debian's
  ``prometheus`` package, installed by ``.ci/run``); the Grafana dashboard's queries are
  checked by promtool too, as recording rules.
* Every metric and label the rules and the dashboard use exists in the ``/metrics`` of a
  real ``lbctl serve`` that has seen traffic, a health flip and an ejection.
* The systemd unit: ``systemd-analyze verify`` (where systemd is installed) with no warning.
* The Dockerfile (no container engine runs here): parsed, and every file it copies, every
  lbctl command it runs and the user it runs as checked against the project.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp
import click
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lbctl.cli import main

ROOT = Path(__file__).resolve().parent.parent
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "contrib" / "prometheus" / "alerts.test.yml"
DASHBOARD = ROOT / "contrib" / "grafana" / "lbctl.json"
UNIT = ROOT / "contrib" / "systemd" / "lbctl.service"
DOCKERFILE = ROOT / "Dockerfile"

# Labels Prometheus adds to every scraped series; "le" is a histogram's bucket bound.
SCRAPE_LABELS = {"instance", "job"}


def missing(reason: str) -> None:
    """A program .ci/run installs is absent: a failure in CI, a skip with the reason elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        missing("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return path


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


# ---- Prometheus rules and the Grafana dashboard -------------------------------------------

def alert_exprs() -> list[str]:
    """Each rule's expr (one line, or a ``|`` block), read without a YAML library."""
    exprs, lines = [], ALERTS.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"(\s*)expr:\s*(.*)$", line)
        if not match:
            continue
        if match.group(2) not in ("|", ">"):
            exprs.append(match.group(2))
            continue
        block, indent = [], len(match.group(1))
        for follow in lines[i + 1:]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            block.append(follow.strip())
        exprs.append(" ".join(block))
    return exprs


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(re.fullmatch(r"label_values\((.*), \w+\)", var["definition"]).group(1))
    return exprs


def concrete(expr: str) -> str:
    """A dashboard query as Prometheus would get it from Grafana."""
    return expr.replace("$__rate_interval", "5m").replace("$instance", ".*") \
        .replace("$pool", ".*")


def test_promtool_checks_the_alert_rules():
    proc = run(promtool(), "check", "rules", str(ALERTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


def test_the_alerts_fire_when_they_should_and_only_then():
    proc = run(promtool(), "test", "rules", ALERT_TESTS.name, cwd=ALERT_TESTS.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_alerts_cover_what_operators_page_on():
    names = re.findall(r"- alert: (\w+)", ALERTS.read_text())
    assert {"LbctlBackendDown", "LbctlHighErrorRate", "LbctlHighLatencyP99",
            "LbctlBackendEjections"} <= set(names)


def test_every_dashboard_query_is_valid_promql(tmp_path):
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, expr in enumerate(dashboard_exprs()):
        rules += [f"      - record: dashboard:query_{i}", f"        expr: {json.dumps(concrete(expr))}"]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text("\n".join(rules) + "\n")
    proc = run(promtool(), "check", "rules", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_dashboard_is_importable_json_with_a_sane_layout():
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] == "lbctl" and doc["title"] == "lbctl"
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for p in doc["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        assert p["targets"], p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"])


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric, label names matched) for each lbctl metric the expression reads."""
    found = []
    for match in re.finditer(r"\b(lbctl_[a-z0-9_]+)(\{([^}]*)\})?", expr):
        labels = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", match.group(3) or ""))
        found.append((match.group(1), labels))
    return found


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in re.findall(r"\bby \(([^)]*)\)", expr)
            for label in group.split(",")}


@pytest.fixture
async def scraped(backends, tmp_path, free_port, serve_process):
    """The samples of a real serve's /metrics after traffic, a health flip and an ejection:
    {sample name: set of label names}."""
    good = await backends.start("good")
    dead = free_port()                       # nothing listens here
    port, admin = free_port(), free_port()
    path = tmp_path / "lb.toml"
    path.write_text(
        f'[listen]\naddress = "127.0.0.1:{port}"\n[admin]\naddress = "127.0.0.1:{admin}"\n'
        '[[routes]]\npath_prefix = "/api"\npool = "api"\n[[routes]]\npool = "web"\n'
        '[pools.api]\nretries = 1\n'
        '[pools.api.outlier]\nconsecutive_failures = 1\n'
        f'[[pools.api.backends]]\nurl = "{good.url}"\nname = "good"\n'
        f'[[pools.api.backends]]\nurl = "http://127.0.0.1:{dead}"\nname = "dead"\n'
        '[pools.web.health]\ninterval = "200ms"\nfall = 1\n'
        f'[[pools.web.backends]]\nurl = "{good.url}"\nname = "good"\n'
        f'[[pools.web.backends]]\nurl = "http://127.0.0.1:{dead}"\nname = "dead"\n')
    proc = await serve_process("serve", str(path))
    await proc.wait_for_log("listening on")
    async with aiohttp.ClientSession() as session:
        for target in ("/api/x", "/api/y", "/web"):
            async with session.get(f"http://127.0.0.1:{port}{target}") as resp:
                await resp.read()
        await proc.wait_for_log(r"pool api: backend dead EJECTED")
        await proc.wait_for_log(r"pool web: backend dead is DOWN")
        async with session.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            text = await resp.text()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
async def test_every_metric_and_label_used_exists_in_a_real_scrape(scraped, source):
    exprs = alert_exprs() if source == "alerts" else dashboard_exprs()
    assert exprs
    used = 0
    for expr in exprs:
        for metric, labels in selectors(expr):
            used += 1
            assert metric in scraped, f"{metric} (in {expr!r}) is not in /metrics"
            assert labels <= scraped[metric] | SCRAPE_LABELS, (metric, labels, scraped[metric])
        known = set().union(*(scraped.get(m, set()) for m, _ in selectors(expr)))
        assert grouping_labels(expr) <= known | SCRAPE_LABELS, expr
    assert used >= 6


# ---- systemd -----------------------------------------------------------------------------

def unit_for_this_machine(tmp_path: Path) -> Path:
    """The unit with the installed lbctl in place of /opt/lbctl/bin/lbctl."""
    lbctl = str(Path(sys.executable).parent / "lbctl")
    path = tmp_path / "lbctl.service"
    path.write_text(UNIT.read_text().replace("/opt/lbctl/bin/lbctl", lbctl))
    return path


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_analyze_verifies_the_unit_without_a_warning(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    proc = run(tool, "verify", str(unit_for_this_machine(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_the_unit_is_type_notify_and_validates_before_start_and_reload():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert "lbctl validate /etc/lbctl/lb.toml" in s["ExecStartPre"][0]
    assert " reload /etc/lbctl/lb.toml" in s["ExecReload"][0]
    pid_file = s["PIDFile"][0]
    assert f"--pid-file {pid_file}" in s["ExecStart"][0]
    assert f"--pid-file {pid_file}" in s["ExecReload"][0]
    assert pid_file.startswith("/run/" + s["RuntimeDirectory"][0] + "/")
    assert s["User"] == ["lbctl"]


def test_every_lbctl_command_of_the_unit_parses():
    s = unit_settings()
    for key in ("ExecStartPre", "ExecStart", "ExecReload"):
        argv = shlex.split(s[key][0])
        assert argv[0] == "/opt/lbctl/bin/lbctl"
        parse(argv[1:])


def parse(argv: list[str]) -> click.Context:
    """Parse an lbctl command line as the real CLI would, without running it."""
    command: click.Command = main
    ctx = None
    while isinstance(command, click.Group):
        name, argv = argv[0], argv[1:]
        assert name in command.commands, f"no command {name!r}"
        command = command.commands[name]
    ctx = command.make_context(name, list(argv))
    return ctx


# ---- the Dockerfile ------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_the_image_is_slim_and_its_python_is_one_lbctl_supports():
    froms = [args for word, args in instructions() if word == "FROM"]
    assert froms and all("-slim" in f for f in froms)
    version = re.search(r"python:(\d+)\.(\d+)", froms[-1])
    assert version and (int(version[1]), int(version[2])) >= (3, 10)


def test_every_file_the_build_copies_exists_and_the_build_context_keeps_it():
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for word, args in instructions():
        if word != "COPY" or args.startswith("--from"):
            continue
        *sources, _ = args.split()
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in kept, f"{source} is left out by .dockerignore"
    # pip reads these from pyproject.toml while building: they must be in the context too.
    assert "README.md" in kept and "LICENSE" in kept


def test_it_runs_as_a_user_it_creates_not_root():
    stage = final_stage()
    users = [args for word, args in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    created = " ".join(args for word, args in stage if word == "RUN")
    assert re.search(rf"useradd\b.*\b{users[-1]}\b", created)
    # Nothing runs as root after the switch.
    after = stage[[w for w, _ in stage].index("USER"):]
    assert not any(word == "RUN" for word, _ in after)


def test_the_healthcheck_and_the_command_are_real_lbctl_command_lines():
    stage = dict(final_stage())
    entrypoint = json.loads(stage["ENTRYPOINT"])
    cmd = json.loads(stage["CMD"])
    assert entrypoint == ["lbctl"]
    ctx = parse(cmd)
    config = ctx.params["config"]
    health = stage["HEALTHCHECK"]
    assert "CMD" in health
    shell = json.loads(health[health.index("CMD") + 3:].strip())
    assert shell[:2] == ["sh", "-c"]
    check, _, test = shell[2].partition(";")
    argv = shlex.split(check)
    assert argv[:2] == ["lbctl", "check"]
    assert parse(argv[1:]).params["config"] == config
    # lbctl check: 0 OK, 1 WARNING are healthy; 2 CRITICAL, 3 UNKNOWN are not. Docker reads
    # 0 healthy, 1 unhealthy: the shell test maps one to the other.
    for code, healthy in ((0, True), (1, True), (2, False), (3, False)):
        proc = run("sh", "-c", f"(exit {code});{test}")
        assert (proc.returncode == 0) == healthy and proc.returncode in (0, 1)
    assert "ENV" in stage and "/opt/lbctl/bin" in stage["ENV"]
