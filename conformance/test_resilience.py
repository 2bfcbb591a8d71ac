"""Control-plane outages and proxies that do not match: what a drop-in istiod must survive."""

from __future__ import annotations

import time
from pathlib import Path

from harness import Behaviour, Request
from harness.net import free_port, wait_until

SCENARIOS = Path(__file__).resolve().parent / "scenarios"
LIVE_EDIT = SCENARIOS / "live-edit"


def _serves(stack, backend: str, timeout: float) -> bool:
    return wait_until(lambda: stack.send(Request(path="/")).backend == backend, timeout, 0.1)


def test_envoy_keeps_serving_while_pilotfish_is_down_and_resyncs_after(make_stack) -> None:
    stack = make_stack(backends={"web-v1": Behaviour(), "web-v2": Behaviour()})
    stack.load_config_dir(LIVE_EDIT / "config")
    stack.start()
    assert stack.send(Request(path="/")).backend == "web-v1"

    assert stack.pilotfish is not None
    stack.pilotfish.stop()
    assert wait_until(
        lambda: stack.envoy.stats("control_plane.connected_state").get("control_plane.connected_state") == 0,
        5.0,
    ), "Envoy did not notice pilotfish stopped"
    outage = [stack.send(Request(path="/")) for _ in range(20)]
    failed = [r.describe() for r in outage if r.status != 200 or r.backend != "web-v1"]
    assert not failed, f"Envoy stopped serving its last config while pilotfish was down: {failed[:3]}"

    # The config changes while pilotfish is down; a restarted pilotfish serves the new one.
    stack.write_config(LIVE_EDIT / "alt" / "virtual-service-v2.yaml", "virtual-service.yaml")
    stack.start_pilotfish()
    assert _serves(stack, "web-v2", 15.0), (
        "after pilotfish restarted (same port) Envoy did not pick up the config edited meanwhile; "
        f"stats {stack.envoy.stats('control_plane|update_')}"
    )
    assert stack.envoy.stats("control_plane.connected_state")["control_plane.connected_state"] == 1


def test_envoy_started_before_pilotfish_initializes_once_it_is_up(make_stack) -> None:
    stack = make_stack(backends={"web-v1": Behaviour(), "web-v2": Behaviour()})
    stack.load_config_dir(LIVE_EDIT / "config")
    port = free_port()
    envoy = stack.start_envoy(xds_address=f"127.0.0.1:{port}")
    time.sleep(1.0)
    assert not envoy.ready(), "Envoy is ready with no control plane"
    stack.start_pilotfish(port=port)
    envoy.wait_ready(stack.gateway_port, f"http.{stack.gateway_port}", timeout=20.0)
    assert stack.send(Request(path="/")).backend == "web-v1"


def test_each_gateway_proxy_gets_only_the_gateways_selecting_it(make_stack) -> None:
    """Two gateway Envoys with different labels: a Gateway's listener goes only to the proxy
    its selector matches, and a proxy no Gateway selects gets no listener at all."""
    stack = make_stack(backends={"web-v1": Behaviour(), "web-v2": Behaviour()}, extra_ports=["internal"])
    stack.load_config_dir(LIVE_EDIT / "config")
    (stack.config_dir / "internal-gateway.yaml").write_text(
        f"""apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: internal
  namespace: istio-system
spec:
  selector:
    istio: internalgateway
  servers:
  - port: {{number: {stack.ports['internal']}, name: http, protocol: HTTP}}
    hosts: ["*"]
"""
    )
    stack.start()
    internal = stack.start_envoy(
        labels={"istio": "internalgateway"},
        node_id="router~127.0.0.1~internal-gw.istio-system~istio-system.svc.cluster.local",
    )
    internal.wait_ready(stack.ports["internal"], f"http.{stack.ports['internal']}", timeout=20.0)
    other = stack.start_envoy(
        labels={"istio": "nothing-selects-this"},
        node_id="router~127.0.0.1~lonely-gw.istio-system~istio-system.svc.cluster.local",
    )
    other.wait_ready(None, None, timeout=20.0)

    assert stack.envoy.active_listener_ports() == {stack.gateway_port}
    assert internal.active_listener_ports() == {stack.ports["internal"]}
    assert other.active_listener_ports() == set(), "a proxy no Gateway selects got listeners"
    # No VirtualService is bound to the internal gateway: it answers 404 but does answer.
    resp = stack.send(Request(path="/"), port="internal")
    assert resp.status == 404, resp.describe()
