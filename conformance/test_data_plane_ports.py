"""istio-proxy's data-plane ports in `pilotfish bootstrap`: Prometheus stats (15090) and
readiness (15021), served by a real Envoy connected to `pilotfish serve`, and what the Grafana
dashboard in manifests/addons queries from them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import Envoy
from harness import envoy as envoy_mod
from harness import pilotfish
from harness.envoy import rejection_problems
from harness.net import free_listener_port, free_port, wait_until

DASHBOARD = pilotfish.REPO_ROOT / "manifests" / "addons" / "grafana-dashboard-pilotfish.json"


def _get(port: int, path: str, timeout: float = 3.0, host: str = "127.0.0.1") -> tuple[int, str]:
    """GET on HOST:PORT; status 0 when nothing answered in time."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _listener_ports(bootstrap: dict) -> dict[str, int]:
    return {
        l["name"]: l["address"]["socket_address"]["port_value"]
        for l in bootstrap["static_resources"].get("listeners", [])
    }


def _start_envoy(stack_dir: Path, xds_address: str, name: str) -> tuple[Envoy, int, int]:
    """An Envoy from `pilotfish bootstrap` with the stats and health ports on free ports (the
    suite's Envoys share the host's network; a pod's Envoy has 15090/15021 to itself)."""
    admin, stats, health = envoy_mod.new_admin_port(), free_listener_port(), free_listener_port()
    while health == stats:
        health = free_listener_port()
    b = pilotfish.bootstrap(xds_address, admin, stats_port=stats, health_port=health)
    assert _listener_ports(b) == {"prometheus_stats": stats, "agent": health}, b["static_resources"]
    return Envoy(b, admin, stack_dir, name=name), stats, health


