"""Telemetry API on a stock Envoy gateway: access logs in the file MeshConfig or a Telemetry
names (istiod's text format, then JSON labels, parsed), and Zipkin spans POSTed to a collector
the test runs, reached through a ServiceEntry with a static endpoint (the collector cluster is
the provider's istiod outbound cluster name).
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from harness import Behaviour, Request
from harness.net import next_loopback_address, wait_until

HERE = Path(__file__).resolve().parent
GATEWAY = HERE / "fixtures" / "telemetry" / "gateway.yaml"


def _mesh_config_map(mesh: str) -> str:
    """ConfigMap istio-system/istio carrying `mesh` (MeshConfig YAML) under key `mesh`."""
    indented = "".join(f"    {line}\n" for line in mesh.splitlines())
    return (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\n"
        f"data:\n  mesh: |\n{indented}"
    )


def _write(stack, name: str, text: str) -> None:
    source = stack.work_dir / name
    source.write_text(text)
    stack.write_config(source)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _logged(stack, path: Path, probe: str, timeout: float = 10.0) -> list[str]:
    """Sends requests to `probe` until a line naming it appears in `path` (pushes and Envoy's
    file flush take a moment); returns the lines that name it."""
    def found() -> bool:
        response = stack.send(Request(path=probe))
        assert response.status == 200, response.describe()
        return any(probe in line for line in _lines(path))

    assert wait_until(found, timeout, 0.3), f"no line for {probe} in {path}: {_lines(path)[-5:]}"
    return [line for line in _lines(path) if probe in line]


@pytest.mark.parametrize("xds_variant", ["sotw", "delta"])
def test_access_logs_in_text_then_json(make_stack, xds_variant: str) -> None:
    stack = make_stack(backends={"web": Behaviour()}, xds_variant=xds_variant)
    text_log = stack.work_dir / "access.log"
    json_log = stack.work_dir / "access.json"
    stack.write_config(GATEWAY)
    _write(stack, "mesh.yaml", _mesh_config_map(f"accessLogFile: {text_log}\n"))
    stack.start()

    # MeshConfig accessLogFile, no Telemetry: istiod's text format.
    [line] = _logged(stack, text_log, "/text-probe")[:1]
    assert '"GET /text-probe HTTP/1.1" 200 ' in line, line
    assert "outbound|8000||web.internal" in line, line

    # A Telemetry naming a JSON file provider (no labels: istiod's default JSON labels).
    _write(stack, "mesh.yaml", _mesh_config_map(
        f"accessLogFile: {text_log}\n"
        "extensionProviders:\n"
        f"- name: json-file\n  envoyFileAccessLog:\n    path: {json_log}\n"
        "    logFormat: {labels: {}}\n"
    ))
    _write(stack, "telemetry.yaml", (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        "metadata: {name: mesh-default, namespace: istio-system}\n"
        "spec:\n  accessLogging:\n  - providers: [{name: json-file}]\n"
    ))
    lines = _logged(stack, json_log, "/json-probe")
    entry: dict[str, Any] = json.loads(lines[0])
    assert entry["path"] == "/json-probe", entry
    assert entry["method"] == "GET" and int(entry["response_code"]) == 200, entry
    assert entry["upstream_cluster"] == "outbound|8000||web.internal", entry
    assert entry["protocol"] == "HTTP/1.1", entry
    # The Telemetry replaced the mesh file: the text log no longer gets requests.
    assert not any("/json-probe" in line for line in _lines(text_log))

    # A CEL filter: only server errors are logged.
    _write(stack, "telemetry.yaml", (
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
        "metadata: {name: mesh-default, namespace: istio-system}\n"
        "spec:\n  accessLogging:\n  - providers: [{name: json-file}]\n"
        "    filter: {expression: 'response.code >= 500'}\n"
    ))
    stack.backends["web"].configure(status=503)

    def failure_logged() -> bool:
        stack.send(Request(path="/cel-fail"))
        return any("/cel-fail" in line for line in _lines(json_log))

    assert wait_until(failure_logged, 10.0, 0.3), "a 503 was never logged under the CEL filter"
    stack.backends["web"].configure(status=200)
    for _ in range(3):
        assert stack.send(Request(path="/cel-ok")).status == 200
    time.sleep(1.5)  # Envoy flushes its log files every second
    assert not any("/cel-ok" in line for line in _lines(json_log)), _lines(json_log)[-3:]


class _Collector:
    """A Zipkin collector: records the JSON bodies POSTed to /api/v2/spans."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self._body()
                with collector.lock:
                    collector.paths.append(self.path)
                    if self.path == "/api/v2/spans":
                        collector.spans.extend(json.loads(body or b"[]"))
                self.send_response(202)
                self.send_header("content-length", "0")
                self.end_headers()

            def _body(self) -> bytes:
                if "chunked" not in (self.headers.get("transfer-encoding") or "").lower():
                    return self.rfile.read(int(self.headers.get("content-length") or 0))
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the empty line after the last chunk
                return b"".join(chunks)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((next_loopback_address(), 0), Handler)
        self.address, self.port = self.server.server_address[:2]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("xds_variant", ["sotw"])
def test_zipkin_spans_reach_the_collector(make_stack, xds_variant: str) -> None:
    collector = _Collector()
    try:
        stack = make_stack(backends={"web": Behaviour()}, xds_variant=xds_variant)
        stack.write_config(GATEWAY)
        _write(stack, "mesh.yaml", _mesh_config_map(
            "extensionProviders:\n"
            "- name: zipkin\n  zipkin: {service: zipkin.tracing.svc.cluster.local, port: 9411}\n"
        ))
        _write(stack, "zipkin.yaml", (
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            "metadata: {name: zipkin, namespace: tracing}\n"
            "spec:\n  hosts: [zipkin.tracing.svc.cluster.local]\n  location: MESH_INTERNAL\n"
            "  resolution: STATIC\n  ports: [{number: 9411, name: http, protocol: HTTP}]\n"
            f"  endpoints: [{{address: '{collector.address}', ports: {{http: {collector.port}}}}}]\n"
        ))
        _write(stack, "telemetry.yaml", (
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\n"
            "metadata: {name: mesh-default, namespace: istio-system}\n"
            "spec:\n  tracing:\n  - providers: [{name: zipkin}]\n    randomSamplingPercentage: 100\n"
            "    customTags: {suite: {literal: {value: conformance}}}\n"
        ))
        stack.start()

        # Envoy's Zipkin tracer sends once it holds 5 spans, else every 5 s.
        def traced() -> bool:
            assert stack.send(Request(path="/traced")).status == 200
            with collector.lock:
                return any(s.get("tags", {}).get("http.url", "").endswith("/traced")
                           for s in collector.spans)

        assert wait_until(traced, 15.0, 0.2), (
            f"no span for /traced reached the collector; it got {collector.paths[-5:]} "
            f"with {collector.spans[-2:]}"
        )
        with collector.lock:
            span = next(s for s in collector.spans
                        if s.get("tags", {}).get("http.url", "").endswith("/traced"))
        assert set(collector.paths) == {"/api/v2/spans"}, collector.paths
        assert span["tags"].get("suite") == "conformance", span
        assert span["tags"].get("http.status_code") == "200", span
        assert len(span["traceId"]) == 32, f"istiod asks for 128-bit trace ids: {span}"
    finally:
        collector.close()
