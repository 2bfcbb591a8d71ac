"""What a failing mesh test prints: pilotfish's log, each sidecar's log and the config it holds,
each app's log and traffic, the client pod's capture counters, the served config."""

from __future__ import annotations

import json

from .mesh import Mesh
from .netns import sh


def _held(mesh: Mesh, pod: str) -> str:
    """Names of the listeners, clusters and route configs one sidecar holds."""
    sidecar = mesh.pods[pod].sidecar
    if sidecar is None or not sidecar.process.running():
        return "(not running)"
    try:
        routes = sidecar.config_dump("dynamic_route_configs")
        route_summary = {
            c["route_config"]["name"]: [v["name"] for v in c["route_config"].get("virtual_hosts", [])]
            for c in routes.get("configs", [])
        }
        return (f"listeners: {sorted(sidecar.listener_names())}\n"
                f"clusters: {sorted(sidecar.cluster_names())}\n"
                f"route configs (virtual hosts): {json.dumps(route_summary)}")
    except Exception as e:  # noqa: BLE001 - a report must not hide the failure
        return f"could not read its admin API: {e!r}"


def failure_report(mesh: Mesh, log_lines: int = 60) -> list[tuple[str, str]]:
    sections: list[tuple[str, str]] = []
    if mesh.pilotfish:
        p = mesh.pilotfish.process
        sections.append((f"pilotfish log tail ({p.describe()})", p.log_tail(log_lines)))
    for name, pod in mesh.pods.items():
        if pod.sidecar:
            s = pod.sidecar
            sections.append((f"{s.name} log ({s.process.describe()})",
                             "\n".join(s.report_log_lines()[-log_lines:])))
            sections.append((f"{s.name} holds", _held(mesh, name)))
        if pod.app:
            a = pod.app
            try:
                got = a.received()
                traffic = f"{len(got)} requests; last: " + ", ".join(
                    f"{r['method']} {r['path']} host={r['host']} -> {r['answered']}" for r in got[-5:])
            except Exception as e:  # noqa: BLE001
                traffic = f"control socket: {e!r}"
            sections.append((f"app {name} ({a.process.describe()})",
                             traffic + "\n" + a.process.log_tail(15)))
    client = mesh.pods.get(mesh.client)
    if client:
        counters = sh(*mesh.network.exec_argv(mesh.client, "iptables", "-t", "nat", "-L", "-v", "-n"),
                      check=False)
        sections.append((f"iptables nat counters in {mesh.client}", counters))
    if mesh.jwt and mesh.jwt.keys:
        sections.append(("JWKS server", f"GETs from pilotfish: {mesh.jwt.fetches or 'none'}"))
    sections.append(("served config dir", mesh.config.dump()))
    return sections
