"""``run.time_budget_minutes``: fit a run's steps into a wall-clock budget on the machine at hand.

The budget covers the training loop: steps, data loading, checkpoints and evaluations (the synthesis
of cached cases before the loop is not counted). The pace is measured over the first steps of a call
and again every REFIT_EVERY steps, so that the step count follows a machine that slows down or speeds
up (other jobs on a shared host), and ``optim['steps']`` is set to what fits: the learning-rate schedule
always ends at the run's last step.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The first steps of a call are slow (allocations, caches): the first pace is the mean wall time per
# step between these two steps of the call.
PACE_STEPS = (5, 25)
REFIT_EVERY = 100


def budgeted_steps(configured: int, done: int, pace_s: float, left_s: float) -> int:
    """Total steps of a run with ``done`` steps taken, ``left_s`` seconds left and ``pace_s`` seconds a
    step: never more than ``configured``, never fewer than ``done``."""
    if pace_s <= 0:
        return configured
    return max(done, min(configured, done + int(left_s // pace_s)))


class StepBudget:
    """Sets ``optim['steps']`` (in place) to what fits ``minutes`` of training-loop wall time.

    ``state`` is what a checkpoint keeps (``self.state()``): a resumed run goes on spending the same
    budget. ``agree`` makes every process of a distributed run take the same step count (rank 0's).
    """

    def __init__(self, minutes: float, optim: dict, validate_every: int, state: dict | None = None,
                 clock: Callable[[], float] = time.perf_counter, agree: Callable[[int], int] = int):
        self.optim, self.validate_every, self.clock, self.agree = optim, int(validate_every), clock, agree
        self.record = dict(state) if state else {
            "minutes": float(minutes), "configured_steps": int(optim["steps"]), "steps": int(optim["steps"]),
            "seconds_per_step": None, "evaluation_s": 0.0, "spent_s": 0.0, "refits": 0,
        }
        self.spent_before = float(self.record["spent_s"])
        self.call_start = clock()
        self.call_steps = 0
        self.window: list | None = None  # [step, time, evaluation seconds inside the window]

    def spent_s(self) -> float:
        return self.spent_before + self.clock() - self.call_start

    def state(self) -> dict:
        return {**self.record, "spent_s": self.spent_s()}

    def evaluated(self, seconds: float) -> None:
        """An evaluation took ``seconds``: it counts against the budget but not in the pace."""
        self.record["evaluation_s"] = float(seconds)
        if self.window is not None:
            self.window[2] += seconds

    def after_step(self, step: int) -> bool:
        """Call after each step (``step`` = steps done); True when ``optim['steps']`` was decided for the
        first time or changed."""
        self.call_steps += 1
        if self.call_steps == PACE_STEPS[0]:
            self.window = [step, self.clock(), 0.0]
            return False
        due = self.call_steps == PACE_STEPS[1] or (self.call_steps > PACE_STEPS[1] and step % REFIT_EVERY == 0)
        if self.window is None or not due:
            return False
        start_step, start_time, evaluation_s = self.window
        now = self.clock()
        pace = (now - start_time - evaluation_s) / max(1, step - start_step)
        self.window = [step, now, 0.0]
        before = self.optim["steps"]
        self._fit(step, pace)
        return self.record["refits"] == 1 or self.optim["steps"] != before

    def _fit(self, step: int, pace: float) -> None:
        configured = self.record["configured_steps"]
        left = self.record["minutes"] * 60.0 - self.spent_s()
        steps = budgeted_steps(configured, step, pace, left)
        if self.record["evaluation_s"] > 0:
            # The evaluations still to come (every validate_every steps, and at the last step) take
            # about as long as the last one did.
            coming = steps // self.validate_every - step // self.validate_every + 1
            steps = budgeted_steps(configured, step, pace, left - coming * self.record["evaluation_s"])
        steps = self.agree(steps)
        self.optim["steps"] = steps
        self.record.update(steps=steps, seconds_per_step=pace, refits=self.record["refits"] + 1)
