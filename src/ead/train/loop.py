"""The training loop that every run shares, the generator's (generator.py) and the property
predictor's (predictor.py): step until max_steps, a stop request (SIGTERM / SIGINT) or --max-hours,
write the log rows each run declares, checkpoint every ckpt_every steps and at the end. What a step
does, what a row holds and what a checkpoint contains is the run's `Objective`.

Exact resume: the batch order is a function of (seed, epoch) and the noise of (seed, step, rank),
so a run restored from a checkpoint at step k continues with the very batches and noise it would
have seen.
"""

from __future__ import annotations

import signal
import time
from typing import Iterator, Protocol

from .log import CsvLog


class Objective(Protocol):
    """What a run trains, as `run_loop` drives it."""

    def train_step(self, step: int) -> None:
        """One optimisation step on the batch of step `step` (a function of the step alone)."""

    def rows(self, step: int) -> Iterator[dict]:
        """The log rows due once `step` steps are done (written as they come)."""

    def save(self, step: int) -> None:
        """Write a checkpoint at `step`."""


def run_loop(objective: Objective, step: int, max_steps: int, ckpt_every: int, clock: "RunClock",
             log: CsvLog | None = None, bar=None) -> int:
    """Train from `step` until max_steps or the clock stops the run; returns the last step. A
    checkpoint is written every ckpt_every steps and at the end (a stopped run resumes there)."""
    saved = step if step > 0 else None   # a resumed run's checkpoint at `step` is on disk already
    try:
        while step < max_steps and clock.keep_going():
            objective.train_step(step)
            step += 1
            if bar is not None:
                bar.update(1)
            for row in objective.rows(step):
                if log is not None:
                    log.write(row)
            if step % ckpt_every == 0:
                objective.save(step)
                saved = step
        if saved != step:
            objective.save(step)
    finally:
        if bar is not None:
            bar.close()
        clock.restore()
        if log is not None:
            log.close()
    return step


class RunClock:
    """A run's training time across resumes (`elapsed` seconds: the checkpoint's plus this
    process's), its --max-hours, and the stop request of SIGTERM / SIGINT: the handlers set
    `stopped`, the loop finishes its step and checkpoints. `restore()` puts the old handlers back."""

    def __init__(self, elapsed: float = 0.0, max_hours: float | None = None):
        self._base, self._t0, self.max_hours = float(elapsed), time.time(), max_hours
        self.stopped = False
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum, frame):
        self.stopped = True

    @property
    def elapsed(self) -> float:
        return self._base + (time.time() - self._t0)

    def out_of_time(self) -> bool:
        return self.max_hours is not None and self.elapsed > self.max_hours * 3600

    def keep_going(self) -> bool:
        return not self.stopped and not self.out_of_time()

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
