"""The mesh suite's harness: pods as network namespaces with Istio's iptables capture, a real
Envoy sidecar each (uid 1337) configured by pilotfish, Bookinfo-like apps, and scenarios from
Istio's traffic-management tasks. See ../README.md, "Mesh suite".

`Mesh` is one test's world, `scenario.load` reads a `mesh_scenarios/<name>/`, `Runner` plays it.
"""

from .mesh import Mesh
from .report import failure_report
from .runner import Runner, StepFailed
from .scenario import Scenario, discover, load

__all__ = ["Mesh", "Runner", "Scenario", "StepFailed", "discover", "failure_report", "load"]
