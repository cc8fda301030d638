"""``lbctl simulate``: compare balancing algorithms on a pool in virtual time."""

from __future__ import annotations

import sys

import click

from lbctl.cli.params import Duration, Number
from lbctl.errors import UserError


def _output(path: str | None):
    """Open an output file before the run, so a bad path fails before the work, not after."""
    if not path:
        return None
    try:
        return open(path, "w", encoding="utf-8", newline="")
    except OSError as exc:
        raise UserError(f"{path}: cannot write: {exc.strerror or exc}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (default: the scenario's, or 1).")
@click.option("--seeds", type=click.IntRange(min=1, max=100), default=1, show_default=True,
              metavar="N", help="Run N seeds (seed, seed+1, ...) and report means with 95% "
                                "confidence intervals; the verdict says when a gap is noise.")
@click.option("--algorithms", metavar="A,B,...",
              help="Comma-separated algorithms to compare (default: the scenario's, or all).")
@click.option("--backends", type=click.IntRange(min=1, max=100_000), metavar="N",
              help="Instead of a scenario: N identical backends.")
@click.option("--load", type=Number(min=0, min_open=True),
              help="Offered load as a fraction of the pool's capacity, e.g. 0.9.")
@click.option("--rate", type=Number(min=0, min_open=True),
              help="Arrivals per second to the whole pool (instead of --load).")
@click.option("--requests", type=click.IntRange(min=1), metavar="N",
              help="Requests per algorithm.")
@click.option("--duration", type=Duration(positive=True),
              help='Virtual time per algorithm instead of --requests, e.g. "60s".')
@click.option("--mean", "mean", type=Duration(positive=True),
              help="With --backends: mean service time (default 10ms).")
@click.option("--concurrency", type=click.IntRange(min=1),
              help="With --backends: requests each backend serves at once (default 1); with "
                   "--from-admin: instead of the estimate from the measured load.")
@click.option("--service", type=click.Choice(["exponential", "constant"]),
              help="With --backends: service-time distribution (default exponential).")
@click.option("--no-outlier", is_flag=True,
              help="Turn passive ejection ([proxy.outlier], or the config pool's) off, "
                   "to compare.")
@click.option("--replay", metavar="LOG", type=click.Path(dir_okay=False),
              help="Replay an access log: lbctl's JSON, nginx (see --log-format) or HAProxy's "
                   "HTTP log. Arrivals, keys and service times come from the log.")
@click.option("--speedup", type=Number(min=0, min_open=True),
              help="With --replay: replay the log this many times faster (2 = twice the rate).")
@click.option("--log-format", "log_format", metavar="FORMAT",
              help="With --replay of an nginx log: its log_format string "
                   "(default: combined plus $request_time $upstream_response_time "
                   "$upstream_addr).")
@click.option("--from-admin", "from_admin", metavar="URL",
              help="Build the scenario from a running serve's /stats (pools, weights, latency "
                   "histograms, current rate) and say what another algorithm would change. "
                   "Never changes anything.")
@click.option("--token", metavar="TOKEN", envvar="LBCTL_ADMIN_TOKEN",
              help="With --from-admin: the admin token (or env LBCTL_ADMIN_TOKEN).")
@click.option("--pool", metavar="NAME",
              help="With --from-admin or --compare: the pool to simulate (default: the only "
                   "one, or the busiest).")
@click.option("--compare", nargs=2, metavar="A.toml B.toml", type=click.Path(dir_okay=False),
              help="Run the pools of two serve configs on the same workload, side by side.")
@click.option("--interval", type=Duration(positive=True),
              help="Length of one interval of the series over time (default: about 50 "
                   "intervals per run).")
@click.option("--workers", type=click.IntRange(min=1, max=256), metavar="N",
              help="Model serve with N workers, each balancing with its own in-flight counts "
                   "and latency estimates (overrides the scenario's [proxy] workers).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON document (see the README) and nothing else.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write one row per algorithm and backend to FILE.")
