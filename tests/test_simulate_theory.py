"""The simulator against queueing theory, and the orderings theory guarantees.

Tolerances come from the run length by batch means. Successive sojourn times in a queue are
strongly autocorrelated (a customer who waited long is followed by others who wait long), so
the textbook s/sqrt(N) badly understates the error of a sample mean. Cutting the run (in arrival
order) into K = 20 contiguous batches of N/K requests makes the batch means nearly independent
once a batch is much longer than the queue's relaxation time (about 1/(mu (1 - sqrt(rho))^2),
some tens of service times here, against batches of thousands), so their standard deviation
over sqrt(K) estimates the standard error of the overall mean honestly. We accept
|estimate - theory| <= 4.5 standard errors: beyond the 0.9995 quantile of Student's t with 19
degrees of freedom, so a correct simulator fails with probability well below 1e-3 per check
(and, being seeded, the tests are deterministic anyway). We also require the standard error
itself to be under 2% of the target, so a test cannot pass merely by being too short to say
anything.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from lbctl.simulate.driver import run_algorithm
from lbctl.simulate.results import percentile, summarize
from lbctl.simulate.scenario import BackendSpec, Scenario, Service, Workload, load_scenario

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "simulate"

BATCHES = 20
Z = 4.5


def in_arrival_order(rec):
    return [lat for _, lat in sorted(zip(rec.arrival, rec.latency))]


def batch_check(values, statistic, theory):
    """Assert statistic(values) agrees with theory within Z batch-means standard errors."""
    size = len(values) // BATCHES
    batches = [statistic(values[k * size:(k + 1) * size]) for k in range(BATCHES)]
    estimate = statistic(values)
    se = statistics.stdev(batches) / math.sqrt(BATCHES)
    assert se < 0.02 * theory, f"run too short: standard error {se:.4g} vs target {theory:.4g}"
    assert abs(estimate - theory) <= Z * se, \
        f"estimate {estimate:.5g}, theory {theory:.5g}, standard error {se:.3g}"
    return estimate, se


def quantile(p):
    return lambda values: percentile(sorted(values), p)


def mm1_pool(n: int, rho: float, requests: int, algorithms=("random",), seed: int = 3):
    """n identical exponential servers (mean 1 s, so mu = 1) with Poisson arrivals at
    rho * n per second in total."""
    service = Service("exponential", mean=1.0)
    backends = tuple(BackendSpec(f"b{i}", service) for i in range(1, n + 1))
    return Scenario(backends=backends, algorithms=tuple(algorithms), seed=seed,
                    workload=Workload("poisson", rate=rho * n, requests=requests))


def test_single_backend_is_mm1():
    # The example file: lambda = 0.5, mu = 1. W = 1 / (mu - lambda) = 2 s, and the sojourn
    # time is exponential with rate mu - lambda, so its median is ln 2 / (mu - lambda).
    sc = load_scenario(str(EXAMPLES / "mm1.toml"))
    lam, mu = sc.workload.rate, 1 / sc.backends[0].service.mean
    assert (lam, mu, len(sc.backends)) == (0.5, 1.0, 1)
    rec = run_algorithm(sc, "round_robin")
    values = in_arrival_order(rec)
    batch_check(values, statistics.fmean, 1 / (mu - lam))
    batch_check(values, quantile(0.5), math.log(2) / (mu - lam))
    # Utilization of an M/M/1 queue is rho. Over 400,000 s of virtual time the busy
    # fraction's standard error is about 0.002 (busy periods average 2 s); 0.01 is five.
    assert abs(summarize(rec).backends[0].utilization - lam / mu) < 0.01


def test_random_over_identical_backends_is_independent_mm1_queues():
    # A uniform random split of a Poisson stream gives n independent Poisson streams of rate
    # lambda / n, so each backend is an M/M/1 queue with rho = 0.7: W = 1 / (1 - 0.7) and
    # P(T > t) = exp(-(mu - lambda_i) t), so the p90 is ln 10 / (mu - lambda_i).
    sc = load_scenario(str(EXAMPLES / "random-split.toml"))
    n = len(sc.backends)
    rho = sc.workload.rate / n * sc.backends[0].service.mean
    assert (n, rho) == (10, 0.7)
    rec = run_algorithm(sc, "random")
    values = in_arrival_order(rec)
    batch_check(values, statistics.fmean, 1 / (1 - rho))
    batch_check(values, quantile(0.9), math.log(10) / (1 - rho))
    result = summarize(rec)
    # Each request picks a backend independently with p = 1/n: the share is binomial, with
    # standard deviation sqrt(p (1 - p) / N) ~ 0.0007; 5 of those is the tolerance.
    tolerance = 5 * math.sqrt(0.1 * 0.9 / 200_000)
    for b in result.backends:
        assert abs(b.share - 1 / n) < tolerance, b


def test_orderings_on_identical_exponential_servers():
    # Same arrivals and service draws for every algorithm (common random numbers). At 85%
    # load over 10 servers theory gives least_conn (join the shortest queue, optimal for
    # identical exponential servers) <= p2c (power of two choices) <= random (independent
    # M/M/1 queues, W = 1/(1 - 0.85) = 6.7 s), and round_robin < random (an Erlang-10 arrival
    # stream at each server is more regular than a Poisson one). The gaps are several times
    # the batch-means standard error at this run length, checked below.
    algos = ("least_conn", "p2c", "random", "round_robin")
    sc = mm1_pool(10, 0.85, 60_000, algos, seed=11)
    means, errors = {}, {}
    for a in algos:
        values = in_arrival_order(run_algorithm(sc, a))
        size = len(values) // BATCHES
        batches = [statistics.fmean(values[k * size:(k + 1) * size]) for k in range(BATCHES)]
        means[a] = statistics.fmean(values)
        errors[a] = statistics.stdev(batches) / math.sqrt(BATCHES)

    def clearly_below(a, b):
        gap = means[b] - means[a]
        assert gap > 3 * math.hypot(errors[a], errors[b]), (a, b, means, errors)

    clearly_below("least_conn", "p2c")
    clearly_below("p2c", "random")
    clearly_below("round_robin", "random")


def test_concurrency_is_mmc_with_fifo_queue():
    # One backend serving 2 at once, lambda = 1.5, mu = 1 (a = 1.5 erlangs): Erlang C gives
    # P(wait) = (a^2/2! * 2/(2 - a)) / (1 + a + a^2/2! * 2/(2 - a)) = 4.5 / 7, and
    # W = P(wait) / (2 mu - lambda) + 1 / mu = 16/7 s.
    service = Service("exponential", mean=1.0)
    sc = Scenario(backends=(BackendSpec("b1", service, concurrency=2),),
                  algorithms=("round_robin",), seed=5,
                  workload=Workload("poisson", rate=1.5, requests=200_000))
    values = in_arrival_order(run_algorithm(sc, "round_robin"))
    batch_check(values, statistics.fmean, 16 / 7)
