"""Plays a mesh scenario's steps against a started `Mesh`; the first failing step raises."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Mapping
from urllib.parse import quote

from harness.client import Response
from harness.net import wait_until
from harness.pilotfish import HarnessError
from harness.steps import StepFailed, StepRunner, attempt_until

from .expect import describe, distribution_problems, outcome_problems, problems
from .mesh import Mesh
from .scenario import ApplyStep, AppStep, ProxyStep, RequestStep, RotationStep, Scenario, SleepStep, Step

MIRROR_SETTLE = 3.0
"""How long `app_requests` waits for requests that arrive after the response (mirrors)."""
CERT_POLL = 0.2
"""How often a rotation step reads the sidecars' `/certs`: well under a renewal interval."""
ROTATION_TAIL = 1.0
"""How long a rotation step keeps sending after the last renewal: the new certificates must
carry traffic too."""


class Runner(StepRunner[Step]):
    def __init__(self, scenario: Scenario, mesh: Mesh) -> None:
        super().__init__(scenario.steps)
        self.scenario = scenario
        self.mesh = mesh

    def run_step(self, step: Step) -> None:
        if isinstance(step, RequestStep):
            self._request(step)
        elif isinstance(step, ApplyStep):
            self.mesh.apply(step.source, delete=step.delete)
        elif isinstance(step, AppStep):
            app = self.mesh.pods[step.pod].app
            if app is None:
                raise StepFailed(f"{step.name}: pod {step.pod} runs no app")
            app.configure(step.change)
        elif isinstance(step, ProxyStep):
            self._proxy(step)
        elif isinstance(step, SleepStep):
            time.sleep(step.seconds)
        elif isinstance(step, RotationStep):
            self._rotation(step)
        else:
            raise TypeError(f"unknown step {step!r}")

    # --- requests --------------------------------------------------------------------------

    def _counts(self, pods: Mapping[str, int]) -> dict[str, int]:
        out = {}
        for name in pods:
            app = self.mesh.pods[name].app
            if app is None:
                raise StepFailed(f"app_requests: pod {name} runs no app")
            out[name] = len(app.received())
        return out

    def _check(self, step: RequestStep, responses: list[Response], before: Mapping[str, int]) -> list[str]:
        found: list[str] = []
        for i, r in enumerate(responses):
            for p in problems(step.expect, r):
                found.append(f"response {i + 1}/{len(responses)}: {p}")
        if step.outcomes:
            found += outcome_problems(step.outcomes, responses)
        if step.distribution:
            found += distribution_problems(step.distribution, responses)
        if step.app_requests:
            def delta() -> dict[str, int]:
                now = self._counts(step.app_requests)
                return {k: now[k] - before[k] for k in now}
            # Counts only grow: wait while some are short, not when one is already over.
            wait_until(lambda: all(n >= step.app_requests[k] for k, n in delta().items()), MIRROR_SETTLE)
            got = delta()
            found += [f"app {k} received {got[k]} requests during the step, want {v}"
                      for k, v in step.app_requests.items() if got[k] != v]
        return found

    def _attempt(self, step: RequestStep) -> tuple[list[Response], list[str]]:
        before = self._counts(step.app_requests)
        responses = self.mesh.send_many(step.request, step.repeat, step.concurrency)
        return responses, self._check(step, responses, before)

    def _request(self, step: RequestStep) -> None:
        responses, found, attempts = attempt_until(lambda: self._attempt(step), step.retry_until, pause=0.25)
        if not found:
            return
        shown = "\n  ".join(found[:12]) + (f"\n  … {len(found) - 12} more" if len(found) > 12 else "")
        samples = "\n".join(f"[{i + 1}] {describe(r)}" for i, r in enumerate(responses[:3]))
        raise StepFailed(
            f"{step.name}: {step.request.method} {step.request.url} headers={dict(step.request.headers)} "
            f"x{step.repeat} (concurrency {step.concurrency}), {attempts} attempt(s):\n  {shown}\n"
            f"first responses:\n{samples}"
        )

    # --- certificate rotation --------------------------------------------------------------

    def _rotation(self, step: RotationStep) -> None:
        """Sends requests back to back from a thread while polling the pods' certificates,
        until each pod has shown `renewals` new ones or `within` has passed."""
        sidecars = {name: self.mesh.pods[name].sidecar for name in step.pods}
        seen: dict[str, dict[str, str]] = {name: {} for name in step.pods}  # serial -> expiration
        responses: list[Response] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                responses.extend(self.mesh.send_many(step.request, 1))

        def renewed() -> bool:
            for name, sidecar in sidecars.items():
                assert sidecar is not None
                for serial, expiration in sidecar.workload_certs():
                    seen[name].setdefault(serial, expiration)
            return all(len(s) > step.renewals for s in seen.values())

        sender = threading.Thread(target=load, name="rotation-load", daemon=True)
        started = time.monotonic()
        sender.start()
        try:
            done = wait_until(renewed, step.within, CERT_POLL)
            if done:
                time.sleep(ROTATION_TAIL)
        finally:
            stop.set()
            sender.join(timeout=20)
        elapsed = time.monotonic() - started
        found: list[str] = []
        if not done:
            found.append(f"within {step.within}s not every pod showed {step.renewals} renewals")
        for name, certs in seen.items():
            expirations = list(certs.values())
            if len(set(expirations)) != len(expirations):
                found.append(f"{name}: certificates with new serials but the same expiration: {certs}")
        failed = [(i, r, p) for i, r in enumerate(responses) if (p := problems(step.expect, r))]
        if len(failed) > step.max_failed:
            found.append(f"{len(failed)} of {len(responses)} requests failed (at most {step.max_failed} may):")
            found += [f"  request {i + 1}: {'; '.join(p)}" for i, _, p in failed[:8]]
        for header, least in step.distinct_seen_at_least.items():
            values = {str(((r.json or {}).get("headers") or {}).get(header)) for r in responses if r.backend}
            if len(values) < least:
                found.append(f"the app saw {len(values)} distinct {header} values, want >= {least}: "
                             + "; ".join(sorted(values))[:600])
        if not responses:
            found.append("no request completed")
        if found:
            timeline = "\n".join(f"  {name}: " + ", ".join(f"serial {s} until {e}" for s, e in certs.items())
                                 for name, certs in seen.items())
            raise StepFailed(f"{step.name}: {len(responses)} requests in {elapsed:.1f}s to "
                             f"{step.request.url}:\n  " + "\n  ".join(found)
                             + f"\ncertificates seen (first seen first):\n{timeline}")

    # --- proxy state -----------------------------------------------------------------------

    def _proxy_problems(self, step: ProxyStep) -> list[str]:
        sidecar = self.mesh.pods[step.pod].sidecar
        if sidecar is None:
            return [f"pod {step.pod} has no sidecar"]
        found: list[str] = []
        try:
            if step.clusters_present or step.clusters_absent:
                clusters = sidecar.cluster_names()
                found += [f"cluster {c} missing" for c in step.clusters_present if c not in clusters]
                found += [f"cluster {c} present" for c in step.clusters_absent if c in clusters]
            if step.listeners_present or step.listeners_absent:
                listeners = sidecar.listener_names()
                found += [f"listener {x} missing" for x in step.listeners_present if x not in listeners]
                found += [f"listener {x} present" for x in step.listeners_absent if x in listeners]
            if step.routes_contain:
                routes = json.dumps(sidecar.config_dump("dynamic_route_configs"), separators=(",", ":"))
                found += [f"no route config holds {t}" for t in step.routes_contain if t not in routes]
            for name, least in step.stats_at_least.items():
                value = sidecar.stats(_exact(name)).get(name, 0)
                if value < least:
                    found.append(f"stat {name} = {value}, want >= {least}")
        except HarnessError as e:
            found.append(str(e))
        return found

    def _proxy(self, step: ProxyStep) -> None:
        deadline = time.monotonic() + step.retry_until
        while (found := self._proxy_problems(step)) and time.monotonic() < deadline:
            time.sleep(0.2)
        if found:
            sidecar = self.mesh.pods[step.pod].sidecar
            held = sorted(sidecar.cluster_names()) if sidecar else []
            raise StepFailed(f"{step.name}: envoy-{step.pod}: " + "; ".join(found)
                             + f"\n  clusters it holds: {held}")


def _exact(stat: str) -> str:
    """A /stats filter matching exactly `stat`, URL-encoded (cluster names hold `|`)."""
    return quote("^" + re.escape(stat) + "$", safe="")