@click.option("--series", "series_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write per-interval req/s, p50, p99, errors and shares to FILE (CSV).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write a self-contained HTML report (works offline) to FILE.")
def command(scenario, seed, seeds, algorithms, backends, load, rate, requests, duration, mean,
            concurrency, service, no_outlier, replay, speedup, log_format, from_admin, token,
            pool, compare, interval, workers, as_json, csv_path, series_path, html_path):
    """Compare balancing algorithms on a simulated pool, in virtual time.

    The simulator drives the same balancer code and the same retry rule as `lbctl
    serve`, with a virtual clock and seeded random streams: the same seed gives the
    same output. Without SCENARIO it runs a built-in pool of ten backends, one three
    times slower, at 80% load, and says which algorithm won and why.

    \b
    Examples:
      lbctl simulate                                  # the built-in lesson
      lbctl simulate scenario.toml --seeds 5          # with confidence intervals
      lbctl simulate --backends 20 --load 0.9 --algorithms random,p2c,least_conn
      lbctl simulate examples/simulate/outage.toml --html report.html --series s.csv
      lbctl simulate --replay access.log --speedup 2  # your own traffic, twice as fast
      lbctl simulate --from-admin http://127.0.0.1:9900 --token "$TOKEN"
      lbctl simulate --compare lb.toml lb-new.toml    # what does my new config do?
      lbctl simulate --workers 8                      # least_conn with 8 workers' views
      lbctl simulate scenario.toml --json > results.json
    """
    # Imported here, not at module load: every lbctl command (serve too) imports this module
    # to register the command, and the simulator brings rich along.
    from lbctl.simulate.run import Options, simulate
    options = Options(scenario=scenario, seed=seed, seeds=seeds,
                      algorithms=algorithms.split(",") if algorithms is not None else None,
                      backends=backends, load=load, rate=rate, requests=requests,
                      duration=duration, mean=mean, concurrency=concurrency, service=service,
                      outlier=not no_outlier, replay=replay, speedup=speedup,
                      log_format=log_format, from_admin=from_admin, token=token, pool=pool,
                      compare=tuple(compare) if compare else None, interval=interval,
                      workers=workers)
    paths = {"csv": csv_path, "series": series_path, "html": html_path}
    files = {kind: _output(path) for kind, path in paths.items()}
    try:
        if not as_json and sys.stdout.isatty():
            report = _with_progress(simulate, options)
        else:
            report = simulate(options)
        for kind, f in files.items():
            if f is not None:
                try:
                    _write(kind, report, f)
                    f.close()           # the last bytes reach the disk here: a full disk says so
                except OSError as exc:
                    raise UserError(f"{paths[kind]}: cannot write: {exc.strerror or exc}") \
                        from None
    finally:
        for f in files.values():
            if f is not None and not f.closed:
                try:
                    f.close()
                except OSError:         # already reported, or the run failed first
                    pass
    if as_json:
        from lbctl.simulate.results import to_json
        click.echo(to_json(report.seeds[0], report.results, report.seeds))
    else:
        from rich.console import Console
        from lbctl.simulate.render import report as render
        console = Console(highlight=False)
        console.print(render(report, width=console.width))


def _write(kind: str, report, f) -> None:
    if kind == "csv":
        from lbctl.simulate.results import to_csv
        f.write(to_csv(report.results))
    elif kind == "series":
        from lbctl.simulate.results import series_csv
        f.write(series_csv(report.series))
    else:
        from lbctl.simulate.html import html_report
        f.write(html_report(report))


def _with_progress(simulate, options):
    """Run with a progress bar per run on stderr (only when stdout is a terminal)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    tasks: dict = {}
    with Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        def progress(label: str, n: int, total: int) -> None:
            task = tasks.get(label)
            if task is None:
                for old in tasks.values():
                    bar.remove_task(old)
                tasks.clear()
                task = tasks[label] = bar.add_task(label, total=total)
            bar.update(task, completed=n)
        return simulate(options, progress)
