"""Applying a membership to a live pool (proxy/members.py), without sockets: who keeps which
object, who ramps, who leaves and when it is dropped."""

from __future__ import annotations

import random
from dataclasses import replace

from lbctl.balancing.backend import AdminState
from lbctl.proxy.members import apply_members, sweep
from lbctl.proxy.runtime import build_runtime

from tests.support import ManualClock, backend_config, config


def cfg(name, port, weight=1.0, source="dns"):
    return replace(backend_config(f"http://127.0.0.1:{port}", name, weight), source=source)


class Live:
    """One pool of a runtime, and the runtime's idle connections, as the proxy holds them."""

    def __init__(self, *members, clock=None, **pool_options) -> None:
        self.clock = clock or ManualClock()
        c = config({"api": list(members)}, slow_start=10.0, **pool_options)
        self.runtime = build_runtime(c, clock=self.clock, rng=random.Random(1))
        self.state = self.runtime.pools["api"]
        self.idle = self.runtime.idle

    def apply(self, *members):
        return apply_members(self.state, members, self.idle)

    def sweep(self):
        return sweep(self.state, self.idle)


def test_survivors_keep_their_object_and_state_newcomers_ramp():
    live = Live(cfg("a", 9001))
    state = live.state
    a = state.pool.by_name["a"]
    state.pool.on_start(a)                  # one request in flight on a
    live.clock.advance(5)
    change = live.apply(cfg("a", 9001), cfg("b", 9002))
    assert (change.joined, change.left) == (("b",), ())
    assert state.pool.by_name["a"] is a and a.inflight == 1
    b = state.pool.by_name["b"]
    assert a.effective_weight == 1.0 and b.effective_weight == 0.1      # slow start: 10%
    assert state.configs[b].source == "dns"
    assert live.idle[b].max_idle == state.config.max_idle_connections


def test_before_the_proxy_listens_nobody_ramps():
    live = Live(cfg("a", 9001))
    apply_members(live.state, [cfg("a", 9001), cfg("b", 9002)], live.idle, starting=True)
    assert live.state.pool.by_name["b"].effective_weight == 1.0


def test_an_operator_weight_stays_until_the_source_changes_it(caplog):
    live = Live(cfg("a", 9001), cfg("b", 9002))
    a = live.state.pool.by_name["a"]
    live.state.pool.set_weight(a, 7)
    live.apply(cfg("a", 9001), cfg("b", 9002), cfg("c", 9003))
    assert a.weight == 7                    # unchanged by the source: kept
    live.apply(cfg("a", 9001, weight=3), cfg("b", 9002), cfg("c", 9003))
    assert a.weight == 3                    # the source said so, and the log says it
    assert "pool api: backend a weight 7 (set by an operator) replaced by the new weight from " \
           "dns 3" in caplog.text


def test_a_backend_that_leaves_with_requests_in_flight_drains_then_is_dropped():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    state = live.state
    b = state.pool.by_name["b"]
    state.pool.on_start(b)
    connections = live.idle[b]
    change = live.apply(cfg("a", 9001))
    assert change.left == ("b",)
    assert "b" not in state.pool.by_name and state.leaving == [b]
    assert connections.max_idle == 0        # its connections close as their requests end
    assert state.configs[b].source == "dns"     # /stats still says where it came from
    assert all(state.pool.select() is not b for _ in range(5))
    assert live.sweep() == []               # still in flight
    state.pool.on_end(b, 0.01)
    assert live.sweep() == [b] and state.leaving == []
    assert b not in live.idle and b not in state.configs


def test_a_backend_that_leaves_idle_goes_at_once():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    b = live.state.pool.by_name["b"]
    live.apply(cfg("a", 9001))
    assert live.state.leaving == [] and b not in live.idle


def test_a_leaving_backend_that_comes_back_rejoins_with_its_state_and_ramps():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    state = live.state
    b = state.pool.by_name["b"]
    state.pool.set_admin(b, AdminState.DRAINING)
    state.pool.on_start(b)
    live.apply(cfg("a", 9001))
    live.clock.advance(1)
    change = live.apply(cfg("a", 9001), cfg("b", 9002))
    assert change.joined == ("b",)
    assert state.pool.by_name["b"] is b and b.inflight == 1 and state.leaving == []
    assert b.admin is AdminState.DRAINING                   # operator state kept
    assert live.idle[b].max_idle == state.config.max_idle_connections


def test_same_name_at_another_address_is_a_new_backend():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    state = live.state
    old = state.pool.by_name["b"]
    state.pool.on_start(old)
    live.apply(cfg("a", 9001))
    live.apply(cfg("a", 9001), cfg("b", 9009))
    new = state.pool.by_name["b"]
    assert new is not old and new.port == 9009
    assert state.leaving == [old]           # the old one still drains
    assert live.idle[new].address[2] == 9009 and live.idle[old].max_idle == 0


def test_a_member_moved_to_a_new_address_keeps_its_state_and_gets_new_connections():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    b = live.state.pool.by_name["b"]
    live.state.pool.on_start(b)
    before = live.idle[b]
    live.apply(cfg("a", 9001), cfg("b", 9009))
    assert live.state.pool.by_name["b"] is b and b.port == 9009 and b.inflight == 1
    assert live.idle[b] is not before and live.idle[b].address[2] == 9009
    assert before.max_idle == 0             # the old address's connections close as they end


def test_a_reload_keeps_leaving_backends_and_the_members_given():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    state = live.state
    b = state.pool.by_name["b"]
    state.pool.on_start(b)
    live.apply(cfg("a", 9001))
    c = config({"api": [backend_config("http://127.0.0.1:9001", "a")]}, slow_start=10.0)
    runtime = build_runtime(c, clock=live.clock, rng=random.Random(1), previous=live.runtime,
                            members={"api": (cfg("a", 9001), cfg("x", 9005, source="admin"))})
    again = runtime.pools["api"]
    assert [x.name for x in again.pool.backends] == ["a", "x"]
    x = again.pool.by_name["x"]
    assert again.leaving == [b] and again.configs[x].source == "admin"
    assert runtime.idle[b].max_idle == 0 and again.configs[b].source == "dns"
    assert list(runtime.backends())[-1] is b        # requests may still be on it


def test_a_reload_makes_a_backend_gone_with_requests_in_flight_leave():
    live = Live(cfg("a", 9001), cfg("b", 9002))
    b = live.state.pool.by_name["b"]
    live.state.pool.on_start(b)
    c = config({"api": [backend_config("http://127.0.0.1:9001", "a")]}, slow_start=10.0)
    runtime = build_runtime(c, clock=live.clock, rng=random.Random(1), previous=live.runtime)
    assert runtime.pools["api"].leaving == [b] and runtime.idle[b].max_idle == 0
