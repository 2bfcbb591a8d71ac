"""The mesh suite: each mesh_scenarios/<name>/ on pods with iptables capture and real sidecars.

Needs root (network namespaces, iptables); without it the tests that start a mesh are skipped.
Every test ends by asserting that no sidecar rejected an xDS update; a failing test's report
has pilotfish's, every Envoy's and every app's logs and what each sidecar holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Iterator, Mapping

import pytest

from harness.envoy import rejection_problems
from harness import pilotfish as pilotfish_mod
from harness.template import placeholders, render
from mesh import Mesh, Runner, discover, failure_report, load
from mesh.jwt import JwtIssuers
from mesh.scenario import PodSpec
from mesh.security import Security, config_placeholder_known

SCENARIOS = discover()
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("iptables-restore") is None,
    reason="the mesh suite needs root and iptables (scripts/test installs it)",
)
VARIANTS = ("sotw", "delta")
MakeMesh = Callable[[Mapping[str, PodSpec], str, str, Security], Mesh]


@pytest.fixture
def make_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeMesh]:
    """Meshes built here are torn down after the test, after checking no Envoy rejected config."""
    meshes: list[Mesh] = []

    def make(pods: Mapping[str, PodSpec], client: str, xds_variant: str, security: Security) -> Mesh:
        mesh = Mesh(tmp_path / f"mesh{len(meshes)}", pods, client, xds_variant, security)
        meshes.append(mesh)
        return mesh

    yield make
    problems: list[str] = []
    try:
        for mesh in meshes:
            problems += rejection_problems(mesh.sidecars)
            if problems:
                for title, text in failure_report(mesh):
                    request.node.add_report_section("teardown", title, text)
    finally:
        for mesh in meshes:
            mesh.close()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@needs_root
@pytest.mark.parametrize("xds_variant", VARIANTS)
@pytest.mark.parametrize("scenario_dir", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_mesh_scenario(scenario_dir: Path, xds_variant: str, make_mesh: MakeMesh,
                       request: pytest.FixtureRequest) -> None:
    """Sidecars on State-of-the-World ADS, and on delta ADS (istio-agent's default since 1.22)."""
    scenario = load(scenario_dir)
    mesh = make_mesh(scenario.pods, scenario.client, xds_variant, scenario.security)
    try:
        mesh.start(scenario.config_dirs)
        Runner(scenario, mesh).run()
    except BaseException:
        for title, text in failure_report(mesh):
            request.node.add_report_section("call", title, text)
        raise


@pytest.mark.parametrize("scenario_dir", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_mesh_scenario_parses(scenario_dir: Path, tmp_path: Path) -> None:
    """Without a mesh: strict parsing, every placeholder is one the mesh fills, and every config
    file (rendered with stand-in addresses) passes `pilotfish validate`."""
    scenario = load(scenario_dir)
    files = [f for d in scenario.config_dirs for f in sorted(d.glob("*.yaml"))]
    files += [s.source for s in scenario.steps if hasattr(s, "source")]
    rendered = []
    issuers = JwtIssuers(scenario.security)  # real keys: pilotfish validate parses the JWKS
    try:
        jwks = issuers.config_values()
    finally:
        issuers.close()
    for i, f in enumerate(files):
        text = f.read_text()
        values = {}
        for key in placeholders(text):
            kind, _, name = key.partition(".")
            if config_placeholder_known(key, scenario.security):
                values[key] = jwks[key]
                continue
            assert kind == "vip" or (kind == "pod" and name.removesuffix(".ip") in scenario.pods), \
                f"{f}: placeholder {{{{{key}}}}} is neither vip.NAME, pod.<a pod>.ip, nor " \
                f"jwks.KEY / jwks_uri.KEY of security.jwt_keys"
            values[key] = "10.252.0.10" if kind == "vip" else "10.251.0.10"
        out = tmp_path / f"{i:02}-{f.name}"
        out.write_text(render(text, values, str(f)))
        rendered.append(str(out))
    result = pilotfish_mod.run(["validate", *rendered])
    assert result.returncode == 0, f"pilotfish validate:\n{result.stdout}{result.stderr}"
