"""Checks responses against a step's expectations; each check returns problems as text."""

from __future__ import annotations

from collections import Counter
from typing import Mapping, Sequence

from .client import Response
from .scenario import UNSET, Expect


def check_response(expect: Expect, resp: Response) -> list[str]:
    """Problems with one response (everything but distribution and backend_requests)."""
    if expect.no_response:
        return [] if resp.error else [f"want no response, got status {resp.status}"]
    if resp.error:
        return [f"no response: {resp.error}"]
    problems: list[str] = []
    if expect.status is not None and resp.status != expect.status:
        problems.append(f"status {resp.status}, want {expect.status}")
    if expect.backend is not UNSET and not expect.distribution and resp.backend != expect.backend:
        want = expect.backend or "no backend (Envoy answers itself)"
        problems.append(f"answered by {resp.backend or 'no backend'}, want {want}")
    seen = resp.seen_by_backend
    for key, want in (
        ("path", expect.backend_path),
        ("host", expect.backend_host),
        ("method", expect.backend_method),
    ):
        if want is not None and seen.get(key) != want:
            problems.append(f"backend saw {key} {seen.get(key)!r}, want {want!r}")
    seen_headers: Mapping[str, str] = seen.get("headers", {})
    problems += _headers("backend saw request header", seen_headers, expect.backend_headers,
                         expect.backend_headers_present, expect.backend_headers_absent)
    problems += _headers("response header", resp.headers, expect.headers,
                         expect.headers_present, expect.headers_absent)
    if expect.body_contains is not None and expect.body_contains not in resp.body:
        problems.append(f"body does not contain {expect.body_contains!r}")
    if expect.latency_at_least is not None and resp.latency < expect.latency_at_least:
        problems.append(f"latency {resp.latency:.3f}s, want >= {expect.latency_at_least}s")
    if expect.latency_at_most is not None and resp.latency > expect.latency_at_most:
        problems.append(f"latency {resp.latency:.3f}s, want <= {expect.latency_at_most}s")
    return problems


def _headers(
    what: str,
    actual: Mapping[str, str],
    values: Mapping[str, str],
    present: Sequence[str],
    absent: Sequence[str],
) -> list[str]:
    lower = {k.lower(): v for k, v in actual.items()}
    problems = []
    for name, want in values.items():
        got = lower.get(name.lower())
        if got != want:
            problems.append(f"{what} {name}: {got!r}, want {want!r}")
    for name in present:
        if name.lower() not in lower:
            problems.append(f"{what} {name} missing")
    for name in absent:
        if name.lower() in lower:
            problems.append(f"{what} {name} present ({lower[name.lower()]!r}), want absent")
    return problems


def check_same_backend(expect: Expect, responses: Sequence[Response]) -> list[str]:
    if not expect.same_backend:
        return []
    counts = Counter(r.backend or "no backend" for r in responses)
    if len(counts) == 1 and "no backend" not in counts:
        return []
    return [f"want every response from one backend, got {dict(counts)}"]


def check_distribution(expect: Expect, responses: Sequence[Response]) -> list[str]:
    if not expect.distribution:
        return []
    counts = Counter(r.backend or "no backend" for r in responses)
    total = len(responses)
    problems = []
    for name, want in expect.distribution.items():
        got = counts.get(name, 0) / total
        if abs(got - want) > expect.tolerance:
            problems.append(
                f"{name} got {got:.1%} of {total} requests, want {want:.0%} ± {expect.tolerance:.0%}"
            )
    others = {k: v for k, v in counts.items() if k not in expect.distribution}
    if others:
        problems.append(f"requests answered by backends outside the distribution: {dict(others)}")
    if problems:
        problems.append(f"counts: {dict(counts)}")
    return problems


def check_backend_requests(expect: Expect, delta: Mapping[str, int]) -> list[str]:
    return [
        f"backend {name} received {delta.get(name, 0)} requests, want {want}"
        for name, want in expect.backend_requests.items()
        if delta.get(name, 0) != want
    ]
