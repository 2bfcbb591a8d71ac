"""Conformance harness: pilotfish + a stock Envoy gateway + loopback HTTP backends.

`Stack` starts the processes for one test, `scenario.load` reads a scenario dir and
`Runner` plays its steps. See ../README.md.
"""

from .backend import Backend, Behaviour
from .client import Request, Response, Tls, send
from .envoy import Envoy, assert_no_rejected_updates, rejection_problems
from .pilotfish import HarnessError, Pilotfish
from .runner import Runner
from .scenario import Scenario, discover, load
from .stack import Stack
from .steps import StepFailed
from .strict import ScenarioError

__all__ = [
    "Backend",
    "Behaviour",
    "Envoy",
    "HarnessError",
    "Pilotfish",
    "Request",
    "Response",
    "Runner",
    "Scenario",
    "ScenarioError",
    "Stack",
    "StepFailed",
    "Tls",
    "assert_no_rejected_updates",
    "discover",
    "load",
    "rejection_problems",
    "send",
]
