"""`scenario.yaml`: what a scenario declares, parsed strictly (a typo'd key is an error).

    description: text
    ready_timeout: 20s                                 # optional
    gateway: {labels: {istio: ingressgateway}}        # optional; these are the defaults
    backends:                                          # name -> behaviour ({} for defaults)
      reviews-v1: {}
      flaky: {fail_next: 2, fail_status: 503, delay: 0s, status: 200}
    steps: [...]                                       # see README.md for every step kind
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from .backend import Behaviour
from .client import Request
from .durations import seconds
from .pilotfish import GATEWAY_LABELS
from .strict import ScenarioError, keys, str_list, str_map
from .template import placeholders


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Expect:
    status: int | None = None
    backend: Any = UNSET
    """A backend name, or None for "Envoy answered itself"; UNSET to not check."""
    backend_path: str | None = None
    backend_host: str | None = None
    backend_method: str | None = None
    backend_headers: Mapping[str, str] = field(default_factory=dict)
    backend_headers_present: tuple[str, ...] = ()
    backend_headers_absent: tuple[str, ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_present: tuple[str, ...] = ()
    headers_absent: tuple[str, ...] = ()
    body_contains: str | None = None
    latency_at_least: float | None = None
    latency_at_most: float | None = None
    distribution: Mapping[str, float] = field(default_factory=dict)
    tolerance: float = 0.1
    backend_requests: Mapping[str, int] = field(default_factory=dict)
    same_backend: bool = False
    """Every response of the step comes from one backend (any one): session affinity."""
    no_response: bool = False
    """The request gets no HTTP response at all (connection refused: no listener)."""


@dataclass(frozen=True)
class RequestStep:
    name: str
    request: Request
    expect: Expect
    repeat: int = 1
    retry_until: float | None = None
    """Re-send (the whole repeat) until the expectations hold or this many seconds pass."""


@dataclass(frozen=True)
class BackendStep:
    name: str
    backend: str
    status: int | None = None
    delay: float | None = None
    fail_next: int | None = None
    fail_status: int | None = None


@dataclass(frozen=True)
class ReplaceStep:
    name: str
    file: str
    """Name in the served config dir."""
    source: Path
    """A file of the scenario dir, rendered into `file`."""


@dataclass(frozen=True)
class RemoveStep:
    name: str
    file: str


@dataclass(frozen=True)
class WaitLogStep:
    name: str
    source: str
    """`pilotfish` or `envoy`."""
    contains: tuple[str, ...]
    """All of these must appear on one log line."""
    timeout: float


@dataclass(frozen=True)
class SleepStep:
    name: str
    seconds: float


@dataclass(frozen=True)
class SwitchStep:
    """Traffic flows while a file is replaced: routing moves from one backend to another."""

    name: str
    request: Request
    replace: ReplaceStep
    from_backend: str
    to_backend: str
    within: float
    max_failed: int = 0
    settle: float = 1.0
    """How long traffic keeps flowing after the first answer from `to_backend`."""
    interval: float = 0.01


Step = Union[RequestStep, BackendStep, ReplaceStep, RemoveStep, WaitLogStep, SleepStep, SwitchStep]


@dataclass(frozen=True)
class Scenario:
    name: str
    dir: Path
    description: str
    gateway_labels: Mapping[str, str]
    backends: Mapping[str, Behaviour]
    steps: tuple[Step, ...]
    ready_timeout: float = 20.0
    extra_ports: tuple[str, ...] = ()
    """Names NAME of the `{{port.NAME}}` placeholders its files use."""

    @property
    def config_dir(self) -> Path:
        return self.dir / "config"


# --- parsing ---------------------------------------------------------------------------------


def _duration(where: str, value: Any) -> float:
    try:
        return seconds(value)
    except ValueError as e:
        raise ScenarioError(f"{where}: {e}") from None


def _behaviour(where: str, raw: Any) -> Behaviour:
    raw = keys(where, raw or {}, {"status", "delay", "fail_next", "fail_status"})
    return Behaviour(
        status=int(raw.get("status", 200)),
        delay=_duration(f"{where}.delay", raw.get("delay", 0)),
        fail_next=int(raw.get("fail_next", 0)),
        fail_status=int(raw.get("fail_status", 503)),
    )


def _request(where: str, raw: Any) -> Request:
    raw = keys(where, raw, {"method", "path", "host", "headers", "body", "port"})
    return Request(
        method=str(raw.get("method", "GET")),
        path=str(raw.get("path", "/")),
        host=None if raw.get("host") is None else str(raw["host"]),
        headers=str_map(f"{where}.headers", raw.get("headers")),
        body=None if raw.get("body") is None else str(raw["body"]),
        port=None if raw.get("port") is None else str(raw["port"]),
    )


_EXPECT_KEYS = {
    "status", "backend", "backend_path", "backend_host", "backend_method", "backend_headers",
    "backend_headers_present", "backend_headers_absent", "headers", "headers_present",
    "headers_absent", "body_contains", "latency_at_least", "latency_at_most", "distribution",
    "tolerance", "backend_requests", "same_backend", "no_response",
}


def _expect(where: str, raw: Any, backends: Mapping[str, Behaviour]) -> Expect:
    raw = keys(where, raw or {}, _EXPECT_KEYS)

    def known(name: str, key: str) -> str:
        if name not in backends:
            raise ScenarioError(f"{where}.{key}: {name!r} is not a declared backend")
        return name

    backend = raw.get("backend", UNSET)
    if backend is not UNSET and backend is not None:
        backend = known(str(backend), "backend")
    distribution = {
        known(str(k), "distribution"): float(v) for k, v in (raw.get("distribution") or {}).items()
    }
    if distribution and abs(sum(distribution.values()) - 1.0) > 1e-6:
        raise ScenarioError(f"{where}.distribution: fractions sum to {sum(distribution.values())}, not 1")
    return Expect(
        status=None if raw.get("status") is None else int(raw["status"]),
        backend=backend,
        backend_path=raw.get("backend_path"),
        backend_host=raw.get("backend_host"),
        backend_method=raw.get("backend_method"),
        backend_headers=str_map(f"{where}.backend_headers", raw.get("backend_headers")),
        backend_headers_present=str_list(
            f"{where}.backend_headers_present", raw.get("backend_headers_present")
        ),
        backend_headers_absent=str_list(
            f"{where}.backend_headers_absent", raw.get("backend_headers_absent")
        ),
        headers=str_map(f"{where}.headers", raw.get("headers")),
        headers_present=str_list(f"{where}.headers_present", raw.get("headers_present")),
        headers_absent=str_list(f"{where}.headers_absent", raw.get("headers_absent")),
        body_contains=raw.get("body_contains"),
        latency_at_least=None
        if raw.get("latency_at_least") is None
        else _duration(f"{where}.latency_at_least", raw["latency_at_least"]),
        latency_at_most=None
        if raw.get("latency_at_most") is None
        else _duration(f"{where}.latency_at_most", raw["latency_at_most"]),
        distribution=distribution,
        tolerance=float(raw.get("tolerance", 0.1)),
        backend_requests={
            known(str(k), "backend_requests"): int(v)
            for k, v in (raw.get("backend_requests") or {}).items()
        },
        same_backend=bool(raw.get("same_backend", False)),
        no_response=bool(raw.get("no_response", False)),
    )


def _replace(where: str, raw: Any, scenario_dir: Path) -> ReplaceStep:
    raw = keys(where, raw, {"file", "with"}, {"file", "with"})
    source = scenario_dir / str(raw["with"])
    if not source.is_file():
        raise ScenarioError(f"{where}.with: {source} does not exist")
    return ReplaceStep(name=where, file=str(raw["file"]), source=source)


_STEP_KINDS = {"request", "backend", "replace", "remove", "wait_log", "sleep", "switch"}


def _step(where: str, raw: Any, backends: Mapping[str, Behaviour], scenario_dir: Path) -> Step:
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping, got {raw!r}")
    kinds = _STEP_KINDS & set(raw)
    if len(kinds) != 1:
        raise ScenarioError(f"{where}: a step has exactly one of {sorted(_STEP_KINDS)}, got {sorted(raw)}")
    kind = kinds.pop()
    name = f"{where} ({raw['name']})" if raw.get("name") else where
    if kind == "request":
        keys(where, raw, {"name", "request", "expect", "repeat", "retry_until"})
        repeat = int(raw.get("repeat", 1))
        expect = _expect(f"{where}.expect", raw.get("expect"), backends)
        if expect.distribution and repeat < 10:
            raise ScenarioError(f"{where}: a distribution needs repeat >= 10, got {repeat}")
        return RequestStep(
            name=name,
            request=_request(f"{where}.request", raw["request"]),
            expect=expect,
            repeat=repeat,
            retry_until=None
            if raw.get("retry_until") is None
            else _duration(f"{where}.retry_until", raw["retry_until"]),
        )
    if kind == "backend":
        keys(where, raw, {"name", "backend"})
        b = keys(f"{where}.backend", raw["backend"], {"name", "status", "delay", "fail_next", "fail_status"}, {"name"})
        if b["name"] not in backends:
            raise ScenarioError(f"{where}.backend.name: {b['name']!r} is not a declared backend")
        return BackendStep(
            name=name,
            backend=str(b["name"]),
            status=b.get("status"),
            delay=None if b.get("delay") is None else _duration(f"{where}.backend.delay", b["delay"]),
            fail_next=b.get("fail_next"),
            fail_status=b.get("fail_status"),
        )
    if kind == "replace":
        keys(where, raw, {"name", "replace"})
        step = _replace(f"{where}.replace", raw["replace"], scenario_dir)
        return ReplaceStep(name=name, file=step.file, source=step.source)
    if kind == "remove":
        keys(where, raw, {"name", "remove"})
        r = keys(f"{where}.remove", raw["remove"], {"file"}, {"file"})
        return RemoveStep(name=name, file=str(r["file"]))
    if kind == "wait_log":
        keys(where, raw, {"name", "wait_log"})
        w = keys(f"{where}.wait_log", raw["wait_log"], {"source", "contains", "timeout"}, {"source", "contains"})
        if w["source"] not in ("pilotfish", "envoy"):
            raise ScenarioError(f"{where}.wait_log.source: {w['source']!r} is not pilotfish or envoy")
        contains = w["contains"]
        return WaitLogStep(
            name=name,
            source=str(w["source"]),
            contains=tuple(contains) if isinstance(contains, list) else (str(contains),),
            timeout=_duration(f"{where}.wait_log.timeout", w.get("timeout", "5s")),
        )
    if kind == "sleep":
        keys(where, raw, {"name", "sleep"})
        return SleepStep(name=name, seconds=_duration(f"{where}.sleep", raw["sleep"]))
    keys(where, raw, {"name", "switch"})
    s = keys(
        f"{where}.switch",
        raw["switch"],
        {"request", "replace", "from", "to", "within", "max_failed", "settle"},
        {"request", "replace", "from", "to", "within"},
    )
    for key in ("from", "to"):
        if s[key] not in backends:
            raise ScenarioError(f"{where}.switch.{key}: {s[key]!r} is not a declared backend")
    return SwitchStep(
        name=name,
        request=_request(f"{where}.switch.request", s["request"]),
        replace=_replace(f"{where}.switch.replace", s["replace"], scenario_dir),
        from_backend=str(s["from"]),
        to_backend=str(s["to"]),
        within=_duration(f"{where}.switch.within", s["within"]),
        max_failed=int(s.get("max_failed", 0)),
        settle=_duration(f"{where}.switch.settle", s.get("settle", "1s")),
    )


def load(scenario_dir: Path) -> Scenario:
    path = scenario_dir / "scenario.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not YAML: {e}") from None
    raw = keys(str(path), raw, {"description", "gateway", "backends", "steps", "ready_timeout"}, {"steps"})
    gateway = keys(f"{path}: gateway", raw.get("gateway") or {}, {"labels"})
    backends_raw = raw.get("backends") or {}
    if not isinstance(backends_raw, dict):
        raise ScenarioError(f"{path}: backends: expected a mapping of name to behaviour")
    backends = {str(n): _behaviour(f"{path}: backends.{n}", b) for n, b in backends_raw.items()}
    steps_raw = raw["steps"]
    if not isinstance(steps_raw, list) or not steps_raw:
        raise ScenarioError(f"{path}: steps: expected a non-empty list")
    steps = tuple(
        _step(f"{path.parent.name}: steps[{i}]", s, backends, scenario_dir)
        for i, s in enumerate(steps_raw)
    )
    if not (scenario_dir / "config").is_dir():
        raise ScenarioError(f"{scenario_dir}: no config/ directory")
    extra_ports = sorted({
        key.removeprefix("port.")
        for f in scenario_dir.rglob("*.yaml")
        for key in placeholders(f.read_text())
        if key.startswith("port.")
    })
    for step in steps:
        for request in _requests_of(step):
            if request.port is not None and request.port not in extra_ports:
                raise ScenarioError(
                    f"{step.name}: request port {request.port!r} is no {{{{port.NAME}}}} of the config"
                )
    return Scenario(
        name=scenario_dir.name,
        dir=scenario_dir,
        description=str(raw.get("description", "")),
        gateway_labels=str_map(f"{path}: gateway.labels", gateway.get("labels")) or dict(GATEWAY_LABELS),
        backends=backends,
        steps=steps,
        ready_timeout=_duration(f"{path}: ready_timeout", raw.get("ready_timeout", "20s")),
        extra_ports=tuple(extra_ports),
    )


def _requests_of(step: Step) -> list[Request]:
    if isinstance(step, (RequestStep, SwitchStep)):
        return [step.request]
    return []


def discover(root: Path) -> list[Path]:
    """Scenario dirs under `root`: those holding a `scenario.yaml`, sorted by name."""
    return sorted(p.parent for p in root.glob("*/scenario.yaml"))
