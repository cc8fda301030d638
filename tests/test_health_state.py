"""The rise/fall state machine: flips only after streaks, and says when it flipped."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lbctl.health.state import HealthState


def run(state: HealthState, results: str) -> str:
    """Feed "+"/"-" results; return the verdict after each, with "!" where it flipped."""
    out = []
    for r in results:
        flipped = state.observe(r == "+")
        out.append(("U" if state.healthy else "D") + ("!" if flipped else ""))
    return " ".join(out)


def test_fall_needs_consecutive_failures_and_a_success_resets_the_streak():
    s = HealthState(rise=2, fall=3)
    #                  -  -  +  -  -  -   (the success breaks the first streak)
    assert run(s, "--+---") == "U U U U U D!"
    assert s.streak == 3


def test_rise_needs_consecutive_successes():
    s = HealthState(rise=2, fall=1, healthy=False)
    assert run(s, "+-++") == "D D D U!"


def test_initial_down_takes_one_success_the_first_time_only():
    s = HealthState.initial(rise=3, fall=1, initial="down")
    assert not s.healthy
    assert run(s, "-+") == "D U!"
    assert s.streak == 1
    # Afterwards the usual rise applies.
    assert run(s, "-+++") == "D! D D U!"


def test_state_round_trips_through_a_dict():
    s = HealthState(rise=2, fall=3)
    s.observe(False)
    back = HealthState.from_dict(s.to_dict(), 2, 3)
    assert back == s
    assert HealthState.from_dict({"healthy": "yes", "count": 1}, 2, 3) is None
    assert HealthState.from_dict({"healthy": True, "count": -1}, 2, 3) is None
    assert HealthState.from_dict(None, 2, 3) is None


@given(st.integers(1, 5), st.integers(1, 5), st.lists(st.booleans(), max_size=60))
def test_a_flip_always_follows_exactly_a_full_streak(rise, fall, results):
    s = HealthState(rise=rise, fall=fall)
    streak = 0
    for ok in results:
        before = s.healthy
        streak = streak + 1 if ok != before else 0
        flipped = s.observe(ok)
        needed = rise if ok else fall
        assert flipped == (ok != before and streak == needed)
        if flipped:
            streak = 0
            assert s.healthy == ok
