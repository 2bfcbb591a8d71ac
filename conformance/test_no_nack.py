"""Valid config that is easy to translate into something Envoy rejects: a gateway Envoy and a
sidecar-typed Envoy must both accept every update (the fixture's teardown checks
`update_rejected` is zero for every type)."""

from __future__ import annotations

from pathlib import Path

from harness import Request
from harness.pilotfish import HarnessError
from harness.net import wait_until

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "no-nack" / "edge-cases.yaml"
SIDECAR_ID = "sidecar~127.0.0.1~reviews-v1-abc.default~default.svc.cluster.local"


def _write(stack) -> None:
    # A direct-response body over Envoy's 4 KiB default limit.
    text = FIXTURE.read_text().replace("{{big_body}}", "x" * 6000)
    rendered = stack.work_dir / "edge-cases.yaml"
    rendered.write_text(text)
    stack.write_config(rendered)


def _settled(envoy) -> bool:
    """CDS and LDS applied and no cluster still waiting for its endpoints (EDS applied too)."""
    try:
        stats = envoy.stats("cluster_manager.(cds.update_success|warming_clusters)|listener_manager.lds.update_success")
    except HarnessError:  # admin not listening yet
        return False
    return (
        stats.get("cluster_manager.cds.update_success", 0) > 0
        and stats.get("listener_manager.lds.update_success", 0) > 0
        and stats.get("cluster_manager.warming_clusters", 1) == 0
    )


def test_gateway_and_sidecar_accept_edge_cases(make_stack) -> None:
    stack = make_stack()
    _write(stack)
    stack.start()
    sidecar = stack.start_envoy(labels={"app": "reviews"}, node_id=SIDECAR_ID)
    for envoy in (stack.envoy, sidecar):
        assert wait_until(lambda: _settled(envoy), 15.0), f"{envoy.name} did not settle: {envoy.stats('update_|warming')}"

    big = stack.send(Request(path="/big", headers={"host": "a.example.com"}))
    assert big.status == 503 and len(big.body) == 6000, big.describe()
    # Rejections are asserted for both Envoys when the stack is torn down.
