"""``GET /metrics``: the live counters in Prometheus text format, read at scrape time.

A custom collector walks the pools when scraped, so the hot path never touches
prometheus-client objects; it only adds to ``observe.accounting`` counters.
"""

from __future__ import annotations

from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from typing import TYPE_CHECKING

from lbctl.observe.accounting import BOUNDS, CLASSES
from lbctl.observe.snapshot import backend_state

if TYPE_CHECKING:
    from lbctl.admin.served import Served
    from lbctl.discovery.service import Discovery

STATES = ("up", "down", "ejected", "disabled", "draining", "slow_start")


class ProxyCollector:
    def __init__(self, served: Served) -> None:
        self.served = served

    def collect(self):
        served = self.served
        observer, health = served.observer, served.health
        labels = ["pool", "backend"]
        requests = CounterMetricFamily(
            "lbctl_requests", "Attempts on a backend by response status class "
            "(class=\"error\": no response: connect error, timeout, reset, invalid)",
            labels=[*labels, "class"])
        errors = CounterMetricFamily(
            "lbctl_backend_errors", "Attempts that got no response, by kind",
            labels=[*labels, "kind"])
        retries = CounterMetricFamily("lbctl_retries", "Attempts that were retries", labels=labels)
        traffic = CounterMetricFamily("lbctl_backend_bytes", "Body bytes by direction "
                                      "(in: request to backend, out: response to client)",
                                      labels=[*labels, "direction"])
        duration = HistogramMetricFamily(
            "lbctl_request_duration_seconds",
            "Attempt duration on a backend: from the attempt's start to the end of the "
            "relayed response (or the failure)", labels=labels)
        up = GaugeMetricFamily("lbctl_backend_up", "1 if the backend is eligible for traffic",
                               labels=labels)
        state_g = GaugeMetricFamily("lbctl_backend_state", "1 for the backend's current state",
                                    labels=[*labels, "state"])
        inflight = GaugeMetricFamily("lbctl_backend_inflight", "Requests in flight",
                                     labels=labels)
        weight = GaugeMetricFamily("lbctl_backend_weight", "Configured (or operator-set) weight",
                                   labels=labels)
        eff = GaugeMetricFamily("lbctl_backend_effective_weight",
                                "Weight after slow start", labels=labels)
        ewma = GaugeMetricFamily("lbctl_backend_ewma_seconds", "Peak-EWMA latency estimate",
                                 labels=labels)
        probes = CounterMetricFamily("lbctl_health_probes", "Active health probes by result",
                                     labels=[*labels, "result"])
        ejections = CounterMetricFamily("lbctl_ejections", "Passive (outlier) ejections",
                                        labels=labels)
        for name, state in served.runtime.pools.items():
            pool = state.pool
            for b in pool.backends:
                lv = [name, b.name]
                stats = observer.stats.get(b)
                if stats is not None:
                    for i, cls in enumerate(CLASSES):
                        requests.add_metric([*lv, cls], stats.by_class[i + 1])
                    requests.add_metric([*lv, "error"], stats.connect_errors + stats.timeouts
                                        + stats.resets + stats.invalid)
                    for kind in ("connect_errors", "timeouts", "resets", "invalid"):
                        errors.add_metric([*lv, kind.rstrip("s") if kind != "connect_errors"
                                           else "connect"], getattr(stats, kind))
                    retries.add_metric(lv, stats.retries)
                    traffic.add_metric([*lv, "in"], stats.bytes_in)
                    traffic.add_metric([*lv, "out"], stats.bytes_out)
                    cumulative, running = [], 0
                    for bound, count in zip(BOUNDS, stats.buckets):
                        running += count
                        cumulative.append((_le(bound), running))
                    cumulative.append(("+Inf", running + stats.buckets[-1]))
                    duration.add_metric(lv, cumulative, sum_value=stats.latency_sum)
                current, _ = backend_state(pool, b)
                up.add_metric(lv, 1 if b.eligible else 0)
                for s in STATES:
                    state_g.add_metric([*lv, s], 1 if s == current else 0)
                inflight.add_metric(lv, b.inflight)
                weight.add_metric(lv, b.weight)
                eff.add_metric(lv, b.effective_weight)
                ewma.add_metric(lv, b.ewma_cost(pool.clock(), pool.ewma_decay))
                checked = health.of(b)
                if checked is not None and (checked.ok or checked.failed):
                    for result, n in checked.counts().items():
                        probes.add_metric([*lv, result], n)
                if b.ejections:
                    ejections.add_metric(lv, b.ejections)
        front = observer.frontend
        responses = CounterMetricFamily(
            "lbctl_http_responses", "Client requests by the status class the client got "
            "(proxy-generated 404/502/503/504 included; class=\"aborted\": client went away)",
            labels=["class"])
        for cls, n in front.classes().items():
            responses.add_metric([cls], n)
        responses.add_metric(["aborted"], front.aborted)
        uptime = GaugeMetricFamily("lbctl_start_time_seconds", "Unix time the proxy started")
        uptime.add_metric([], observer.started_at)
        store = served.runtime.gateway.store
        store_up = GaugeMetricFamily("lbctl_store_up", "1 if the rate-limit store answers "
                                     "(always 1 for the local store)", labels=["backend"])
        store_up.add_metric([store.config.backend], 1 if store.up else 0)
        store_errors = CounterMetricFamily("lbctl_store_errors", "Rate-limit store calls that "
                                           "failed or timed out (probes while down included)",
                                           labels=["backend"])
        store_errors.add_metric([store.config.backend], store.errors)
        yield from (responses, requests, errors, retries, traffic, duration, up, state_g,
                    inflight, weight, eff, ewma, probes, ejections, uptime, store_up,
                    store_errors)
        yield from _discovery(served.discovery)


def _discovery(discovery: Discovery):
    """Per pool with [discovery]: lookups by result, the discovered set's size, and when the
    last trustworthy answer came (alert on its age: the set in use may be stale)."""
    watchers = discovery.watchers
    if not watchers:
        return
    lookups = CounterMetricFamily(
        "lbctl_discovery_lookups", "Discovery lookups by result (failed: the last good set "
        "was kept)", labels=["pool", "source", "result"])
    found = GaugeMetricFamily("lbctl_discovery_backends", "Backends in the discovered set",
                              labels=["pool", "source"])
    last = GaugeMetricFamily("lbctl_discovery_last_success_timestamp_seconds",
                             "Unix time of the last lookup that could be trusted",
                             labels=["pool", "source"])
    for pool, w in watchers.items():
        st = w.status
        lookups.add_metric([pool, st.source, "ok"], st.resolutions - st.failures)
        lookups.add_metric([pool, st.source, "failed"], st.failures)
        found.add_metric([pool, st.source], st.backends)
        if st.last_success is not None:
            last.add_metric([pool, st.source], st.last_success)
    yield from (lookups, found, last)


def _le(bound: float) -> str:
    return repr(float(bound))


def registry_for(served: Served) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ProxyCollector(served))
    return registry


def exposition(registry: CollectorRegistry) -> tuple[bytes, str]:
    return generate_latest(registry), CONTENT_TYPE_LATEST
