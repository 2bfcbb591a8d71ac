"""The harness side of `app.py`: starts it in a pod's netns, talks to its control socket."""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path
from typing import Any, Mapping

from harness.net import wait_until
from harness.pilotfish import HarnessError
from harness.process import ManagedProcess

APP_PY = Path(__file__).resolve().parent / "app.py"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = str(path)

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self._path)
        self.sock = s


class App:
    """One pod's app process; `received()` is every request it got, in order."""

    def __init__(self, name: str, exec_prefix: list[str], ports: tuple[int, ...],
                 calls: tuple[str, ...], behaviour: Mapping[str, float], control: Path,
                 work_dir: Path) -> None:
        self.name = name
        self.control = control
        argv = [*exec_prefix, sys.executable, str(APP_PY), "--name", name, "--control", str(control)]
        for port in ports:
            argv += ["--port", str(port)]
        for url in calls:
            argv += ["--call", url]
        argv += ["--status", str(int(behaviour["status"])), "--delay", str(float(behaviour["delay"])),
                 "--fail-next", str(int(behaviour["fail_next"])),
                 "--fail-status", str(int(behaviour["fail_status"]))]
        self.process = ManagedProcess(f"app-{name}", argv, work_dir / f"app-{name}.log")

    def _control(self, method: str, path: str, body: Any = None) -> Any:
        conn = _UnixConnection(self.control, timeout=5.0)
        try:
            data = None if body is None else json.dumps(body)
            conn.request(method, path, body=data, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            payload = resp.read()
            if resp.status != 200:
                raise HarnessError(f"app {self.name}: {method} {path}: {resp.status} {payload[:300]!r}")
            return json.loads(payload)
        finally:
            conn.close()

    def up(self) -> bool:
        try:
            self._control("GET", "/received")
            return True
        except OSError:
            return False

    def wait_up(self, timeout: float) -> None:
        if not wait_until(lambda: not self.process.running() or self.up(), timeout) or not self.process.running():
            raise HarnessError(f"app {self.name} did not start within {timeout}s "
                               f"({self.process.describe()}):\n{self.process.log_tail(30)}")

    def received(self) -> list[dict[str, Any]]:
        value = self._control("GET", "/received")
        assert isinstance(value, list)
        return value

    def configure(self, change: Mapping[str, float]) -> None:
        self._control("POST", "/behaviour", dict(change))

    def stop(self) -> None:
        self.process.stop(grace=2.0)
