"""`mesh_scenarios/<name>/scenario.yaml`, parsed strictly: a typo'd key is an error.

    description: what Istio task this is
    platform: bookinfo        # pods and config/ from mesh_scenarios/_platforms/bookinfo/ first
    security: {mtls: true}    # optional: see security.py
    client: sleep             # the pod requests are sent from (default sleep)
    pods:                     # more pods, or fields overriding the platform's pod of that name
      ratings-v1: {labels: {app: ratings, version: v1}, ports: [9080], fail_next: 2}
    steps: [...]              # see ../README.md, "Mesh suite"
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Union

import yaml

from harness.durations import seconds
from harness.strict import ScenarioError, keys, str_list, str_map
from harness.template import placeholders

from .expect import Distribution, Expect, Outcome, parse_distribution, parse_expect, parse_outcome
from .security import Security, parse_security, request_placeholder_known

SCENARIOS_ROOT = Path(__file__).resolve().parents[1] / "mesh_scenarios"
PLATFORMS = SCENARIOS_ROOT / "_platforms"
_BEHAVIOUR = {"status": 200, "delay": 0.0, "fail_next": 0, "fail_status": 503}


@dataclass(frozen=True)
class PodSpec:
    """A pod: a netns with an app, and (unless `sidecar: false`) iptables capture and Envoy."""

    name: str
    namespace: str = "default"
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    calls: tuple[str, ...] = ()
    behaviour: Mapping[str, float] = field(default_factory=lambda: dict(_BEHAVIOUR))
    sidecar: bool = True
    external: bool = False
    """Not a Kubernetes Pod at all (no Pod object, no sidecar): a host outside the mesh."""
    hostnames: tuple[str, ...] = ()
    """Names every pod's /etc/hosts maps to this pod's IP (for external hosts)."""
    service_account: str = ""
    """Its Kubernetes service account, hence its SPIFFE identity with mTLS; "" = the pod name
    (Istio's samples give each app an account of its own)."""

    @property
    def account(self) -> str:
        return self.service_account or self.name


@dataclass(frozen=True)
class Request:
    url: str
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    from_pod: str | None = None
    """The pod it is sent from (`from:`); None = the scenario's client."""


@dataclass(frozen=True)
class RequestStep:
    name: str
    request: Request
    expect: Expect
    outcomes: tuple[Outcome, ...] = ()
    distribution: Distribution | None = None
    app_requests: Mapping[str, int] = field(default_factory=dict)
    repeat: int = 1
    concurrency: int = 1
    retry_until: float | None = None


@dataclass(frozen=True)
class ApplyStep:
    name: str
    source: Path
    delete: bool = False


@dataclass(frozen=True)
class AppStep:
    name: str
    pod: str
    change: Mapping[str, float]


@dataclass(frozen=True)
class ProxyStep:
    """Checks on what one sidecar holds (config dump, stats), retried until they hold."""

    name: str
    pod: str
    clusters_present: tuple[str, ...] = ()
    clusters_absent: tuple[str, ...] = ()
    listeners_present: tuple[str, ...] = ()
    listeners_absent: tuple[str, ...] = ()
    stats_at_least: Mapping[str, int] = field(default_factory=dict)
    routes_contain: tuple[str, ...] = ()
    """Texts in its route configs as compact JSON, e.g. `"retry_on":"5xx"` (an edit arrived)."""
    retry_until: float = 5.0


@dataclass(frozen=True)
class SleepStep:
    name: str
    seconds: float


@dataclass(frozen=True)
class RotationStep:
    """Requests without pause while the pods' workload certificates are renewed `renewals`
    times (seen in each sidecar's admin `/certs`); every response must meet `expect`."""

    name: str
    request: Request
    pods: tuple[str, ...]
    renewals: int
    within: float
    expect: Expect
    max_failed: int = 0
    distinct_seen_at_least: Mapping[str, int] = field(default_factory=dict)
    """Distinct values of a header the answering app received, over the step: a new client
    certificate shows as a new `Hash=` in x-forwarded-client-cert."""


Step = Union[RequestStep, ApplyStep, AppStep, ProxyStep, SleepStep, RotationStep]


@dataclass(frozen=True)
class Scenario:
    name: str
    dir: Path
    description: str
    pods: Mapping[str, PodSpec]
    client: str
    config_dirs: tuple[Path, ...]
    steps: tuple[Step, ...]
    security: Security = field(default_factory=Security)


def _pod(where: str, name: str, raw: Mapping[str, Any], base: PodSpec | None) -> PodSpec:
    allowed = {"namespace", "labels", "ports", "calls", "sidecar", "external", "hostnames",
               "service_account", *_BEHAVIOUR}
    keys(where, raw, allowed)
    pod = base or PodSpec(name=name)
    behaviour = dict(pod.behaviour)
    for k in _BEHAVIOUR:
        if k in raw:
            behaviour[k] = seconds(raw[k]) if k == "delay" else int(raw[k])
    fields: dict[str, Any] = {"behaviour": behaviour}
    for key in ("namespace", "service_account"):
        if key in raw:
            fields[key] = str(raw[key])
    if "labels" in raw:
        fields["labels"] = str_map(f"{where}.labels", raw["labels"])
    if "ports" in raw:
        fields["ports"] = tuple(int(p) for p in raw["ports"])
    for key in ("calls", "hostnames"):
        if key in raw:
            fields[key] = str_list(f"{where}.{key}", raw[key])
    for key in ("sidecar", "external"):
        if key in raw:
            fields[key] = bool(raw[key])
    if raw.get("external") and raw.get("sidecar"):
        raise ScenarioError(f"{where}: an external host has no sidecar")
    pod = replace(pod, **fields)
    return replace(pod, sidecar=pod.sidecar and not pod.external)


def _pods(where: str, raw: Any, base: Mapping[str, PodSpec]) -> dict[str, PodSpec]:
    pods = dict(base)
    for name, spec in (raw or {}).items():
        pods[str(name)] = _pod(f"{where}.{name}", str(name), spec or {}, pods.get(str(name)))
    return pods


def _request(where: str, raw: Any, pods: Mapping[str, PodSpec], security: Security) -> Request:
    keys(where, raw, {"url", "method", "headers", "body", "from"}, {"url"})
    request = Request(
        url=str(raw["url"]),
        method=str(raw.get("method", "GET")),
        headers=str_map(f"{where}.headers", raw.get("headers")),
        body=None if raw.get("body") is None else str(raw["body"]),
        from_pod=None if raw.get("from") is None else str(raw["from"]),
    )
    if request.from_pod is not None and (request.from_pod not in pods or pods[request.from_pod].external):
        raise ScenarioError(f"{where}.from: {request.from_pod!r} is not a pod of the mesh")
    for text in (request.url, *request.headers.values()):
        for key in placeholders(text):
            if not request_placeholder_known(key, security):
                raise ScenarioError(f"{where}: {{{{{key}}}}} is not token.<one of security.tokens "
                                    f"{sorted(security.tokens)}>")
    return request


def _step(where: str, raw: Any, sdir: Path, pods: Mapping[str, PodSpec], security: Security) -> Step:
    kinds = {"request", "apply", "delete", "app", "proxy", "sleep", "rotation"} & set(raw or {})
    if not isinstance(raw, dict) or len(kinds) != 1:
        raise ScenarioError(f"{where}: a step has exactly one of "
                            "request/apply/delete/app/proxy/sleep/rotation")
    kind = kinds.pop()
    name = f"{where} ({raw['name']})" if raw.get("name") else where
    known = set(pods)

    def pod(value: Any, key: str) -> str:
        if value not in pods:
            raise ScenarioError(f"{where}.{key}: {value!r} is not a pod")
        return str(value)

    if kind == "request":
        keys(where, raw, {"name", "request", "expect", "outcomes", "distribution", "app_requests",
                          "repeat", "concurrency", "retry_until"})
        outcomes = tuple(parse_outcome(f"{where}.outcomes[{i}]", o, known)
                         for i, o in enumerate(raw.get("outcomes") or []))
        dist = raw.get("distribution")
        return RequestStep(
            name=name,
            request=_request(f"{where}.request", raw["request"], pods, security),
            expect=parse_expect(f"{where}.expect", raw.get("expect"), known),
            outcomes=outcomes,
            distribution=None if dist is None else parse_distribution(f"{where}.distribution", dist, known),
            app_requests={pod(k, "app_requests"): int(v) for k, v in (raw.get("app_requests") or {}).items()},
            repeat=int(raw.get("repeat", 1)),
            concurrency=int(raw.get("concurrency", 1)),
            retry_until=None if raw.get("retry_until") is None else seconds(raw["retry_until"]),
        )
    if kind in ("apply", "delete"):
        keys(where, raw, {"name", kind})
        source = sdir / str(raw[kind])
        if not source.is_file():
            raise ScenarioError(f"{where}.{kind}: {source} does not exist")
        return ApplyStep(name=name, source=source, delete=kind == "delete")
    if kind == "app":
        keys(where, raw, {"name", "app"})
        a = keys(f"{where}.app", raw["app"], {"pod", *_BEHAVIOUR}, {"pod"})
        change = {k: seconds(v) if k == "delay" else int(v) for k, v in a.items() if k != "pod"}
        return AppStep(name=name, pod=pod(a["pod"], "app.pod"), change=change)
    if kind == "proxy":
        keys(where, raw, {"name", "proxy"})
        p = keys(f"{where}.proxy", raw["proxy"], {"pod", "clusters_present", "clusters_absent",
                 "listeners_present", "listeners_absent", "stats_at_least", "routes_contain",
                 "retry_until"}, {"pod"})
        return ProxyStep(
            name=name,
            pod=pod(p["pod"], "proxy.pod"),
            **{k: str_list(f"{where}.proxy.{k}", p.get(k)) for k in
               ("clusters_present", "clusters_absent", "listeners_present", "listeners_absent",
                "routes_contain")},
            stats_at_least={str(k): int(v) for k, v in (p.get("stats_at_least") or {}).items()},
            retry_until=seconds(p.get("retry_until", "5s")),
        )
    if kind == "rotation":
        keys(where, raw, {"name", "rotation"})
        at = f"{where}.rotation"
        r = keys(at, raw["rotation"], {"request", "pods", "renewals", "within", "expect", "max_failed",
                                      "distinct_seen_at_least"}, {"request", "pods", "renewals", "within"})
        if not security.mtls:
            raise ScenarioError(f"{at}: certificates rotate only with security.mtls: true")
        names = str_list(f"{at}.pods", r["pods"])
        for n in names:
            if not pods.get(n) or not pods[n].sidecar:
                raise ScenarioError(f"{at}.pods: {n!r} is not a pod with a sidecar")
        return RotationStep(
            name=name,
            request=_request(f"{at}.request", r["request"], pods, security),
            pods=names,
            renewals=int(r["renewals"]),
            within=seconds(r["within"]),
            expect=parse_expect(f"{at}.expect", r.get("expect"), known),
            max_failed=int(r.get("max_failed", 0)),
            distinct_seen_at_least={str(k).lower(): int(v) for k, v in
                                    (r.get("distinct_seen_at_least") or {}).items()},
        )
    keys(where, raw, {"name", "sleep"})
    return SleepStep(name=name, seconds=seconds(raw["sleep"]))


def load(sdir: Path) -> Scenario:
    path = sdir / "scenario.yaml"
    raw = keys(str(path), yaml.safe_load(path.read_text()),
               {"description", "platform", "client", "pods", "steps", "security"}, {"steps"})
    security = parse_security(f"{path}: security", raw.get("security"))
    pods: dict[str, PodSpec] = {}
    config_dirs: list[Path] = []
    if raw.get("platform"):
        platform = PLATFORMS / str(raw["platform"])
        base = keys(str(platform / "pods.yaml"), yaml.safe_load((platform / "pods.yaml").read_text()), {"pods"})
        pods = _pods(f"{platform.name}: pods", base["pods"], {})
        config_dirs.append(platform / "config")
    pods = _pods(f"{sdir.name}: pods", raw.get("pods"), pods)
    if (sdir / "config").is_dir():
        config_dirs.append(sdir / "config")
    client = str(raw.get("client", "sleep"))
    if client not in pods or pods[client].external:
        raise ScenarioError(f"{path}: client {client!r} is not a pod of the mesh")
    steps = tuple(_step(f"{sdir.name}: steps[{i}]", s, sdir, pods, security)
                  for i, s in enumerate(raw["steps"]))
    return Scenario(sdir.name, sdir, str(raw.get("description", "")), pods, client,
                    tuple(config_dirs), steps, security)


def discover(root: Path = SCENARIOS_ROOT) -> list[Path]:
    """Scenario dirs (those with a scenario.yaml; `_platforms` excluded), sorted by name."""
    return sorted(p.parent for p in root.glob("*/scenario.yaml") if not p.parent.name.startswith("_"))
