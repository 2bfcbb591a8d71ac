"""Sends one HTTP/1.1 request to the gateway and records what came back and how long it took."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
from pathlib import Path
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
    """Set when no HTTP response came back (connection refused or reset, client timeout, a
    failed TLS handshake)."""
    peer_cert: dict[str, Any] | None = None
    """Over TLS: the verified certificate the server presented (`SSLSocket.getpeercert()`)."""
    peer_cert_der: bytes | None = None
    """The same certificate, DER: to compare with the one a Secret holds."""

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


@dataclass(frozen=True)
class Tls:
    """How `send` speaks TLS: SNI `server_name`, the server verified against `ca_file` (its
    certificate must name `server_name`), and optionally a client certificate."""

    server_name: str
    ca_file: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.set_alpn_protocols(["http/1.1"])
        if self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key) if self.client_key else None)
        return ctx


def send(
    port: int,
    request: Request,
    timeout: float = 10.0,
    host: str = "127.0.0.1",
    tls: Tls | None = None,
) -> Response:
    """One request on a fresh connection to `host:port` (over TLS with `tls`); never raises
    for network or TLS errors."""
    headers = dict(request.headers)
    if request.host is not None:
        headers["Host"] = request.host
    headers.setdefault("Connection", "close")
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    start = time.monotonic()
    peer_cert = peer_cert_der = None
    try:
        if tls is not None:
            # Connect to the loopback address but send the test's host as SNI: http.client
            # uses a socket that is already set.
            raw = socket.create_connection((host, port), timeout=timeout)
            try:
                conn.sock = tls.context().wrap_socket(raw, server_hostname=tls.server_name)
            except BaseException:
                raw.close()
                raise
            peer_cert = conn.sock.getpeercert()
            peer_cert_der = conn.sock.getpeercert(binary_form=True)
        conn.request(request.method, request.path, body=request.body, headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        return Response(
            status=resp.status,
            headers={k.lower(): v for k, v in resp.getheaders()},
            body=body,
            latency=time.monotonic() - start,
            peer_cert=peer_cert,
            peer_cert_der=peer_cert_der,
        )
    except (OSError, http.client.HTTPException) as e:  # ssl.SSLError is an OSError
        return Response(
            status=0, headers={}, body="", latency=time.monotonic() - start, error=repr(e),
            peer_cert=peer_cert, peer_cert_der=peer_cert_der,
        )
    finally:
        conn.close()
