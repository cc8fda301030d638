"""The pool decides: eligibility, backups, panic, slow start, admin state, membership."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from tests.balancing_support import backends, names, pick, pool_of
from tests.support import ManualClock
from lbctl.balancing import ALGORITHMS, AdminState, Backend, make_pool
from lbctl.balancing.pool import SLOW_START_MIN, SLOW_START_STEPS

ALL = sorted(ALGORITHMS)


def make_ineligible(pool, b, how):
    if how == "unhealthy":
        pool.set_healthy(b, False)
    elif how == "disabled":
        pool.set_admin(b, AdminState.DISABLED)
    elif how == "draining":
        pool.set_admin(b, AdminState.DRAINING)
    elif how == "ejected":
        pool.eject(b, until=pool.clock() + 1000.0)


def test_registry_names_are_the_module_names():
    for name, cls in ALGORITHMS.items():
        assert cls.name == name
        assert cls.__module__ == f"lbctl.balancing.{name}"


@pytest.mark.parametrize("algorithm", ALL)
@pytest.mark.parametrize("how", ["unhealthy", "disabled", "draining", "ejected"])
def test_ineligible_backend_is_never_selected(algorithm, how, clock):
    pool = pool_of(algorithm, ["a", "b", "c", "d"], seed=3, clock=clock)
    c = pool.by_name["c"]
    make_ineligible(pool, c, how)
    assert not c.eligible
    seen = Counter()
    for i in range(1000):
        clock.advance(0.01)
        key = f"k{i}" if i % 2 else None
        b = pool.select(key)
        pool.on_start(b)
        pool.on_end(b, 0.01)
        seen[b.name] += 1
    assert seen["c"] == 0
    assert set(seen) == {"a", "b", "d"}


@pytest.mark.parametrize("how", ["unhealthy", "disabled", "draining", "ejected"])
def test_state_word_for_people(how):
    pool = pool_of("round_robin", ["a", "b"])
    a = pool.by_name["a"]
    assert a.state == "up"
    make_ineligible(pool, a, how)
    assert a.state == {"unhealthy": "down"}.get(how, how)


def test_ejection_expires_on_the_clock_and_readmits():
    clock = ManualClock(100.0)
    pool = pool_of("round_robin", ["a", "b", "c"], clock=clock)
    b = pool.by_name["b"]
    pool.eject(b, until=130.0)
    assert b.state == "ejected"
    while clock.now < 129.9:
        assert pick(pool) is not b
        clock.advance(0.5)
    clock.now = 130.0                  # no call into the pool: select notices the expiry itself
    seen = names(pool, 3)
    assert "b" in seen
    assert b.state == "up" and b.eligible and b.ejected_until == 0.0


def test_ejection_expiry_starts_slow_start():
    clock = ManualClock(0.0)
    pool = pool_of("weighted", ["a", "b"], clock=clock, slow_start=10.0)
    b = pool.by_name["b"]
    pool.eject(b, until=5.0)
    clock.now = 5.0
    pool.select()
    assert b.eligible and b.effective_weight == pytest.approx(b.weight * SLOW_START_MIN)


def test_backup_takes_traffic_only_when_no_primary_is_eligible():
    members = backends("a", "b") + [Backend("z", backup=True)]
    pool = pool_of("round_robin", members)
    a, b, z = pool.backends
    assert "z" not in names(pool, 50)
    pool.set_healthy(a, False)
    assert set(names(pool, 50)) == {"b"}           # one primary is enough
    pool.set_admin(b, AdminState.DISABLED)
    assert pool.mode == "backup"
    assert set(names(pool, 50)) == {"z"}
    pool.set_admin(b, AdminState.ENABLED)
    assert pool.mode == "normal"
    assert set(names(pool, 50)) == {"b"}


def test_backups_are_balanced_among_themselves_and_filtered_too():
    members = backends("a") + [Backend("y", backup=True), Backend("z", backup=True)]
    pool = pool_of("round_robin", members)
    pool.set_healthy(pool.by_name["a"], False)
    assert Counter(names(pool, 10)) == {"y": 5, "z": 5}
    pool.set_healthy(pool.by_name["y"], False)
    assert set(names(pool, 10)) == {"z"}
    pool.set_healthy(pool.by_name["z"], False)
    assert pool.mode == "empty" and pool.select() is None


def test_healthy_backups_win_over_panic_when_every_primary_is_down():
    # Panic is the answer to "nothing is eligible"; while a backup is up, traffic goes there
    # rather than to primaries known to be down.
    members = backends("a", "b") + [Backend("z", backup=True)]
    pool = pool_of("round_robin", members, panic_threshold=50.0)
    for name in "ab":
        pool.set_healthy(pool.by_name[name], False)
    assert pool.mode == "backup"
    assert set(names(pool, 20)) == {"z"}


def test_nothing_eligible_without_panic_returns_none():
    pool = pool_of("round_robin", ["a", "b", "c"])
    assert pool.panic_threshold == 0.0               # off by default
    for b in pool.backends:
        pool.set_healthy(b, False)
    assert pool.mode == "empty"
    assert pool.select() is None
    assert pool.select(key="k") is None


@pytest.mark.parametrize("algorithm", ALL)
def test_default_pool_never_selects_unhealthy_even_when_all_are_down(algorithm):
    pool = pool_of(algorithm, ["a", "b"], seed=1)
    for b in pool.backends:
        pool.set_healthy(b, False)
    assert pool.select() is None and pool.select(key="k") is None


def test_panic_threshold_spreads_over_all_enabled_primaries():
    pool = pool_of("round_robin", ["a", "b", "c", "d", "e"], panic_threshold=50.0)
    a, b, c, d, e = pool.backends
    pool.set_healthy(a, False)
    pool.set_healthy(b, False)                       # 3 of 5 = 60% >= 50%: normal
    assert pool.mode == "normal"
    assert set(names(pool, 30)) == {"c", "d", "e"}
    pool.set_healthy(c, False)                       # 2 of 5 = 40% < 50%: panic
    pool.set_admin(e, AdminState.DISABLED)           # an operator's "no" still holds
    assert pool.mode == "panic"
    assert Counter(names(pool, 40)) == {"a": 10, "b": 10, "c": 10, "d": 10}
    pool.set_healthy(a, True)
    pool.set_healthy(b, True)                        # 3 of 5 up again: back to normal
    assert pool.mode == "normal"
    assert set(names(pool, 30)) == {"a", "b", "d"}


@pytest.mark.parametrize("algorithm", ALL)
def test_panic_mode_serves_down_backends_with_every_algorithm(algorithm):
    pool = pool_of(algorithm, ["a", "b"], seed=2, panic_threshold=100.0)
    for b in pool.backends:
        pool.set_healthy(b, False)
    assert pool.mode == "panic"
    assert pool.select() is not None and pool.select(key="k") is not None


def test_slow_start_ramps_effective_weight_from_ten_percent_to_full():
    clock = ManualClock(0.0)
    pool = pool_of("weighted", ["a", "b"], clock=clock, slow_start=100.0)
    a, b = pool.backends
    assert b.effective_weight == 1.0                 # at startup nobody ramps
    pool.set_healthy(b, False)
    clock.now = 20.0
    pool.set_healthy(b, True)                        # recovered: the ramp starts now
    assert b.effective_weight == pytest.approx(SLOW_START_MIN)
    assert pool.slow_start_progress(b) == 0.0
    clock.now = 70.0
    pool.select()
    assert b.effective_weight == pytest.approx(0.5)
    assert a.effective_weight == 1.0
    clock.now = 120.0
    pool.select()
    assert b.effective_weight == 1.0
    assert pool.slow_start_progress(b) is None


def test_slow_start_share_grows_window_by_window_with_weighted():
    # A backend recovers at t=20 with a 100 s ramp, advanced in SLOW_START_STEPS steps of
    # 5 s. We send N requests in each 5 s window and count the recovered backend's share.
    # In window k its effective weight is max(0.1, k/20) (1.0 from k = 20 on), so its
    # smooth-WRR share is w / (1 + w). Tolerance: 2 picks per window, since smooth WRR is
    # deterministic and carries at most about one pick of its running value across the
    # boundary where the weights change.
    clock = ManualClock(0.0)
    pool = pool_of("weighted", ["a", "b"], clock=clock, slow_start=100.0)
    b = pool.by_name["b"]
    pool.set_healthy(b, False)
    clock.now = 20.0
    pool.set_healthy(b, True)
    step = 100.0 / SLOW_START_STEPS
    n = 200
    shares = []
    for k in range(SLOW_START_STEPS + 3):
        got = 0
        for j in range(n):
            clock.now = 20.0 + k * step + j * step / n
            got += pick(pool) is b
        w = 1.0 if k >= SLOW_START_STEPS else max(SLOW_START_MIN, k / SLOW_START_STEPS)
        assert abs(got - n * w / (1 + w)) <= 2, (k, got, w)
        shares.append(got / n)
    assert shares[0] < 0.1                               # starts at about 0.1 / 1.1
    assert shares == sorted(shares)                      # never steps back
    assert shares[-1] == pytest.approx(0.5)              # full weight: an equal share


def test_slow_start_applies_to_least_conn():
    # Without slow start least_conn would pour every new request onto the idle newcomer.
    clock = ManualClock(0.0)
    pool = pool_of("least_conn", ["a", "b"], clock=clock, slow_start=100.0)
    a, b = pool.backends
    pool.set_healthy(b, False)
    for _ in range(20):
        pool.on_start(a)                                 # a busy with 20 in flight
    pool.set_healthy(b, True)
    for _ in range(10):
        pool.on_start(pool.select())
    # b at weight 0.1 reaches a's score 20/1 after 2 requests, then they alternate.
    assert b.inflight < 10


def test_backend_added_at_runtime_ramps_but_not_at_startup():
    clock = ManualClock(50.0)
    pool = pool_of("weighted", ["a", "b"], clock=clock, slow_start=30.0)
    assert all(pool.slow_start_progress(x) is None for x in pool.backends)
    pool.set_backends(pool.backends + backends("c"))
    c = pool.by_name["c"]
    assert c.effective_weight == pytest.approx(SLOW_START_MIN)
    assert pool.by_name["a"].effective_weight == 1.0


def test_set_backends_keeps_state_of_backends_that_remain():
    clock = ManualClock(0.0)
    pool = pool_of("least_conn", ["a", "b", "c"], clock=clock)
    a, b, c = pool.backends
    pool.on_start(a)
    pool.on_start(a)
    pool.on_end(a, 0.3)
    pool.set_healthy(b, False)
    pool.set_admin(c, AdminState.DRAINING)
    pool.set_backends([a, b, c] + backends("d"))
    assert (a.inflight, a.started, a.finished) == (1, 2, 1)
    assert not b.healthy and c.admin is AdminState.DRAINING
    assert pool.select() is pool.by_name["d"]          # a still has one in flight
    pool.on_end(a, 0.1)
    assert set(names(pool, 20)) == {"a", "d"}


def test_reload_with_fresh_backend_objects_keeps_live_state_by_name():
    # A config reload builds new Backend objects from the file. A backend whose name remains
    # keeps its live state (in-flight count, health, admin state, EWMA) and takes the new
    # settings (weight, url); a backend new to the pool starts fresh.
    clock = ManualClock(0.0)
    pool = pool_of("weighted", ["a", "b", "c"], clock=clock)
    a, b, c = pool.backends
    pool.on_start(a)
    pool.on_start(a)
    pool.on_end(a, 0.3)
    pool.set_healthy(b, False)
    pool.set_admin(c, AdminState.DISABLED)
    reloaded = [Backend("a", "http://10.0.0.1:80", weight=3), Backend("b"), Backend("c"),
                Backend("d")]
    pool.set_backends(reloaded)
    na, nb, nc, nd = (pool.by_name[n] for n in "abcd")
    assert (na.inflight, na.started) == (1, 2)
    assert na.weight == 3 and na.url == "http://10.0.0.1:80"
    assert not nb.healthy and nb.state == "down"
    assert nc.admin is AdminState.DISABLED
    assert [x.name for x in pool.backends] == ["a", "b", "c", "d"]
    pool.on_end(na, 0.1)                                 # the request started before the reload
    assert na.inflight == 0
    assert Counter(names(pool, 40)) == {"a": 30, "d": 10}


def test_removed_backend_is_not_selected():
    pool = pool_of("round_robin", ["a", "b", "c"])
    a, b, c = pool.backends
    pool.set_backends([a, c])
    assert set(names(pool, 10)) == {"a", "c"}
    assert "b" not in pool.by_name


def test_admin_state_never_overwrites_health():
    pool = pool_of("round_robin", ["a", "b"])
    a = pool.by_name["a"]
    pool.set_healthy(a, False)
    pool.set_admin(a, AdminState.DISABLED)
    pool.set_admin(a, AdminState.ENABLED)
    assert not a.healthy and a.state == "down" and not a.eligible
    assert set(names(pool, 10)) == {"b"}
    # And health never overwrites admin state: recovering while disabled stays disabled.
    pool.set_admin(a, AdminState.DISABLED)
    pool.set_healthy(a, True)
    assert a.admin is AdminState.DISABLED and a.state == "disabled"
    assert set(names(pool, 10)) == {"b"}
    pool.set_admin(a, AdminState.ENABLED)
    assert a.state == "up"
    assert set(names(pool, 10)) == {"a", "b"}


def test_draining_takes_no_new_requests_but_in_flight_ones_finish():
    pool = pool_of("least_conn", ["a", "b"])
    a, b = pool.backends
    pool.on_start(a)
    pool.on_start(a)
    pool.set_admin(a, AdminState.DRAINING)
    assert set(names(pool, 10)) == {"b"}
    pool.on_end(a, 0.1)
    pool.on_end(a, 0.1)
    assert a.inflight == 0 and a.finished == 2
    pool.set_admin(a, AdminState.ENABLED)
    assert "a" in names(pool, 4)


@pytest.mark.parametrize("algorithm", ALL)
def test_accept_predicate_is_bounded_and_honoured(algorithm):
    pool = pool_of(algorithm, ["a", "b", "c", "d"], seed=4)
    calls = []

    def refuse_all(b):
        calls.append(b)
        return False

    assert pool.select(accept=refuse_all) is None
    assert len(calls) <= len(pool.backends)
    assert len(set(calls)) == len(calls)              # nobody asked twice
    only_d = pool.select(key="k", accept=lambda b: b.name == "d")
    assert only_d is not None and only_d.name == "d"


@pytest.mark.parametrize("algorithm", ALL)
def test_retry_exclusion_never_returns_the_excluded_for_every_algorithm(algorithm, clock):
    pool = pool_of(algorithm, backends("a", "b", "c", "d", weights=[1, 2, 3, 4]), seed=7,
                   clock=clock)
    rng = random.Random(7)
    for i in range(1000):
        clock.advance(0.01)
        excluded = set(rng.sample(pool.backends, rng.randint(1, 3)))
        chosen = pool.select(f"k{i}" if i % 2 else None, exclude=excluded)
        assert chosen is not None and chosen not in excluded
        pool.on_start(chosen)
        pool.on_end(chosen, rng.uniform(0.01, 0.2))


def test_make_pool_passes_settings_through(clock):
    pool = make_pool("p", backends("a", "b"), "ewma", rng=random.Random(1), clock=clock,
                     ewma_decay=3.0, slow_start=5.0, panic_threshold=20.0)
    assert pool.algorithm.name == "ewma" and pool.algorithm.ewma_decay == 3.0
    assert (pool.ewma_decay, pool.slow_start, pool.panic_threshold) == (3.0, 5.0, 20.0)


# ---- one invariant over random histories, for every algorithm ---------------------------

from hypothesis import given, settings, strategies as st  # noqa: E402

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["healthy", "unhealthy", "disable", "drain", "enable", "eject",
                         "advance", "select", "finish"]),
        st.integers(0, 4),                         # which backend
        st.frozensets(st.integers(0, 4), max_size=5),   # exclusion set for "select"
    ),
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(algorithm=st.sampled_from(ALL), actions=ACTIONS, with_backup=st.booleans(),
       panic=st.sampled_from([0.0, 50.0]))
def test_select_returns_an_eligible_unexcluded_backend_or_none_only_when_there_is_none(
        algorithm, actions, with_backup, panic):
    # Whatever happened before, select() returns a backend of the active set that is not
    # excluded, and returns None only when every such backend is excluded. The active set:
    # eligible primaries; else eligible backups; with panic on (50%) and fewer than half the
    # primaries eligible and no backup up, every enabled primary.
    clock = ManualClock()
    members = backends("a", "b", "c", "d") + [Backend("z", backup=with_backup)]
    pool = pool_of(algorithm, members, seed=1, clock=clock, panic_threshold=panic)
    started = []
    for action, i, excluded_ix in actions:
        b = pool.backends[i]
        if action == "healthy":
            pool.set_healthy(b, True)
        elif action == "unhealthy":
            pool.set_healthy(b, False)
        elif action == "disable":
            pool.set_admin(b, AdminState.DISABLED)
        elif action == "drain":
            pool.set_admin(b, AdminState.DRAINING)
        elif action == "enable":
            pool.set_admin(b, AdminState.ENABLED)
        elif action == "eject":
            pool.eject(b, until=clock() + 1.0 + i)
        elif action == "advance":
            clock.advance(0.5 * (i + 1))
        elif action == "finish" and started:
            pool.on_end(started.pop(i % len(started)), 0.01 * (i + 1))
        elif action == "select":
            excluded = {pool.backends[j] for j in excluded_ix}
            key = f"key{i}" if i % 2 else None
            chosen = pool.select(key, exclude=excluded)
            now = clock()
            eligible = [x for x in pool.backends
                        if x.healthy and x.admin is AdminState.ENABLED
                        and not (x.ejected_until and now < x.ejected_until)]
            primaries = [x for x in pool.backends if not x.backup]
            up = [x for x in eligible if not x.backup]
            backups_up = [x for x in eligible if x.backup]
            if not up and backups_up:
                active = backups_up
            elif panic and 100.0 * len(up) / len(primaries) < panic:
                active = [x for x in primaries if x.admin is AdminState.ENABLED]
            else:
                active = up
            allowed = [x for x in active if x not in excluded]
            if chosen is None:
                assert allowed == []
            else:
                assert chosen in allowed
                pool.on_start(chosen)
                started.append(chosen)


@pytest.mark.parametrize("algorithm", ALL)
def test_a_traced_select_chooses_exactly_as_an_untraced_one(algorithm):
    # Two identical pools, one asked with a trace: the same backends in the same order,
    # with retries (exclusions) and an ineligible backend among them.
    members = ("a", "b", "c", "d", "e", "f")
    plain = pool_of(algorithm, backends(*members, weights=[1, 2, 3, 1, 2, 1]), seed=9)
    traced = pool_of(algorithm, backends(*members, weights=[1, 2, 3, 1, 2, 1]), seed=9)
    for pool in (plain, traced):
        pool.set_healthy(pool.by_name["d"], False)
    for i in range(300):
        key = f"k{i % 17}"
        exclude_plain = [plain.by_name["a"]] if i % 3 == 0 else []
        exclude_traced = [traced.by_name["a"]] if i % 3 == 0 else []
        offered = []
        want = plain.select(key, exclude=exclude_plain)
        got = traced.select(key, exclude=exclude_traced, trace=offered.append)
        assert got.name == want.name
        # The trace heard the candidates up to the one taken, and both of a drawn pair.
        if traced.algorithm.draws_pair:
            assert len(offered) >= 2 and got in offered
        else:
            assert offered[-1] is got
        for pool, b in ((plain, want), (traced, got)):
            pool.on_start(b)
            pool.on_end(b, 0.01)


def test_ewma_estimate_is_kept_only_where_the_algorithm_reads_it_and_survives_a_reload():
    # Peak-EWMA costs two exponentials per request: only the ewma algorithm reads it, so
    # only its pools keep it; there it is live state a reload carries over like the rest.
    clock = ManualClock(0.0)
    plain = pool_of("round_robin", ["a"], clock=clock)
    plain.on_start(plain.backends[0])
    plain.on_end(plain.backends[0], 0.3)
    assert plain.backends[0].ewma == 0.0
    pool = pool_of("ewma", ["a", "b"], clock=clock)
    a = pool.backends[0]
    pool.on_start(a)
    pool.on_end(a, 0.3)
    pool.set_backends([Backend("a"), Backend("b"), Backend("c")])
    assert pool.by_name["a"] is a and a.ewma == pytest.approx(0.3)
