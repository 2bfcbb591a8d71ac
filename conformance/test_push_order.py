"""xDS make-before-break, read from the order Envoy received updates in (its config:debug log).

The xDS protocol's eventual-consistency rules: CDS first, EDS for new clusters after their CDS,
and an RDS update that routes to a new cluster only after that cluster's EDS; otherwise Envoy
briefly routes to a cluster that is still warming (503, no body: "no cluster"). Traffic
catches that window rarely (it lasts about a millisecond); the order Envoy logs is exact.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import Behaviour, Request
from harness.net import wait_until

LIVE_EDIT = Path(__file__).resolve().parent / "scenarios" / "live-edit"
# SotW: "Received gRPC message for <type>"; delta: "Received DeltaDiscoveryResponse for <type>".
_RECEIVED = re.compile(
    r"Received (?:gRPC message|DeltaDiscoveryResponse) for "
    r"type\.googleapis\.com/envoy\.[a-z.]+\.v3\.(\w+)"
)


@pytest.mark.parametrize("xds_variant", ["sotw", "delta"])
def test_eds_for_a_new_cluster_arrives_before_the_route_to_it(make_stack, xds_variant: str) -> None:
    stack = make_stack(
        backends={"web-v1": Behaviour(), "web-v2": Behaviour(), "web-v3": Behaviour()},
        xds_variant=xds_variant,
    )
    stack.load_config_dir(LIVE_EDIT / "config")
    stack.start()
    assert stack.envoy is not None
    mark = stack.envoy.process.log_size()

    stack.write_config(LIVE_EDIT / "alt" / "virtual-service-v3-with-service.yaml", "virtual-service.yaml")
    assert wait_until(lambda: stack.send(Request(path="/")).backend == "web-v3", 5.0, 0.05), (
        "the edit adding Service web-v3 and routing to it never took effect"
    )
    received = _RECEIVED.findall(stack.envoy.process.log_text()[mark:])
    assert "Cluster" in received and "RouteConfiguration" in received, received
    cds = received.index("Cluster")
    rds = received.index("RouteConfiguration")
    eds = received.index("ClusterLoadAssignment", cds) if "ClusterLoadAssignment" in received[cds:] else None
    assert eds is not None and cds < eds < rds, (
        "after an edit adding a Service and a route to it, Envoy received "
        f"{' → '.join(received)}; make-before-break needs Cluster → ClusterLoadAssignment → "
        "RouteConfiguration (an RDS update before the new cluster's EDS makes Envoy answer 503 "
        "'no cluster' until the EDS arrives)"
    )
