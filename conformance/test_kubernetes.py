"""Kubernetes mode end to end: `kubectl apply` against the fake API server, `pilotfish serve
--kubeconfig` watching it, and a real Envoy gateway routing real requests.

Each test applies pilotfish's CRDs (`crds/`; the outage test has the fake start with them) and
Bookinfo's gateway setup (`kubernetes/`) with kubectl, starts pilotfish and waits for its
`/ready`, then starts Envoy. Edits go through
kubectl too, so what is tested is the whole path an operator's change takes: kubectl's patch,
the API server's watch event, pilotfish's watcher, a push, Envoy. Every test ends (in
conftest's teardown) by asserting that Envoy rejected no xDS update.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness import Backend, Behaviour, Request, Stack
from harness.kube import FakeApiServer, Kubectl, KubePilotfish, kubectl_binary
from harness.net import wait_until
from harness.pilotfish import REPO_ROOT

MANIFESTS = Path(__file__).resolve().parent / "kubernetes"
CRDS = REPO_ROOT / "crds"

# How soon an edit made with kubectl must route: the watch event, a 100 ms debounce, a push.
WITHIN = 3.0

pytestmark = pytest.mark.skipif(kubectl_binary() is None, reason="kubectl is not installed")


def apply(stack: Stack, kubectl: Kubectl, manifest: str) -> Path:
    """Renders `kubernetes/<manifest>` (backend addresses, gateway port) into the stack's
    config dir, where a failure report shows it, and `kubectl apply`s it."""
    path = stack.write_config(MANIFESTS / manifest)
    kubectl.apply(path)
    return path


@dataclass
class Cluster:
    stack: Stack
    api: FakeApiServer
    kubectl: Kubectl
    pilotfish: KubePilotfish

    def apply(self, manifest: str) -> Path:
        return apply(self.stack, self.kubectl, manifest)

    def backend(self, path: str) -> str | None:
        return self.stack.send(Request(path=path)).backend

    def routes_to(self, path: str, backend: str, within: float = WITHIN) -> bool:
        return wait_until(lambda: self.backend(path) == backend, within, 0.05)

    def answers(self, path: str, n: int) -> list[str | None]:
        return [self.backend(path) for _ in range(n)]

    def describe(self) -> str:
        """kubectl's transcript and the fake API server's and pilotfish's logs, for assertion
        messages (conftest's failure report has pilotfish, Envoy and the applied manifests)."""
        return (
            f"--- kubectl ---\n{self.kubectl.transcript_tail(30)}\n"
            f"--- fake API server ---\n{self.api.process.log_tail(20)}\n"
            f"--- pilotfish ---\n{self.pilotfish.process.log_tail(30)}"
        )


@pytest.fixture
def bookinfo(make_stack) -> Iterator[Callable[..., Cluster]]:
    """Starts the fake API server, applies the CRDs and Bookinfo with kubectl, then pilotfish
    (waiting for `/ready`) and the gateway Envoy (waiting for its routes)."""
    apis: list[tuple[Stack, FakeApiServer]] = []
    kubectl_path = kubectl_binary()
    assert kubectl_path is not None

    def start(xds_variant: str = "sotw", crds_preinstalled: bool = False) -> Cluster:
        stack = make_stack(
            backends={"productpage-1": Behaviour(), "reviews-v1": Behaviour(), "reviews-v2": Behaviour()},
            xds_variant=xds_variant,
        )
        # A second productpage replica on the first one's port: one EndpointSlice names both.
        first = stack.backends["productpage-1"]
        stack.backends["productpage-2"] = Backend("productpage-2", port=first.port).start()
        api = FakeApiServer(stack.work_dir, install_istio_crds=crds_preinstalled)
        apis.append((stack, api))
        kubectl = Kubectl(kubectl_path, api.kubectl_kubeconfig, stack.work_dir)
        if not crds_preinstalled:
            kubectl.apply(CRDS)
        apply(stack, kubectl, "bookinfo.yaml")
        pilotfish = KubePilotfish(api.kubeconfig, stack.work_dir)
        # What Stack needs of a pilotfish (address, process, stop) for Envoy, reports, teardown.
        stack.pilotfish = pilotfish  # type: ignore[assignment]
        pilotfish.wait_ready()
        envoy = stack.start_envoy()
        envoy.wait_ready(stack.gateway_port, f"http.{stack.gateway_port}", timeout=20.0)
        return Cluster(stack=stack, api=api, kubectl=kubectl, pilotfish=pilotfish)

    yield start
    for stack, api in apis:
        # pilotfish first, so its log does not end in errors about the API server gone.
        if stack.pilotfish is not None:
            stack.pilotfish.stop()
        api.stop()


def test_kubectl_edits_reach_envoy_within_seconds(bookinfo) -> None:
    cluster = bookinfo()
    assert cluster.answers("/productpage", 5) == ["productpage-1"] * 5, cluster.describe()
    assert cluster.answers("/reviews", 5) == ["reviews-v1"] * 5, cluster.describe()

    started = time.monotonic()
    cluster.apply("virtual-service-reviews-v2.yaml")
    assert cluster.routes_to("/reviews", "reviews-v2"), (
        f"/reviews still goes to {cluster.backend('/reviews')} {WITHIN}s after kubectl apply\n{cluster.describe()}"
    )
    print(f"VirtualService edit routed after {time.monotonic() - started:.2f}s")
    assert cluster.answers("/reviews", 10) == ["reviews-v2"] * 10

    # Scaled up: both replicas of the EndpointSlice take requests.
    cluster.apply("productpage-two-replicas.yaml")
    seen: set[str | None] = set()

    def both_answered() -> bool:
        seen.add(cluster.backend("/productpage"))
        return {"productpage-1", "productpage-2"} <= seen

    assert wait_until(both_answered, WITHIN, 0.02), f"after scaling up only {seen} answered\n{cluster.describe()}"

    # The first replica leaves the slice: no request reaches it any more.
    cluster.apply("productpage-second-replica-only.yaml")
    assert wait_until(lambda: cluster.answers("/productpage", 5) == ["productpage-2"] * 5, WITHIN, 0.05), (
        f"the replica removed from the EndpointSlice still answers\n{cluster.describe()}"
    )
    assert cluster.answers("/productpage", 10) == ["productpage-2"] * 10

    # Deleted: the gateway has no route left for it.
    cluster.kubectl.delete("-f", str(cluster.stack.config_dir / "virtual-service-reviews-v2.yaml"))
    assert wait_until(lambda: cluster.stack.send(Request(path="/productpage")).status == 404, WITHIN, 0.05), (
        f"after kubectl delete: {cluster.stack.send(Request(path='/productpage')).describe()}\n{cluster.describe()}"
    )
    assert cluster.stack.send(Request(path="/reviews")).status == 404


def test_an_invalid_virtual_service_keeps_the_last_good_one(bookinfo) -> None:
    cluster = bookinfo()
    since = cluster.pilotfish.process.log_size()
    cluster.apply("virtual-service-invalid.yaml")
    stored = cluster.kubectl.run("get", "virtualservice", "bookinfo", "-o", "jsonpath={.spec.http[1].route[0].weight}")
    assert stored.stdout == "-5", f"the API server should hold the invalid version: {stored.stdout!r}"

    needles = ["ERROR", "VirtualService default/bookinfo", "spec.http[1].route[0].weight"]
    assert cluster.pilotfish.process.wait_for_log(needles, timeout=5.0, since=since), (
        f"pilotfish logged no error naming the field ({needles})\n{cluster.describe()}"
    )
    time.sleep(0.5)  # a push of the invalid version would have reached Envoy by now
    assert cluster.answers("/reviews", 20) == ["reviews-v1"] * 20, "the last good VirtualService must keep routing"
    assert cluster.answers("/productpage", 5) == ["productpage-1"] * 5

    cluster.apply("virtual-service-reviews-v2.yaml")
    assert cluster.routes_to("/reviews", "reviews-v2"), f"the fixed VirtualService did not apply\n{cluster.describe()}"


def test_envoy_keeps_serving_through_an_api_server_outage_and_catches_up_after(bookinfo) -> None:
    # Delta ADS, istio-agent's default, here (the other tests run state-of-the-world), and the
    # CRDs the fake starts with (the others apply crds/ with kubectl).
    cluster = bookinfo(xds_variant="delta", crds_preinstalled=True)
    # pilotfish's watches drop and its requests hang, as with a hung API server: kube's
    # watcher takes a dropped watch for a normal end and resumes it, so nothing is logged.
    cluster.api.outage()

    # kubectl still reaches the cluster (its own endpoint); pilotfish cannot see the edit.
    cluster.apply("virtual-service-reviews-v2.yaml")
    deadline = time.monotonic() + 1.5
    during: list[str | None] = []
    while time.monotonic() < deadline:
        during += [cluster.backend("/reviews"), cluster.backend("/productpage")]
        time.sleep(0.05)
    assert set(during) == {"reviews-v1", "productpage-1"}, f"Envoy stopped serving its config: {set(during)}"
    # Still ready: a readiness probe failing now would take every replica out of the Service
    # at once, and proxies could not reconnect to the config they already have.
    assert cluster.pilotfish.ready_status() == 200, cluster.describe()

    cluster.api.recover()
    assert cluster.routes_to("/reviews", "reviews-v2", within=10.0), (
        f"the edit made during the outage did not arrive after it\n{cluster.describe()}"
    )
    assert cluster.answers("/productpage", 5) == ["productpage-1"] * 5
    assert cluster.pilotfish.ready_status() == 200
