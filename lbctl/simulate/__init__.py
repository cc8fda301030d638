"""Simulation: compare balancing algorithms on a pool in virtual time, before going live.

The simulator is the second driver of ``lbctl.balancing`` (the proxy is the first): it builds
real ``Backend`` objects and a real ``Pool`` with ``make_pool``, hands them a virtual clock and
seeded ``random.Random`` streams, and feeds them the same ``select``/``on_start``/``on_end``
calls the proxy makes. It never carries its own copy of an algorithm.

The data flows one way::

    scenario.py  TOML file or CLI options -> a validated, immutable ``Scenario``
    workload.py  arrival processes and service-time distributions (seeded samplers)
    engine.py    the event loop: virtual clock, event heap, simulated backends with FIFO
                 queues, timeouts and the proxy's retry rule -> flat per-request records
    results.py   records -> summaries (percentiles, shares, utilization, fairness)
    render.py    summaries -> rich tables and bar charts, and a one-sentence verdict
"""

from lbctl.simulate.engine import run_algorithm
from lbctl.simulate.results import summarize
from lbctl.simulate.scenario import Scenario, default_scenario, load_scenario

__all__ = ["Scenario", "default_scenario", "load_scenario", "run_algorithm", "summarize"]
