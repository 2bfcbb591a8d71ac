"""Small HTTP backends that report what they received.

Each backend listens on its own 127.0.0.x address and a kernel-chosen port, and answers every
request with JSON `{"name", "method", "path", "host", "headers", "query", "body"}` and a header
`x-conformance-backend: <name>`. It can be told to fail the next N requests, to delay, or to
answer with another status.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .net import next_loopback_address

BACKEND_HEADER = "x-conformance-backend"


@dataclass
class Behaviour:
    """How a backend answers. `fail_next` counts down with each request it fails."""

    status: int = 200
    delay: float = 0.0
    fail_next: int = 0
    fail_status: int = 503


@dataclass(frozen=True)
class Received:
    at: float
    method: str
    path: str
    host: str
    headers: dict[str, str]
    answered: int


@dataclass
class _State:
    name: str
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def _serve(self) -> None:
        state = self.server.state
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode(errors="replace") if length else ""
        with state.lock:
            b = state.behaviour
            if b.fail_next > 0:
                b.fail_next -= 1
                status, delay = b.fail_status, 0.0
            else:
                status, delay = b.status, b.delay
            url = urlsplit(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            state.received.append(
                Received(
                    at=time.monotonic(),
                    method=self.command,
                    path=url.path,
                    host=headers.get("host", ""),
                    headers=headers,
                    answered=status,
                )
            )
        if delay:
            time.sleep(delay)
        payload = json.dumps(
            {
                "name": state.name,
                "method": self.command,
                "path": url.path,
                "host": headers.get("host", ""),
                "headers": headers,
                "query": {k: v if len(v) > 1 else v[0] for k, v in parse_qs(url.query).items()},
                "body": body,
            }
        ).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header(BACKEND_HEADER, state.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The proxy gave up (a route timeout); nothing to answer.
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: _State) -> None:
        self.state = state
        super().__init__(address, _Handler)


class Backend:
    """One backend server; `start()` binds it, `stop()` closes it."""

    def __init__(self, name: str, behaviour: Behaviour | None = None, port: int = 0) -> None:
        """`port` 0 lets the kernel pick one; replicas of one workload share a fixed port, as
        the endpoints of one EndpointSlice do."""
        self.name = name
        self.address = next_loopback_address()
        self._requested_port = port
        self._state = _State(name=name, behaviour=behaviour or Behaviour())
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"backend {self.name} is not started")
        return int(self._server.server_address[1])

    def start(self) -> "Backend":
        self._server = _Server((self.address, self._requested_port), self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"backend-{self.name}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def configure(
        self,
        *,
        status: int | None = None,
        delay: float | None = None,
        fail_next: int | None = None,
        fail_status: int | None = None,
    ) -> None:
        with self._state.lock:
            b = self._state.behaviour
            if status is not None:
                b.status = status
            if delay is not None:
                b.delay = delay
            if fail_next is not None:
                b.fail_next = fail_next
            if fail_status is not None:
                b.fail_status = fail_status

    def received(self) -> list[Received]:
        with self._state.lock:
            return list(self._state.received)

    def request_count(self) -> int:
        with self._state.lock:
            return len(self._state.received)

    def __repr__(self) -> str:
        port = self._server.server_address[1] if self._server else "-"
        return f"Backend({self.name} at {self.address}:{port})"