def test_the_default_bootstrap_opens_istios_ports_and_validates(tmp_path: Path) -> None:
    out = pilotfish.run(["bootstrap", "--node-id", pilotfish.GATEWAY_NODE_ID])
    assert out.returncode == 0, out.stderr
    b = json.loads(out.stdout)
    assert _listener_ports(b) == {"prometheus_stats": 15090, "agent": 15021}
    assert b["admin"]["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 15000}
    path = tmp_path / "bootstrap.json"
    path.write_text(out.stdout)
    result = subprocess.run(
        [str(envoy_mod.binary()), "--mode", "validate", "-c", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, f"envoy --mode validate:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def test_port_zero_turns_them_off_and_a_clash_is_refused() -> None:
    base = ["bootstrap", "--node-id", pilotfish.GATEWAY_NODE_ID]
    out = pilotfish.run([*base, "--stats-port", "0", "--health-port", "0"])
    assert out.returncode == 0, out.stderr
    assert _listener_ports(json.loads(out.stdout)) == {}
    out = pilotfish.run([*base, "--stats-port", "15000"])
    assert out.returncode != 0, out.stdout[:500]
    assert "admin_port and stats_port are both 15000" in out.stderr, out.stderr


def test_stats_and_health_ports_serve_from_a_connected_envoy(make_stack) -> None:
    stack = make_stack()
    stack.start_pilotfish()
    envoy, stats, health = _start_envoy(stack.work_dir, stack.xds_address(), "envoy-ports")
    stack.envoys.append(envoy)
    envoy.wait_ready(None, None, timeout=20.0)

    # Ready: 15021 answers as Kubernetes probes it; the admin's `/ready` is behind it.
    assert wait_until(lambda: _get(health, "/healthz/ready")[0] == 200, 5.0), _get(health, "/healthz/ready")
    assert _get(health, "/healthz/ready")[1].strip() == "LIVE"

    status, text = _get(stats, "/stats/prometheus")
    assert status == 200, text[:500]
    assert "# TYPE envoy_cluster_upstream_cx_total counter" in text, text[:1000]
    # The ADS connection to pilotfish is a counted upstream connection.
    assert re.search(r'^envoy_cluster_upstream_cx_total\{envoy_cluster_name="xds-grpc"\} [1-9]', text, re.M), \
        [l for l in text.splitlines() if "upstream_cx_total" in l]

    # Only the two paths reach the admin API; the rest of it stays on loopback.
    for port, path in ((stats, "/config_dump"), (health, "/ready"), (health, "/stats/prometheus")):
        code, _ = _get(port, path)
        assert code == 404, f"GET :{port}{path} answered {code}"


def test_the_dashboards_envoy_series_are_in_the_stats(make_stack) -> None:
    """Each `envoy_*` series a mesh panel queries is one Envoy's 15090 exports: the first
    scrape is itself a 200 through the `prometheus_stats` cluster, so the second scrape has
    response-code, latency and connection series for it."""
    stack = make_stack()
    stack.start_pilotfish()
    envoy, stats, _ = _start_envoy(stack.work_dir, stack.xds_address(), "envoy-dashboard")
    stack.envoys.append(envoy)
    envoy.wait_ready(None, None, timeout=20.0)
    assert _get(stats, "/stats/prometheus")[0] == 200
    status, text = _get(stats, "/stats/prometheus")
    assert status == 200
    exported = set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", text, re.M))

    dashboard = json.loads(DASHBOARD.read_text())
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            queried |= set(re.findall(r"\b(envoy_[a-z0-9_]+)\{", target["expr"]))
    assert queried, "no panel queries an envoy_* series"
    missing = sorted(queried - exported)
    assert not missing, f"queried but not in Envoy's /stats/prometheus: {missing}"
    # The response-code panel's label is the one Envoy's tag extraction produces.
    assert re.search(r'^envoy_cluster_upstream_rq\{[^}]*envoy_response_code="200"', text, re.M)


def test_health_is_not_200_before_envoy_has_its_config(tmp_path: Path) -> None:
    """No control plane: Envoy waits for its first CDS/LDS (15 s), and 15021 does not say ready."""
    dead = f"127.0.0.1:{free_port()}"
    envoy, _, health = _start_envoy(tmp_path, dead, "envoy-unready")
    try:
        assert wait_until(lambda: envoy.admin_get("/ready", timeout=0.5)[0] != 0, 10.0), \
            envoy.process.log_tail(30)
        assert envoy.admin_get("/ready", timeout=1.0)[0] == 503
        code, body = _get(health, "/healthz/ready", timeout=1.0)
        assert code != 200, body
    finally:
        envoy.stop()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("iptables-restore") is None,
                    reason="pods need root and iptables")
def test_every_sidecar_answers_on_its_pod_ip_as_prometheus_and_kubelet_ask(tmp_path: Path) -> None:
    """The mesh suite's sidecars keep istio-proxy's 15090/15021 (a netns each, both ports left
    out of the inbound capture); asked from outside the pods, on the pod IP, like a scrape."""
    from mesh import Mesh, load

    scenario = load(pilotfish.REPO_ROOT / "conformance" / "mesh_scenarios" / "capture")
    mesh = Mesh(tmp_path / "mesh", scenario.pods, scenario.client, "sotw", scenario.security)
    try:
        mesh.start(scenario.config_dirs)
        pods = [p for p in mesh.pods.values() if p.sidecar]
        assert len(pods) >= 2, list(mesh.pods)
        for pod in pods:
            status, text = _get(15090, "/stats/prometheus", host=pod.ip)
            assert status == 200, f"{pod.spec.name} {pod.ip}:15090 answered {status}"
            # Envoy's own stats: its ADS connection to pilotfish is counted there.
            assert 'envoy_cluster_name="xds-grpc"' in text, f"{pod.spec.name}: {text[:500]}"
            status, body = _get(15021, "/healthz/ready", host=pod.ip)
            assert (status, body.strip()) == (200, "LIVE"), f"{pod.spec.name} {pod.ip}:15021"
        assert not rejection_problems(mesh.sidecars)
    finally:
        mesh.close()
