"""Sends one HTTP/1.1 request to the gateway and records what came back and how long it took."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .backend import BACKEND_HEADER


@dataclass(frozen=True)
class Request:
    method: str = "GET"
    path: str = "/"
    host: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | None = None
    port: str | None = None
    """Name of an extra listener port (`{{port.NAME}}`); None for the gateway port."""

    def describe(self) -> str:
        where = f" to port {self.port}" if self.port else ""
        return f"{self.method} {self.path}{where} host={self.host!r} headers={dict(self.headers)}"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: str
    latency: float
    """Seconds from sending the request to reading the whole body."""
    error: str | None = None
    """Set when no HTTP response came back (connection refused or reset, client timeout)."""

    @property
    def json(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def backend(self) -> str | None:
        """The backend that answered: its response header, else the name in its JSON body.

        None when Envoy answered itself (direct response, redirect, fault, timeout).
        """
        if BACKEND_HEADER in self.headers:
            return self.headers[BACKEND_HEADER]
        body = self.json
        if body and isinstance(body.get("name"), str) and isinstance(body.get("headers"), dict):
            return str(body["name"])
        return None

    @property
    def seen_by_backend(self) -> dict[str, Any]:
        """What the backend reports it received; empty when no backend answered."""
        return (self.json or {}) if self.backend else {}

    def describe(self) -> str:
        if self.error:
            return f"no response ({self.error}) after {self.latency:.3f}s"
        body = self.body if len(self.body) <= 600 else self.body[:600] + "…"
        return f"status {self.status} after {self.latency:.3f}s, headers {self.headers}, body {body!r}"


def send(port: int, request: Request, timeout: float = 10.0, host: str = "127.0.0.1") -> Response:
    """One request on a fresh connection to `host:port`; never raises for network errors."""
    headers = dict(request.headers)
    if request.host is not None:
        headers["Host"] = request.host
    headers.setdefault("Connection", "close")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.monotonic()
    try:
        conn.request(request.method, request.path, body=request.body, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return Response(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=body,
            latency=time.monotonic() - start,
        )
    except (OSError, http.client.HTTPException) as e:
        return Response(status=0, headers={}, body="", latency=time.monotonic() - start, error=repr(e))
    finally:
        conn.close()
