"""Runs a scenario's steps against a started `Stack`."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from dataclasses import dataclass

from .client import Request, Response
from .expect import (
    check_backend_requests,
    check_distribution,
    check_response,
    check_same_backend,
)
from .scenario import (
    BackendStep,
    RemoveStep,
    ReplaceStep,
    RequestStep,
    Scenario,
    SleepStep,
    Step,
    SwitchStep,
    WaitLogStep,
)
from .stack import Stack
from .steps import StepFailed, StepRunner, attempt_until
from .template import render


class Runner(StepRunner[Step]):
    def __init__(self, scenario: Scenario, stack: Stack) -> None:
        super().__init__(scenario.steps)
        self.scenario = scenario
        self.stack = stack
        # Log offsets at the last config change: `wait_log` looks only at what came after.
        self._log_marks = {"pilotfish": 0, "envoy": 0}

    def run_step(self, step: Step) -> None:
        if isinstance(step, RequestStep):
            self._request(step)
        elif isinstance(step, BackendStep):
            self.stack.backends[step.backend].configure(
                status=step.status,
                delay=step.delay,
                fail_next=step.fail_next,
                fail_status=step.fail_status,
            )
        elif isinstance(step, ReplaceStep):
            self._mark_logs()
            self.stack.write_config(step.source, step.file)
        elif isinstance(step, RemoveStep):
            self._mark_logs()
            self.stack.remove_config(step.file)
        elif isinstance(step, WaitLogStep):
            self._wait_log(step)
        elif isinstance(step, SleepStep):
            time.sleep(step.seconds)
        elif isinstance(step, SwitchStep):
            self._switch(step)
        else:  # pragma: no cover - the parser makes only the kinds above
            raise TypeError(f"unknown step {step!r}")

    # --- request ---------------------------------------------------------------------------

    def _render(self, request: Request) -> Request:
        """Substitutes placeholders (`{{gateway.port}}`) in a request's path, host and headers."""
        values = self.stack.template_values()
        source = f"{self.scenario.name}/scenario.yaml"

        def r(text: str) -> str:
            return render(text, values, source)

        return dataclasses.replace(
            request,
            path=r(request.path),
            host=None if request.host is None else r(request.host),
            headers={k: r(v) for k, v in request.headers.items()},
        )

    def _request(self, step: RequestStep) -> None:
        step = dataclasses.replace(step, request=self._render(step.request))
        responses, problems, attempts = attempt_until(
            lambda: self._attempt(step), step.retry_until, pause=0.1
        )
        if not problems:
            return
        sample = "\n".join(f"  - {r.describe()}" for r in responses[:3])
        listed = "\n".join(f"  * {p}" for p in problems[:12])
        more = f"\n  … and {len(problems) - 12} more" if len(problems) > 12 else ""
        retried = f" (after {attempts} attempts over {step.retry_until}s)" if attempts > 1 else ""
        raise StepFailed(
            f"{step.name}: {step.request.describe()} x{step.repeat}{retried}:\n"
            f"{listed}{more}\nfirst responses:\n{sample}"
        )

    def _attempt(self, step: RequestStep) -> tuple[list[Response], list[str]]:
        before = self._backend_counts()
        responses = [
            self.stack.send(step.request, port=step.request.port) for _ in range(step.repeat)
        ]
        problems: list[str] = []
        for i, resp in enumerate(responses):
            for p in check_response(step.expect, resp):
                problems.append(f"request {i + 1}: {p}" if step.repeat > 1 else p)
        problems += check_distribution(step.expect, responses)
        problems += check_same_backend(step.expect, responses)
        if step.expect.backend_requests:
            problems += self._check_backend_requests(step, before)
        return responses, problems

    def _check_backend_requests(self, step: RequestStep, before: dict[str, int]) -> list[str]:
        """Counts may still be rising (mirrored requests are sent asynchronously): a count
        below the expected one is re-read for up to a second; one above fails at once."""
        deadline = time.monotonic() + 1.0
        while True:
            after = self._backend_counts()
            delta = {name: after[name] - before[name] for name in after}
            problems = check_backend_requests(step.expect, delta)
            short = any(delta.get(n, 0) < want for n, want in step.expect.backend_requests.items())
            if not problems or not short or time.monotonic() >= deadline:
                return problems
            time.sleep(0.05)

    def _backend_counts(self) -> dict[str, int]:
        return {name: b.request_count() for name, b in self.stack.backends.items()}

    # --- logs ------------------------------------------------------------------------------

    def _process(self, source: str):
        owner = self.stack.pilotfish if source == "pilotfish" else self.stack.envoy
        assert owner is not None, f"{source} is not running"
        return owner.process

    def _mark_logs(self) -> None:
        for source in self._log_marks:
            self._log_marks[source] = self._process(source).log_size()

    def _wait_log(self, step: WaitLogStep) -> None:
        process = self._process(step.source)
        since = self._log_marks[step.source]
        if not process.wait_for_log(step.contains, step.timeout, since=since):
            new = process.log_text()[since:].splitlines()
            raise StepFailed(
                f"{step.name}: {step.source} logged no line containing all of "
                f"{list(step.contains)} within {step.timeout}s of the last config change; "
                f"it logged since then:\n" + "\n".join(new[-40:])
            )

    # --- switch ----------------------------------------------------------------------------

    def _switch(self, step: SwitchStep) -> None:
        step = dataclasses.replace(step, request=self._render(step.request))
        traffic = _Traffic(self.stack, step.request, step.interval)
        traffic.start()
        try:
            time.sleep(0.3)  # baseline traffic before the change
            self._mark_logs()
            changed_at = time.monotonic()
            self.stack.write_config(step.replace.source, step.replace.file)
            first_new = traffic.wait_for_backend(step.to_backend, step.within + 2.0)
            time.sleep(step.settle if first_new is not None else 0)
        finally:
            samples = traffic.stop()
        problems = _switch_problems(step, samples, changed_at)
        if problems:
            raise StepFailed(
                f"{step.name}: {step.request.describe()} sent continuously while "
                f"{step.replace.file} was replaced by {step.replace.source.name}:\n"
                + "\n".join(f"  * {p}" for p in problems)
                + "\ntimeline (seconds from the change → backend/status):\n"
                + _timeline(samples, changed_at)
            )


