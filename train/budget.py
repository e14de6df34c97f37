"""A run's step count from a time budget, measured in the run itself.

On a borrowed GPU machine the training time is what is scarce, and the rate is only known there.
`scripts/gpu_train.sh` used to measure it with a throw-away run of 80 steps and size the real run
from that, but a cold start is slow: for stages 22, 23 and 24 the probe read 2,787, 2,983 and
2,638 images/s where the runs then went at a median 3,516, 3,330 and 3,982, so they trained for
187, 144 and 224 s of the 280, 190 and 400 s they were given (docs/results.md, "The shipped
model"). Here the run measures
itself instead. It trains at its peak learning rate (after the warm-up) for the first part of the
budget, the settling time; at the first log record after it, the rate over the second half of that
time (the first half holds the loaders' and the GPU's start-up) sets the total, and the cosine
decay runs from that step to the total. The plan is made once, so the schedule is a function of the
step alone from then on, and a resumed run keeps it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    """The planned run: `total` steps, the cosine decay starting at step `hold`."""

    total: int
    hold: int
    steps_per_s: float
    budget_s: float

    def to_dict(self) -> dict[str, float | int]:
        return {"total": self.total, "hold": self.hold, "steps_per_s": round(self.steps_per_s, 3),
                "budget_s": self.budget_s}

    @classmethod
    def from_dict(cls, d: dict[str, float | int]) -> "Plan":
        return cls(int(d["total"]), int(d["hold"]), float(d["steps_per_s"]), float(d["budget_s"]))


@dataclass
class StepPlanner:
    """Call `mark(elapsed_s, step)` at each log record; it returns the plan once, when made.

    `elapsed_s` counts from the budget's start (the run's first step, or its resumption) and
    `step` is the optimiser step reached. The budget covers the training steps; the final
    validation and writing the model come after it (`safety` leaves room for the rate to sag).
    """

    budget_s: float
    start_step: int = 0
    settle_fraction: float = 0.15      # of the budget, before the rate is read ...
    max_settle_s: float = 90.0         # ... but at most this long
    safety: float = 0.97
    marks: list[tuple[float, int]] = field(default_factory=list)
    plan: Plan | None = None

    def __post_init__(self) -> None:
        if not (self.budget_s > 0 and math.isfinite(self.budget_s)):
            raise ValueError(f"the time budget must be a positive number of seconds (got {self.budget_s})")

    @property
    def settle_s(self) -> float:
        return min(self.settle_fraction * self.budget_s, self.max_settle_s)

    def mark(self, elapsed_s: float, step: int) -> Plan | None:
        if self.plan is not None:
            return None
        self.marks.append((elapsed_s, step))
        if elapsed_s < self.settle_s:
            return None
        # The rate over the marks after half the settling time (the start-up is in the first half).
        t0, s0 = next(((t, s) for t, s in self.marks if t >= elapsed_s / 2), (0.0, self.start_step))
        if elapsed_s - t0 <= 0 or step - s0 <= 0:
            t0, s0 = 0.0, self.start_step
        rate = (step - s0) / (elapsed_s - t0) if elapsed_s > t0 else 0.0
        left = max(self.budget_s - elapsed_s, 0.0)
        self.plan = Plan(total=step + int(rate * left * self.safety), hold=step, steps_per_s=rate,
                         budget_s=self.budget_s)
        return self.plan
