"""A stock Envoy as a sidecar, without iptables: it accepts everything pilotfish sends, and a
request to its outbound listener `0.0.0.0_<service port>` (bound because the sidecar says
INTERCEPTION_MODE=NONE) is routed by the `Host` header through the route config "<port>".

A second sidecar in the default REDIRECT mode (listeners not bound, as istiod sends them) must
accept its config too; the fixture's teardown asserts no rejected update in either Envoy.
"""

from __future__ import annotations

from pathlib import Path


from harness import Behaviour, Envoy, Request
from harness import envoy as envoy_mod
from harness import pilotfish as pilotfish_mod
from harness.backend import BACKEND_HEADER
from harness.net import wait_until

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "sidecar-basic"
NODE_ID = "sidecar~127.0.0.1~productpage-v1-abc.default~default.svc.cluster.local"
LABELS = {"app": "productpage", "version": "v1"}


def _start_sidecar(stack, interception: str | None, name: str) -> Envoy:
    """Like `Stack.start_envoy`, with istio-agent's INTERCEPTION_MODE in the node metadata."""
    admin_port = envoy_mod.new_admin_port()
    bootstrap = pilotfish_mod.bootstrap(stack.xds_address(), admin_port, NODE_ID, LABELS)
    if interception is not None:
        bootstrap["node"].setdefault("metadata", {})["INTERCEPTION_MODE"] = interception
    envoy = Envoy(bootstrap, admin_port, stack.work_dir, name=name)
    stack.envoys.append(envoy)
    return envoy


def _stack(make_stack):
    stack = make_stack(
        backends={"ratingsv1": Behaviour(), "ratingsv2": Behaviour(), "details": Behaviour()},
        extra_ports=["svc"],
    )
    stack.load_config_dir(FIXTURES)
    stack.start_pilotfish()
    sidecar = _start_sidecar(stack, "NONE", "sidecar")
    port = stack.ports["svc"]
    sidecar.wait_ready(port, str(port), 20.0)
    return stack, sidecar, port


def _backend(stack, port: int, host: str, headers: dict[str, str] | None = None):
    from harness.client import send

    r = send(port, Request(host=host, headers=headers or {}))
    return r.status, r.headers.get(BACKEND_HEADER), r


def test_sidecar_routes_by_host_on_a_shared_port(make_stack) -> None:
    stack, sidecar, port = _stack(make_stack)
    redirect = _start_sidecar(stack, None, "sidecar-redirect")
    assert wait_until(lambda: redirect.ready() and str(port) in redirect.route_config_names(), 20.0)

    for host in ("details", f"details:{port}", "details.default", "details.default.svc.cluster.local"):
        status, backend, r = _backend(stack, port, host)
        assert (status, backend) == (200, "details"), f"{host}: {r}"
    seen = set()
    for _ in range(10):
        status, backend, r = _backend(stack, port, "ratings")
        assert status == 200, r
        seen.add(backend)
    assert seen <= {"ratingsv1", "ratingsv2"} and seen, seen
    # No request for an unknown host: `allow_any` sends it to PassthroughCluster, whose original
    # destination, without iptables, is this very listener.


def test_mesh_virtual_service_routes_by_header(make_stack) -> None:
    stack, _, port = _stack(make_stack)
    for _ in range(5):
        assert _backend(stack, port, "ratings", {"end-user": "jason"})[:2] == (200, "ratingsv2")
        assert _backend(stack, port, "ratings")[:2] == (200, "ratingsv1")


def test_a_sidecar_egress_listener_binds_its_own_port(make_stack) -> None:
    """A Sidecar egress listener with a port, without capture: bound to 127.0.0.1 (istiod's
    default for captureMode NONE) with only its hosts, in place of the catch-all's wildcard
    listener, which could not bind beside it."""
    stack, sidecar, port = _stack(make_stack)
    sidecar_yaml = stack.work_dir / "sidecar.yaml"
    sidecar_yaml.write_text(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\n"
        "metadata: {name: productpage, namespace: default}\n"
        "spec:\n  workloadSelector: {labels: {app: productpage}}\n"
        "  egress:\n  - port: {number: {{port.svc}}, protocol: HTTP, name: http}\n"
        "    hosts: [./details.default.svc.cluster.local]\n"
    )
    stack.write_config(sidecar_yaml)
    route = f"127.0.0.1_{port}"
    assert wait_until(lambda: route in sidecar.route_config_names(), 20.0), sidecar.route_config_names()
    def active() -> set[str]:
        return set(sidecar.admin_get("/listeners")[1].split())

    # The wildcard listener is gone from the active ones (it drains), the new one serves.
    assert wait_until(lambda: f"127.0.0.1_{port}::127.0.0.1:{port}" in active(), 20.0), active()
    assert not any(line.startswith(f"0.0.0.0_{port}::") for line in active()), active()
    for _ in range(5):
        assert _backend(stack, port, "details")[:2] == (200, "details")
