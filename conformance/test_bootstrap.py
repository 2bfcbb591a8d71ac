"""`pilotfish bootstrap` and a plain Envoy connecting to `pilotfish serve`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from harness import Behaviour, Envoy, Request
from harness import envoy as envoy_mod
from harness import pilotfish
from harness.net import free_port
from harness.scenario import discover, load
from harness.template import render

CONFORMANCE = Path(__file__).resolve().parent
SCENARIOS = discover(CONFORMANCE / "scenarios")


def _envoy_validate(path: Path) -> None:
    out = subprocess.run(
        [str(envoy_mod.binary()), "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"envoy --mode validate {path}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"


def test_bootstrap_is_valid_envoy_config(tmp_path: Path) -> None:
    b = pilotfish.bootstrap("127.0.0.1:15010", 15000, labels={"istio": "ingressgateway", "app": "gw"})
    assert b["node"]["id"] == pilotfish.GATEWAY_NODE_ID
    assert b["node"]["metadata"]["LABELS"] == {"istio": "ingressgateway", "app": "gw"}
    assert b["node"]["metadata"]["NAMESPACE"] == "istio-system"
    assert b["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(b))
    _envoy_validate(path)


def test_bootstrap_with_a_hostname_is_valid(tmp_path: Path) -> None:
    b = pilotfish.bootstrap("localhost:15010", 15001)
    assert b["static_resources"]["clusters"][0]["type"] == "STRICT_DNS"
    path = tmp_path / "bootstrap.json"
    path.write_text(json.dumps(b))
    _envoy_validate(path)


def test_example_bootstrap_is_valid() -> None:
    _envoy_validate(pilotfish.REPO_ROOT / "examples" / "bootstrap" / "gateway.yaml")


def test_bootstrap_rejects_a_bad_address() -> None:
    out = pilotfish.run(["bootstrap", "--node-id", pilotfish.GATEWAY_NODE_ID, "--xds-address", "nope"])
    if out.returncode == 0:
        pytest.fail(f"`pilotfish bootstrap --xds-address nope` exited 0 and printed:\n{out.stdout[:300]}…")
    assert "nope" in out.stderr, f"the error should name the address:\n{out.stderr}"


def test_envoy_connects_and_accepts_an_empty_config(make_stack) -> None:
    """No Gateway: Envoy becomes ready with no listeners, connected, nothing rejected."""
    stack = make_stack()
    stack.start(route_config=None)
    assert stack.envoy is not None
    stats = stack.envoy.stats("control_plane.connected_state")
    assert stats.get("control_plane.connected_state") == 1, stats
    assert stack.gateway_port not in stack.envoy.active_listener_ports()


@pytest.mark.parametrize("scenario_dir", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_config_passes_pilotfish_validate(scenario_dir: Path, tmp_path: Path) -> None:
    """`pilotfish validate` accepts each scenario's initial config (placeholders filled)."""
    scenario = load(scenario_dir)
    values = {"gateway.port": "18080"}
    values.update({f"port.{n}": str(18081 + i) for i, n in enumerate(scenario.extra_ports)})
    for i, name in enumerate(scenario.backends):
        values[f"backend.{name}.address"] = f"127.0.1.{i + 2}"
        values[f"backend.{name}.port"] = str(20000 + i)
    paths = []
    for src in sorted((scenario_dir / "config").glob("*.yaml")):
        dst = tmp_path / src.name
        dst.write_text(render(src.read_text(), values, str(src)))
        paths.append(str(dst))
    out = pilotfish.run(["validate", *paths])
    assert out.returncode == 0, (
        f"pilotfish validate {scenario_dir.name}/config exited {out.returncode}:\n"
        f"{out.stdout[-3000:]}{out.stderr[-3000:]}"
    )


def test_example_bootstrap_drives_a_gateway(make_stack) -> None:
    """examples/bootstrap/gateway.yaml, with its two ports moved to free ones, serves routes."""
    stack = make_stack(backends={"reviews-v1": Behaviour(), "reviews-v2": Behaviour()})
    stack.load_config_dir(CONFORMANCE / "scenarios" / "weighted-split" / "config")
    stack.start_pilotfish()
    assert stack.pilotfish is not None
    example = yaml.safe_load((pilotfish.REPO_ROOT / "examples" / "bootstrap" / "gateway.yaml").read_text())
    admin_port = free_port()
    example["admin"]["address"]["socket_address"]["port_value"] = admin_port
    xds = example["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
    xds["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]["port_value"] = stack.pilotfish.port
    envoy = Envoy(example, admin_port, stack.work_dir, name="envoy-example")
    stack.envoys.append(envoy)
    envoy.wait_ready(stack.gateway_port, f"http.{stack.gateway_port}", timeout=20.0)
    resp = stack.send(Request(path="/"))
    assert resp.status == 200 and resp.backend in ("reviews-v1", "reviews-v2"), resp.describe()
