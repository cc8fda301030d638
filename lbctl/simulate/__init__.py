"""Simulation: compare balancing algorithms on a pool in virtual time, before going live.

The simulator is the second driver of ``lbctl.balancing`` (the proxy is the first): it builds
real ``Backend`` objects and a real ``Pool`` with ``make_pool``, hands them a virtual clock and
seeded ``random.Random`` streams, and feeds them the same ``select``/``on_start``/``on_end``
calls the proxy makes. Every retry decision is the proxy's own ``AttemptPolicy``; health
checks and passive ejection are serve's own state machines. It never carries its own copy of
an algorithm or a rule, and it imports nothing from ``lbctl.proxy``.

The data flows one way::

    schema.py    the scenario file's tables, declared with the config's own machinery
    scenario.py  TOML file or CLI options -> a validated, immutable ``Scenario``
    replay.py    access logs (lbctl JSON, nginx, HAProxy) -> arrivals, keys, service samples
    live.py      a running serve's /stats -> a scenario (the "live twin")
    workload.py  random streams, arrival times, keys, service-time samplers
    kernel.py    virtual time and the event heap
    model.py     simulated backends: FIFO slots, faults, serve's health checks
    driver.py    requests through the real pool and attempt policy -> flat per-request records
    results.py   records -> summaries, confidence over seeds, series over time
    verdict.py   summaries -> the sentences that say who won, how sure, and what else matters
    run.py       the one call a command makes: options in, a ``Report`` out
    render.py    a report -> rich tables, charts and the time strip (terminal)
    html.py      a report -> one self-contained HTML file (inline SVG)
"""

from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import Scenario, default_scenario, load_scenario

__all__ = ["Scenario", "default_scenario", "load_scenario", "run_algorithm", "summarize"]