@dataclass(frozen=True)
class _Sample:
    sent: float
    response: Response


class _Traffic:
    """A client thread sending `request` back to back (with `interval` pauses)."""

    def __init__(self, stack: Stack, request: Request, interval: float) -> None:
        self._stack = stack
        self._request = request
        self._interval = interval
        self._samples: list[_Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._new_seen = threading.Condition(self._lock)
        self._thread = threading.Thread(target=self._loop, name="traffic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            resp = self._stack.send(self._request, timeout=5.0, port=self._request.port)
            with self._lock:
                self._samples.append(_Sample(sent, resp))
                self._new_seen.notify_all()
            self._stop.wait(self._interval)

    def wait_for_backend(self, backend: str, timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for s in self._samples:
                    if s.response.backend == backend:
                        return s.sent
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._new_seen.wait(left)

    def stop(self) -> list[_Sample]:
        self._stop.set()
        self._thread.join(timeout=10)
        with self._lock:
            return list(self._samples)


def _switch_problems(step: SwitchStep, samples: list[_Sample], changed_at: float) -> list[str]:
    problems: list[str] = []
    failed = [s for s in samples if s.response.error or s.response.status != 200]
    if len(failed) > step.max_failed:
        shown = "; ".join(
            f"t={s.sent - changed_at:+.3f}s {s.response.describe()}" for s in failed[:5]
        )
        problems.append(
            f"{len(failed)} of {len(samples)} requests failed (allowed {step.max_failed}): {shown}"
        )
    before = [s for s in samples if s.sent < changed_at]
    if not before:
        problems.append("no requests completed before the change")
    wrong_before = Counter(s.response.backend for s in before if s.response.backend != step.from_backend)
    if wrong_before:
        problems.append(
            f"before the change requests went to {dict(wrong_before)}, want all to {step.from_backend}"
        )
    after = [s for s in samples if s.sent >= changed_at]
    to_new = [i for i, s in enumerate(after) if s.response.backend == step.to_backend]
    if not to_new:
        problems.append(
            f"no request reached {step.to_backend} within {step.within + 2.0}s of the change"
        )
        return problems
    # The switch is at the first request after which every answer comes from the new backend.
    last_old = max(
        (i for i, s in enumerate(after) if s.response.backend != step.to_backend), default=-1
    )
    if last_old + 1 >= len(after):
        problems.append(f"the last request after the change did not reach {step.to_backend}")
        return problems
    switched_at = after[last_old + 1].sent - changed_at
    if switched_at > step.within:
        problems.append(
            f"routing settled on {step.to_backend} {switched_at:.3f}s after the change, "
            f"want within {step.within}s"
        )
    flapped = [
        s for s in after[to_new[0]:] if s.response.backend not in (step.to_backend, None)
    ]
    if flapped:
        problems.append(
            f"{len(flapped)} requests went back to {Counter(s.response.backend for s in flapped)} "
            f"after reaching {step.to_backend}"
        )
    return problems


def _timeline(samples: list[_Sample], changed_at: float) -> str:
    """Runs of equal outcomes: `[-0.300s .. -0.010s] reviews-v1/200 x25`."""
    runs: list[tuple[float, float, str, int]] = []
    for s in samples:
        label = f"{s.response.backend or '-'}/{s.response.status or s.response.error}"
        t = s.sent - changed_at
        if runs and runs[-1][2] == label:
            start, _, _, n = runs[-1]
            runs[-1] = (start, t, label, n + 1)
        else:
            runs.append((t, t, label, 1))
    return "\n".join(f"  [{a:+.3f}s .. {b:+.3f}s] {label} x{n}" for a, b, label, n in runs[:40])
