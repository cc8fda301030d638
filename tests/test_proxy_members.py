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


def state_with(*members, clock=None, **pool_options):
    clock = clock or ManualClock()
    c = config({"api": list(members)}, slow_start=10.0, **pool_options)
    return build_runtime(c, clock=clock, rng=random.Random(1)).pools["api"], clock


def test_survivors_keep_their_object_and_state_newcomers_ramp():
    state, clock = state_with(cfg("a", 9001))
    a = state.pool.by_name["a"]
    state.pool.on_start(a)                  # one request in flight on a
    clock.advance(5)
    change = apply_members(state, [cfg("a", 9001), cfg("b", 9002)])
    assert (change.joined, change.left) == (("b",), ())
    assert state.pool.by_name["a"] is a and a.inflight == 1
    b = state.pool.by_name["b"]
    assert a.effective_weight == 1.0 and b.effective_weight == 0.1      # slow start: 10%
    assert state.members["b"].source == "dns"
    assert b.extra["idle"].max_idle == state.config.max_idle_connections


def test_an_operator_weight_stays_until_the_source_changes_it():
    state, _ = state_with(cfg("a", 9001), cfg("b", 9002))
    a = state.pool.by_name["a"]
    state.pool.set_weight(a, 7)
    apply_members(state, [cfg("a", 9001), cfg("b", 9002), cfg("c", 9003)])
    assert a.weight == 7                    # unchanged by the source: kept
    apply_members(state, [cfg("a", 9001, weight=3), cfg("b", 9002), cfg("c", 9003)])
    assert a.weight == 3                    # the source said so


def test_a_backend_that_leaves_with_requests_in_flight_drains_then_is_dropped():
    state, _ = state_with(cfg("a", 9001), cfg("b", 9002))
    b = state.pool.by_name["b"]
    state.pool.on_start(b)
    change = apply_members(state, [cfg("a", 9001)])
    assert change.left == ("b",)
    assert "b" not in state.pool.by_name and state.leaving == [b]
    assert b.extra["idle"].max_idle == 0    # its connections close as their requests end
    assert all(state.pool.select() is not b for _ in range(5))
    assert sweep(state) == []               # still in flight
    state.pool.on_end(b, 0.01)
    assert sweep(state) == [b] and state.leaving == []


def test_a_backend_that_leaves_idle_goes_at_once():
    state, _ = state_with(cfg("a", 9001), cfg("b", 9002))
    apply_members(state, [cfg("a", 9001)])
    assert state.leaving == []


def test_a_leaving_backend_that_comes_back_rejoins_with_its_state_and_ramps():
    state, clock = state_with(cfg("a", 9001), cfg("b", 9002))
    b = state.pool.by_name["b"]
    state.pool.set_admin(b, AdminState.DRAINING)
    state.pool.on_start(b)
    apply_members(state, [cfg("a", 9001)])
    clock.advance(1)
    change = apply_members(state, [cfg("a", 9001), cfg("b", 9002)])
    assert change.joined == ("b",)
    assert state.pool.by_name["b"] is b and b.inflight == 1 and state.leaving == []
    assert b.admin is AdminState.DRAINING                   # operator state kept
    assert b.extra["idle"].max_idle == state.config.max_idle_connections


def test_same_name_at_another_address_is_a_new_backend():
    state, _ = state_with(cfg("a", 9001), cfg("b", 9002))
    old = state.pool.by_name["b"]
    state.pool.on_start(old)
    apply_members(state, [cfg("a", 9001)])
    apply_members(state, [cfg("a", 9001), cfg("b", 9009)])
    new = state.pool.by_name["b"]
    assert new is not old and new.port == 9009
    assert state.leaving == [old]           # the old one still drains


def test_a_reload_keeps_leaving_backends_and_the_members_given():
    clock = ManualClock()
    state, _ = state_with(cfg("a", 9001), cfg("b", 9002), clock=clock)
    b = state.pool.by_name["b"]
    state.pool.on_start(b)
    apply_members(state, [cfg("a", 9001)])
    c = config({"api": [backend_config("http://127.0.0.1:9001", "a")]}, slow_start=10.0)
    previous = type("R", (), {"pools": {"api": state}, "gateway": None})()
    runtime = build_runtime(c, clock=clock, rng=random.Random(1), previous=previous,
                            members={"api": (cfg("a", 9001), cfg("x", 9005, source="admin"))})
    again = runtime.pools["api"]
    assert [x.name for x in again.pool.backends] == ["a", "x"]
    assert again.leaving == [b] and again.members["x"].source == "admin"
