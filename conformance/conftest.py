"""Fixtures: `make_stack` builds a `Stack` that is torn down (and checked) after the test.

Teardown asserts Envoy rejected no xDS update; a failing test gets pilotfish's and Envoy's log
tails, the routes Envoy holds, and backend traffic appended to its report.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Behaviour, Stack, rejection_problems  # noqa: E402

_STACKS = pytest.StashKey[list[Stack]]()

MakeStack = Callable[..., Stack]


@pytest.fixture
def make_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStack]:
    stacks: list[Stack] = []
    request.node.stash[_STACKS] = stacks

    def make(
        backends: Mapping[str, Behaviour] | None = None,
        gateway_labels: Mapping[str, str] | None = None,
        extra_ports: Iterable[str] = (),
        xds_variant: str = "sotw",
        secure_xds: bool = False,
    ) -> Stack:
        work = tmp_path / f"stack{len(stacks)}"
        work.mkdir()
        kwargs = {} if gateway_labels is None else {"gateway_labels": gateway_labels}
        stack = Stack(
            work, backends or {}, extra_ports=extra_ports, xds_variant=xds_variant,
            secure_xds=secure_xds, **kwargs
        )
        stacks.append(stack)
        return stack

    yield make

    problems: list[str] = []
    for stack in stacks:
        try:
            problems += rejection_problems(stack.envoys)
        finally:
            stack.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    outcome = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    for i, stack in enumerate(item.stash.get(_STACKS, [])):
        try:
            sections = stack.failure_report()
        except Exception as e:  # noqa: BLE001 - a report must not hide the failure
            sections = [("failure report", f"could not collect: {e!r}")]
        for title, text in sections:
            report.sections.append((f"stack {i}: {title}", text))
