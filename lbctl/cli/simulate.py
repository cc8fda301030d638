"""``lbctl simulate``: compare balancing algorithms on a pool in virtual time."""

from __future__ import annotations

import sys

import click

from lbctl.cli.params import Duration
from lbctl.errors import UserError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("scenario", required=False, type=click.Path(dir_okay=False))
@click.option("--seed", type=click.IntRange(min=0), help="Random seed (default: the scenario's, or 1).")
@click.option("--algorithms", metavar="A,B,...",
              help="Comma-separated algorithms to compare (default: the scenario's, or all).")
@click.option("--backends", type=click.IntRange(min=1), metavar="N",
              help="Instead of a scenario: N identical backends.")
@click.option("--load", type=click.FloatRange(min=0, min_open=True),
              help="Offered load as a fraction of the pool's capacity, e.g. 0.9.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True),
              help="Arrivals per second to the whole pool (instead of --load).")
@click.option("--requests", type=click.IntRange(min=1), metavar="N",
              help="Requests per algorithm.")
@click.option("--duration", type=Duration(positive=True),
              help='Virtual time per algorithm instead of --requests, e.g. "60s".')
@click.option("--mean", "mean", type=Duration(positive=True),
              help="With --backends: mean service time (default 10ms).")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --backends: requests each backend serves at once.")
@click.option("--service", type=click.Choice(["exponential", "constant"]),
              default="exponential", show_default=True,
              help="With --backends: service-time distribution.")
@click.option("--no-outlier", is_flag=True,
              help="Turn passive ejection ([proxy.outlier], or the config pool's) off, "
                   "to compare.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (see the README) and nothing else.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Also write one row per algorithm and backend to FILE.")
def command(scenario, seed, algorithms, backends, load, rate, requests, duration, mean,
            concurrency, service, no_outlier, as_json, csv_path):
    """Compare balancing algorithms on a simulated pool, in virtual time.

    The simulator drives the same balancer code as `lbctl serve`, with a virtual
    clock and seeded random streams: the same seed gives the same output. Without
    SCENARIO it runs a built-in pool of ten backends, one three times slower, at
    80% load, and says which algorithm won and why.

    \b
    Examples:
      lbctl simulate                                  # the built-in lesson
      lbctl simulate scenario.toml --seed 7
      lbctl simulate --backends 20 --load 0.9 --algorithms random,p2c,least_conn
      lbctl simulate scenario.toml --json > results.json
      lbctl simulate scenario.toml --csv results.csv
      lbctl simulate examples/simulate/outlier.toml --no-outlier   # compare
    """
    # Imported here, not at module load: every lbctl command (serve too) imports this module
    # to register the command, and the simulator brings rich along.
    from lbctl.simulate.engine import run_algorithm, total_requests
    from lbctl.simulate.render import report
    from lbctl.simulate.results import summarize, to_csv, to_json
    from lbctl.simulate.scenario import default_scenario, load_scenario, scenario_from_options
    if rate is not None and load is not None:
        raise UserError("--rate and --load: expected one of them, not both")
    if requests is not None and duration is not None:
        raise UserError("--requests and --duration: expected one of them, not both")
    if backends is not None:
        if scenario:
            raise UserError("--backends builds a pool from options; it cannot be combined "
                            "with a SCENARIO file")
        sc = scenario_from_options(backends=backends, load=load, rate=rate, requests=requests,
                                   mean=mean or 0.010, concurrency=concurrency, dist=service)
    else:
        if mean is not None or concurrency != 1 or service != "exponential":
            raise UserError("--mean, --concurrency and --service describe the pool that "
                            "--backends builds; use them with --backends")
        sc = load_scenario(scenario) if scenario else default_scenario()
        sc = sc.with_overrides(rate=rate, load=load)
    sc = sc.with_overrides(seed=seed, requests=requests, duration=duration,
                           algorithms=algorithms.split(",") if algorithms is not None else None,
                           outlier=not no_outlier)

    # Open the CSV file first, so a bad path fails before the simulation runs, not after.
    csv_file = None
    if csv_path:
        try:
            csv_file = open(csv_path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise UserError(f"{csv_path}: cannot write: {exc.strerror or exc}") from None

    results = []
    show_progress = not as_json and sys.stdout.isatty()
    if show_progress:
        total = total_requests(sc)
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        with Progress(TextColumn("{task.description:<16}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
            for algorithm in sc.algorithms:
                task = bar.add_task(algorithm, total=total)
                rec = run_algorithm(sc, algorithm,
                                    lambda n, task=task: bar.update(task, completed=n))
                results.append(summarize(rec))
                bar.remove_task(task)
    else:
        for algorithm in sc.algorithms:
            results.append(summarize(run_algorithm(sc, algorithm)))

    if csv_file is not None:
        with csv_file:
            csv_file.write(to_csv(results))
    if as_json:
        click.echo(to_json(sc.seed, results))
    else:
        from rich.console import Console
        console = Console(highlight=False)
        console.print(report(sc, results, width=console.width))
