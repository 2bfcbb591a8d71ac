"""Expectations on responses that went through the mesh, and the checks.

A response is the first app's JSON report; its `calls` hold each downstream call (service,
status, who answered, latency, and the callee's own report with its calls), so a check can
name any hop: `calls: {reviews: reviews-v2, ratings: {status: 500, backend: null}}`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from harness.client import Response
from harness.durations import seconds
from harness.strict import ScenarioError, keys, str_list, str_map

UNSET: Any = object()


@dataclass(frozen=True)
class CallExpect:
    backend: Any = UNSET
    """The app that answered the call, or None: a proxy answered (fault, timeout, overflow)."""
    status: int | None = None
    latency_at_least: float | None = None
    latency_at_most: float | None = None
    headers_seen: Mapping[str, str] = field(default_factory=dict)
    """Headers the callee received (propagation)."""
    headers_seen_contain: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Texts within headers the callee received."""


@dataclass(frozen=True)
class Expect:
    status: int | None = None
    backend: Any = UNSET
    no_response: bool = False
    headers: Mapping[str, str] = field(default_factory=dict)
    headers_absent: tuple[str, ...] = ()
    latency_at_least: float | None = None
    latency_at_most: float | None = None
    calls: Mapping[str, CallExpect] = field(default_factory=dict)
    not_called: tuple[str, ...] = ()
    headers_seen: Mapping[str, str] = field(default_factory=dict)
    """Headers the app that answered received (what its sidecar passed on)."""
    headers_seen_contain: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Texts within headers that app received: `x-forwarded-client-cert: URI=spiffe://…` (one
    text or a list, each of which must be in the header)."""
    headers_seen_absent: tuple[str, ...] = ()
    body_contains: str | None = None
    """Text in the response body (a proxy's `RBAC: access denied`)."""


@dataclass(frozen=True)
class Outcome:
    """A kind of response a step may get, and how many of them (`min`..`max`)."""

    expect: Expect
    min: int = 0
    max: int | None = None


@dataclass(frozen=True)
class Distribution:
    of: str
    """`backend` (who answered the request) or a service called in the chain."""
    fractions: Mapping[str, float]
    tolerance: float


def _opt_seconds(raw: Mapping[str, Any], key: str) -> float | None:
    return None if raw.get(key) is None else seconds(raw[key])


def _backend(where: str, value: Any, pods: set[str]) -> Any:
    if value is not None and value not in pods:
        raise ScenarioError(f"{where}: {value!r} is not a pod")
    return value


def _call(where: str, raw: Any, pods: set[str]) -> CallExpect:
    if raw is None or isinstance(raw, str):
        return CallExpect(backend=_backend(where, raw, pods), status=None if raw is None else 200)
    keys(where, raw, {"backend", "status", "latency_at_least", "latency_at_most", "headers_seen",
                      "headers_seen_contain"})
    return CallExpect(
        backend=_backend(f"{where}.backend", raw["backend"], pods) if "backend" in raw else UNSET,
        status=None if raw.get("status") is None else int(raw["status"]),
        latency_at_least=_opt_seconds(raw, "latency_at_least"),
        latency_at_most=_opt_seconds(raw, "latency_at_most"),
        headers_seen=str_map(f"{where}.headers_seen", raw.get("headers_seen")),
        headers_seen_contain=_contain_map(f"{where}.headers_seen_contain", raw.get("headers_seen_contain")),
    )


def _contain_map(where: str, raw: Any) -> dict[str, tuple[str, ...]]:
    """`{header: text}` or `{header: [texts]}`, as header -> texts."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ScenarioError(f"{where}: expected a mapping of header to text or list of texts, got {raw!r}")
    out = {}
    for k, v in raw.items():
        texts = str_list(f"{where}.{k}", v) if isinstance(v, list) else (str(v),)
        if not texts or any(not t for t in texts):
            raise ScenarioError(f"{where}.{k}: an empty text is in every header")
        out[str(k)] = texts
    return out


_EXPECT_KEYS = {"status", "backend", "no_response", "headers", "headers_absent", "latency_at_least",
                "latency_at_most", "calls", "not_called", "headers_seen", "headers_seen_contain",
                "headers_seen_absent", "body_contains"}


def parse_expect(where: str, raw: Any, pods: set[str], extra: Iterable[str] = ()) -> Expect:
    raw = keys(where, raw or {}, _EXPECT_KEYS | set(extra))
    return Expect(
        status=None if raw.get("status") is None else int(raw["status"]),
        backend=_backend(f"{where}.backend", raw["backend"], pods) if "backend" in raw else UNSET,
        no_response=bool(raw.get("no_response", False)),
        headers=str_map(f"{where}.headers", raw.get("headers")),
        headers_absent=str_list(f"{where}.headers_absent", raw.get("headers_absent")),
        latency_at_least=_opt_seconds(raw, "latency_at_least"),
        latency_at_most=_opt_seconds(raw, "latency_at_most"),
        calls={str(s): _call(f"{where}.calls.{s}", c, pods) for s, c in (raw.get("calls") or {}).items()},
        not_called=str_list(f"{where}.not_called", raw.get("not_called")),
        headers_seen=str_map(f"{where}.headers_seen", raw.get("headers_seen")),
        headers_seen_contain=_contain_map(f"{where}.headers_seen_contain", raw.get("headers_seen_contain")),
        headers_seen_absent=str_list(f"{where}.headers_seen_absent", raw.get("headers_seen_absent")),
        body_contains=None if raw.get("body_contains") is None else str(raw["body_contains"]),
    )


def parse_outcome(where: str, raw: Any, pods: set[str]) -> Outcome:
    expect = parse_expect(where, raw, pods, extra=("min", "max"))
    return Outcome(expect, int(raw.get("min", 0)), None if raw.get("max") is None else int(raw["max"]))


def parse_distribution(where: str, raw: Any, pods: set[str]) -> Distribution:
    keys(where, raw, {"of", "expect", "tolerance"}, {"of", "expect", "tolerance"})
    fractions = {_backend(f"{where}.expect", k, pods): float(v) for k, v in raw["expect"].items()}
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise ScenarioError(f"{where}.expect: fractions sum to {sum(fractions.values())}, not 1")
    return Distribution(str(raw["of"]), fractions, float(raw["tolerance"]))


# --- checks -----------------------------------------------------------------------------------


def calls_by_service(report: Any) -> dict[str, list[dict]]:
    """Every call in the chain under `report` (an app's JSON), by the service it called."""
    out: dict[str, list[dict]] = {}
    for call in (report or {}).get("calls", []) if isinstance(report, dict) else []:
        out.setdefault(str(call.get("service")), []).append(call)
        for service, more in calls_by_service(call.get("body")).items():
            out.setdefault(service, []).extend(more)
    return out


def _call_problems(service: str, want: CallExpect, call: dict) -> list[str]:
    p: list[str] = []
    got = f"call to {service}: {_brief_call(call)}"
    if want.backend is not UNSET and call.get("backend") != want.backend:
        p.append(f"{got}; want answered by {want.backend or 'a proxy (no app)'}")
    if want.status is not None and call.get("status") != want.status:
        p.append(f"{got}; want status {want.status}")
    latency = float(call.get("latency", 0))
    if want.latency_at_least is not None and latency < want.latency_at_least:
        p.append(f"{got}; want latency >= {want.latency_at_least}s")
    if want.latency_at_most is not None and latency > want.latency_at_most:
        p.append(f"{got}; want latency <= {want.latency_at_most}s")
    seen = (call.get("body") or {}).get("headers", {}) if isinstance(call.get("body"), dict) else {}
    p += [f"{got}; callee {x}" for x in _seen_problems(seen, want.headers_seen, want.headers_seen_contain, ())]
    return p


def _seen_problems(seen: Mapping[str, str], exact: Mapping[str, str], contain: Mapping[str, tuple[str, ...]],
                   absent: tuple[str, ...]) -> list[str]:
    """What is wrong with the headers an app received (`seen`, lower-case names)."""
    p = [f"saw {k}={seen.get(k.lower())!r}, want {v!r}" for k, v in exact.items() if seen.get(k.lower()) != v]
    p += [f"saw {k}={seen.get(k.lower())!r}, want it to contain {t!r}"
          for k, texts in contain.items() for t in texts if t not in str(seen.get(k.lower(), ""))]
    p += [f"saw {k}={seen[k.lower()]!r}, want it absent" for k in absent if k.lower() in seen]
    return p


def problems(want: Expect, r: Response) -> list[str]:
    """What is wrong with `r`, as sentences; empty when it is as expected."""
    if want.no_response:
        return [] if r.error else [f"want no HTTP response, got {r.describe()}"]
    if r.error:
        return [f"no response: {r.error} after {r.latency:.3f}s"]
    p: list[str] = []
    if want.status is not None and r.status != want.status:
        p.append(f"status {r.status}, want {want.status}")
    if want.backend is not UNSET and r.backend != want.backend:
        p.append(f"answered by {r.backend or 'a proxy'}, want {want.backend or 'a proxy (no app)'}")
    for k, v in want.headers.items():
        if r.headers.get(k.lower()) != v:
            p.append(f"header {k}={r.headers.get(k.lower())!r}, want {v!r}")
    p += [f"header {k} present, want absent" for k in want.headers_absent if k.lower() in r.headers]
    if want.latency_at_least is not None and r.latency < want.latency_at_least:
        p.append(f"latency {r.latency:.3f}s, want >= {want.latency_at_least}s")
    if want.latency_at_most is not None and r.latency > want.latency_at_most:
        p.append(f"latency {r.latency:.3f}s, want <= {want.latency_at_most}s")
    chain = calls_by_service(r.json)
    for service, call_want in want.calls.items():
        if service not in chain:
            p.append(f"{service} was not called; calls made: {sorted(chain)}")
        for call in chain.get(service, []):
            p += _call_problems(service, call_want, call)
    p += [f"{s} was called ({_brief_call(chain[s][0])}), want not" for s in want.not_called if s in chain]
    if want.headers_seen or want.headers_seen_contain or want.headers_seen_absent:
        seen = (r.json or {}).get("headers") if r.backend else None
        if not isinstance(seen, dict):
            p.append("no app answered, so no headers it received to check")
        else:
            p += [f"{r.backend} {x}" for x in _seen_problems(seen, want.headers_seen, want.headers_seen_contain,
                                                              want.headers_seen_absent)]
    if want.body_contains is not None and want.body_contains not in r.body:
        p.append(f"body {r.body[:200]!r} does not contain {want.body_contains!r}")
    return p


def outcome_problems(outcomes: tuple[Outcome, ...], responses: list[Response]) -> list[str]:
    """Every response matches one outcome (the first that fits); counts within min..max."""
    counts = [0] * len(outcomes)
    p: list[str] = []
    for r in responses:
        for i, o in enumerate(outcomes):
            if not problems(o.expect, r):
                counts[i] += 1
                break
        else:
            p.append(f"response matches no outcome: {describe(r)}")
    for o, n in zip(outcomes, counts):
        if n < o.min or (o.max is not None and n > o.max):
            p.append(f"{n} responses like {_brief_expect(o.expect)}, want {o.min}..{o.max if o.max is not None else 'any'}")
    return p


def distribution_problems(d: Distribution, responses: list[Response]) -> list[str]:
    seen: Counter[str | None] = Counter()
    for r in responses:
        if d.of == "backend":
            seen[r.backend] += 1
        else:
            calls = calls_by_service(r.json).get(d.of, [])
            seen[calls[0].get("backend") if calls else "<not called>"] += 1
    n = len(responses)
    p = [f"{name} answered {seen[name]}/{n}, want {want:.0%} ±{d.tolerance:.0%}"
         for name, want in d.fractions.items() if abs(seen[name] / n - want) > d.tolerance]
    others = {k: v for k, v in seen.items() if k not in d.fractions}
    if others:
        p.append(f"answers from outside the distribution: {dict(others)}")
    return [f"{d.of}: {x} (all: {dict(seen)})" for x in p]


def _brief_call(call: dict) -> str:
    who = call.get("backend") or "a proxy"
    extra = f", error {call['error']}" if call.get("error") else ""
    return f"status {call.get('status')} from {who} in {float(call.get('latency', 0)):.3f}s{extra}"


def _brief_expect(e: Expect) -> str:
    parts = [f"{k}={v!r}" for k, v in vars(e).items() if v not in (None, UNSET, False, (), {})]
    return "{" + ", ".join(parts) + "}"


def describe(r: Response) -> str:
    """A response and its chain, one line per hop."""
    if r.error:
        return r.describe()
    lines = [f"status {r.status} from {r.backend or 'a proxy'} in {r.latency:.3f}s"]
    for service, calls in calls_by_service(r.json).items():
        lines += [f"  -> {service}: {_brief_call(c)}" for c in calls]
    if not r.backend:
        lines.append(f"  headers {r.headers}, body {r.body[:300]!r}")
    return "\n".join(lines)
