"""A training run's step count from a time budget (train/budget.py) and the schedule it sets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from train.budget import StepPlanner
from train.train import lr_factor


def _run(planner: StepPlanner, rates: list[tuple[float, float]], every_s: float = 1.0):
    """Marks at every `every_s` seconds of a run whose rate (steps/s) is `rates[k][1]` from
    `rates[k][0]` seconds on; returns the plan."""
    t, step = 0.0, planner.start_step
    while t < planner.budget_s * 2:
        rate = [r for since, r in rates if t >= since][-1]
        t += every_s
        step += int(round(rate * every_s))
        plan = planner.mark(t, step)
        if plan is not None:
            return plan, t, step
    raise AssertionError("no plan")


def test_a_steady_run_fills_its_budget() -> None:
    plan, t, step = _run(StepPlanner(100.0), [(0.0, 10.0)])
    assert t == 15.0 and step == 150 and plan.hold == 150          # 15% of the budget
    assert plan.steps_per_s == pytest.approx(10.0)
    assert plan.total == 150 + int(10.0 * 85.0 * 0.97)


def test_the_start_up_does_not_count_in_the_rate() -> None:
    # Two steps/s for the first 5 s (loaders and the GPU warming up), then 10.
    plan, _, step = _run(StepPlanner(400.0, start_step=1000), [(0.0, 2.0), (5.0, 10.0)])
    assert plan.steps_per_s == pytest.approx(10.0)
    assert plan.total == step + int(10.0 * (400.0 - 60.0) * 0.97)


def test_a_long_budget_settles_in_at_most_90_s() -> None:
    plan, t, _ = _run(StepPlanner(3600.0), [(0.0, 5.0)], every_s=10.0)
    assert t == 90.0 and plan.steps_per_s == pytest.approx(5.0)


def test_a_plan_made_after_the_budget_ends_the_run_there() -> None:
    planner = StepPlanner(10.0)
    plan = planner.mark(12.0, 40)             # the first log record came late
    assert plan is not None and plan.total == plan.hold == 40
    assert planner.mark(13.0, 41) is None     # the plan is made once


@pytest.mark.parametrize("budget", [0.0, -5.0, float("inf"), float("nan")])
def test_a_budget_must_be_a_positive_number_of_seconds(budget: float) -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        StepPlanner(budget)


@settings(deadline=None, max_examples=60)
@given(st.integers(0, 50), st.integers(0, 5000), st.integers(1, 20000))
def test_the_held_schedule_is_the_peak_then_a_continuous_cosine(warmup: int, hold: int, length: int) -> None:
    total = max(warmup, hold) + length
    args = dict(warmup=warmup, total=total, schedule="cosine", final_fraction=0.01)
    begin = max(warmup, hold)
    if warmup:
        assert lr_factor(warmup - 1, hold=hold, **args) == 1.0
    assert lr_factor(begin, hold=hold, **args) == 1.0                       # no jump where the decay starts
    assert lr_factor(begin + 1, hold=hold, **args) <= 1.0
    assert abs(lr_factor(begin + 1, hold=hold, **args) - 1.0) < 30.0 / length ** 2 + 1e-9
    assert lr_factor(total, hold=hold, **args) == pytest.approx(0.01)
    steps = range(begin, total + 1, max(1, length // 50))
    values = [lr_factor(s, hold=hold, **args) for s in steps]
    assert all(a >= b for a, b in zip(values, values[1:]))                  # it only decays
    assert lr_factor(begin + length // 2, hold=hold, **args) == pytest.approx(
        lr_factor(warmup + length // 2, warmup=warmup, total=warmup + length, schedule="cosine",
                  final_fraction=0.01))                                     # the plain cosine, shifted
