"""CSDS against live Envoys: once a gateway and a sidecar have converged, `pilotfish
proxy-status` (a CSDS fetch) lists both with every type they were sent SYNCED, and `-o json`
carries the same as Envoy's ClientStatusResponse."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_proxy_status_shows_converged_proxies_synced(make_stack) -> None:
    stack = make_stack()
    text = FIXTURE.read_text().replace("{{big_body}}", "x" * 6000)
    rendered = stack.work_dir / "edge-cases.yaml"
    rendered.write_text(text)
    stack.write_config(rendered)
    stack.start()
    stack.start_envoy(labels={"app": "reviews"}, node_id=SIDECAR_ID)
    address = stack.xds_address()
    assert wait_until(lambda: _all_synced(address), 20.0), _table(address)

    out = run(["proxy-status", "--xds-address", address, "-o", "json"])
    assert out.returncode == 0, out.stderr
    configs = {c["node"]["id"]: c for c in json.loads(out.stdout)["config"]}
    assert set(configs) == {GATEWAY_NODE_ID, SIDECAR_ID}
    for config in configs.values():
        lds = [g for g in config["generic_xds_configs"] if g["type_url"] == LDS_URL]
        assert len(lds) == 1 and lds[0]["config_status"] == "SYNCED", config
        assert lds[0]["version_info"], config
        assert all("xds_config" not in g for g in config["generic_xds_configs"]), "no resource bodies"
