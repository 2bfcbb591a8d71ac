"""istiod's debug endpoints against live Envoys: once a gateway and a sidecar have converged,
`/debug/syncz` shows every type they were sent ACKed at the sent nonce, and
`/debug/config_dump?proxyID=` holds the same dynamic clusters, listeners and route configs, at
the same versions, as each Envoy's own `/config_dump` (the gateway's listeners exist only
because its `istio: ingressgateway` label is known: the dump is generated for the connected
proxy, metadata included)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness.backend import Behaviour
from harness.net import free_port, wait_until
from harness.pilotfish import GATEWAY_NODE_ID, Pilotfish

CONFIG = Path(__file__).resolve().parent / "scenarios" / "weighted-split" / "config"
SIDECAR_ID = "sidecar~127.0.0.1~reviews-v1-abc.default~default.svc.cluster.local"
TYPES = ["cluster", "listener", "route", "endpoint"]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _json(port: int, path: str) -> Any:
    status, body = _get(port, path)
    assert status == 200, f"{path}: {status} {body}"
    return json.loads(body)


def _synced(port: int) -> bool:
    """Both proxies connected, CDS and LDS ACKed, and every other type sent ACKed too."""
    syncz = _json(port, "/debug/syncz")
    if sorted(s["proxy"] for s in syncz) != sorted([GATEWAY_NODE_ID, SIDECAR_ID]):
        return False
    return all(
        status.get("cluster_sent")
        and status.get("listener_sent")
        and all(status.get(f"{t}_sent") == status.get(f"{t}_acked") for t in TYPES)
        for status in syncz
    )


def _dynamic(dump: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Name → version of each dynamic cluster, listener and route config of a config_dump."""
    out: dict[str, dict[str, str]] = {"clusters": {}, "listeners": {}, "routes": {}}
    for config in dump["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            for c in config.get("dynamic_active_clusters", []):
                out["clusters"][c["cluster"]["name"]] = c["version_info"]
        elif kind == "ListenersConfigDump":
            for entry in config.get("dynamic_listeners", []):
                active = entry["active_state"]
                out["listeners"][entry["name"]] = active["version_info"]
        elif kind == "RoutesConfigDump":
            for r in config.get("dynamic_route_configs", []):
                out["routes"][r["route_config"]["name"]] = r["version_info"]
    return out


def test_debug_endpoints_match_the_converged_gateway(make_stack) -> None:
    stack = make_stack(backends={"reviews-v1": Behaviour(), "reviews-v2": Behaviour()})
    stack.load_config_dir(CONFIG)
    http_port = free_port()
    stack.pilotfish = Pilotfish(
        stack.config_dir, stack.work_dir, extra_args=["--http-address", f"127.0.0.1:{http_port}"]
    )
    stack.pilotfish.wait_serving()
    gateway = stack.start_envoy()
    gateway.wait_ready(stack.gateway_port, f"http.{stack.gateway_port}", 20.0)
    sidecar = stack.start_envoy(labels={"app": "reviews"}, node_id=SIDECAR_ID)

    assert wait_until(lambda: _synced(http_port), 20.0), _json(http_port, "/debug/syncz")

    for node_id, envoy in [(GATEWAY_NODE_ID, gateway), (SIDECAR_ID, sidecar)]:
        ours = _dynamic(_json(http_port, f"/debug/config_dump?proxyID={node_id}"))
        envoys = _dynamic(envoy.config_dump())
        assert ours == envoys, f"{node_id}\npilotfish: {ours}\nenvoy: {envoys}"
        assert ours["listeners"] and ours["routes"], ours
        assert any(n.endswith("reviews-v1.default.svc.cluster.local") for n in ours["clusters"])

    adsz = _json(http_port, "/debug/adsz")
    assert adsz["totalClients"] == 2, adsz

    kinds = sorted(o["kind"] for o in _json(http_port, "/debug/configz"))
    assert kinds == ["Gateway", "VirtualService"], kinds

    status, body = _get(http_port, "/debug/config_dump?proxyID=router~1.2.3.4~gone.x~x.svc.cluster.local")
    assert status == 404 and "not connected" in body, (status, body)
