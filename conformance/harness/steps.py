"""What every scenario runner shares (the gateway suite's and the mesh suite's): playing steps in
order until one fails, and re-trying a step's checks while config may still be on its way."""

from __future__ import annotations

import time
from typing import Callable, Generic, Sequence, TypeVar

StepT = TypeVar("StepT")
ResultT = TypeVar("ResultT")


class StepFailed(AssertionError):
    """A scenario step did not get what it expected; the message says what it got instead.

    An AssertionError, so pytest reports it as a test failure rather than an error."""


class StepRunner(Generic[StepT]):
    """Plays `steps` in order; the first that fails raises and the rest do not run, since
    they would start from a state the scenario did not mean. Subclasses play one step."""

    def __init__(self, steps: Sequence[StepT]) -> None:
        self.steps = steps

    def run(self) -> None:
        for step in self.steps:
            self.run_step(step)

    def run_step(self, step: StepT) -> None:
        raise NotImplementedError


def attempt_until(
    attempt: Callable[[], tuple[ResultT, list[str]]], retry_until: float | None, pause: float
) -> tuple[ResultT, list[str], int]:
    """Calls `attempt` (which returns what it got and the problems with it) until it finds no
    problems or `retry_until` seconds have passed (None: once), sleeping `pause` in between:
    pilotfish pushes config asynchronously, so a step may need a moment before it holds.

    Returns the last attempt's result and problems, and how many attempts were made."""
    deadline = time.monotonic() + (retry_until or 0)
    attempts = 0
    while True:
        attempts += 1
        result, problems = attempt()
        if not problems or time.monotonic() >= deadline:
            return result, problems, attempts
        time.sleep(pause)
