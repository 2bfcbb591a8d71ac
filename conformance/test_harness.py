"""Self-tests of the harness that need neither pilotfish nor Envoy."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import Backend, Request, ScenarioError, discover, load, send
from harness.durations import seconds
from harness.template import TemplateError, placeholders, render

SCENARIO_ROOT = Path(__file__).resolve().parent / "scenarios"
SCENARIOS = discover(SCENARIO_ROOT)


@pytest.fixture
def backend() -> Backend:
    b = Backend("echo").start()
    yield b
    b.stop()


def test_backend_reports_what_it_received(backend: Backend) -> None:
    resp = send(backend.port, Request("POST", "/a/b?x=1&y=2", "svc.example", {"X-Test": "t"}, "hi"),
                host=backend.address)
    assert resp.status == 200, resp.describe()
    assert resp.backend == "echo"
    seen = resp.seen_by_backend
    assert seen["method"] == "POST"
    assert seen["path"] == "/a/b"
    assert seen["host"] == "svc.example"
    assert seen["headers"]["x-test"] == "t"
    assert seen["query"] == {"x": "1", "y": "2"}
    assert seen["body"] == "hi"
    assert backend.address.startswith("127.") and backend.address != "127.0.0.1"


def test_backend_fails_the_next_n_then_recovers(backend: Backend) -> None:
    backend.configure(fail_next=2, fail_status=503)
    statuses = [send(backend.port, Request(), host=backend.address).status for _ in range(3)]
    assert statuses == [503, 503, 200]
    assert [r.answered for r in backend.received()] == [503, 503, 200]


def test_backend_delays_and_answers_a_given_status(backend: Backend) -> None:
    backend.configure(delay=0.3, status=418)
    resp = send(backend.port, Request(), host=backend.address)
    assert resp.status == 418
    assert resp.latency >= 0.3


def test_backends_get_distinct_loopback_addresses() -> None:
    a, b = Backend("a"), Backend("b")
    assert a.address != b.address


def test_client_reports_refused_connections_without_raising() -> None:
    from harness.net import free_port

    resp = send(free_port(), Request())
    assert resp.status == 0 and resp.error


def test_template_substitutes_and_names_unknown_placeholders() -> None:
    values = {"backend.a.port": "1234", "gateway.port": "80"}
    assert render("port: {{backend.a.port}} / {{ gateway.port }}", values, "f") == "port: 1234 / 80"
    with pytest.raises(TemplateError, match=r"f:2: unknown placeholder \{\{backend.b.port\}\}"):
        render("x\nport: {{backend.b.port}}", values, "f")


@pytest.mark.parametrize("text,want", [("1s", 1.0), ("500ms", 0.5), ("0.5s", 0.5), (2, 2.0)])
def test_durations(text: object, want: float) -> None:
    assert seconds(text) == want


def test_durations_reject_garbage() -> None:
    with pytest.raises(ValueError):
        seconds("1 fortnight")


def test_scenario_parser_rejects_typos(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "scenario.yaml").write_text(
        "backends: {a: {}}\nsteps:\n- request: {path: /}\n  expect: {stauts: 200}\n"
    )
    with pytest.raises(ScenarioError, match="unknown keys \\['stauts'\\]"):
        load(tmp_path)


def test_there_are_scenarios() -> None:
    assert len(SCENARIOS) >= 10, SCENARIOS


@pytest.mark.parametrize("scenario_dir", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_scenario_files_parse_and_render(scenario_dir: Path) -> None:
    """scenario.yaml is well formed; every YAML file renders with the declared backends."""
    scenario = load(scenario_dir)
    values = {"gateway.port": "18080"}
    values.update({f"port.{n}": str(18081 + i) for i, n in enumerate(scenario.extra_ports)})
    for i, name in enumerate(scenario.backends):
        values[f"backend.{name}.address"] = f"127.0.1.{i + 2}"
        values[f"backend.{name}.port"] = str(20000 + i)
    files = [p for p in scenario_dir.rglob("*.yaml") if p.name != "scenario.yaml"]
    assert files, f"{scenario_dir} has no config"
    for path in files:
        text = render(path.read_text(), values, str(path))
        if "broken" in path.name:
            continue  # deliberately malformed
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
        assert docs, f"{path} has no YAML documents"
        for doc in docs:
            assert "apiVersion" in doc and "kind" in doc, f"{path}: a document lacks apiVersion/kind"
    unused = {n for n in scenario.backends if not any(
        f"backend.{n}." in " ".join(placeholders(p.read_text())) for p in files)}
    assert not unused, f"backends declared but never referenced by config: {sorted(unused)}"
