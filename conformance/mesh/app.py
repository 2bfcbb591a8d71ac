"""A Bookinfo-like app for one pod, run inside its netns: `python3 app.py --name reviews-v2 ...`.

It answers every request on its ports with JSON `{"name", "method", "path", "host", "headers",
"calls"}` and the header `x-conformance-backend: <name>`. Before answering it calls its
downstream URLs (productpage -> details, reviews; reviews v2/v3 -> ratings) with the headers
Istio asks apps to propagate, and reports each call: who answered, status, latency, and the
callee's own report, so one response shows the whole chain. A failed call does not fail the
request (Bookinfo's productpage shows "reviews unavailable" and answers 200).

The harness reads what it received and changes its behaviour (status, delay, fail the next N)
over a Unix socket, which iptables cannot capture. Standalone: stdlib only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socketserver
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BACKEND_HEADER = "x-conformance-backend"
PROPAGATED = (
    "x-request-id", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags", "b3", "x-ot-span-context", "traceparent", "tracestate", "end-user",
    "user-agent", "cookie", "authorization",
)


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.calls: list[str] = args.call
        self.behaviour = {
            "status": args.status, "delay": args.delay,
            "fail_next": args.fail_next, "fail_status": args.fail_status,
        }
        self.received: list[dict] = []
        self.lock = threading.Lock()

    def take(self, record: dict) -> tuple[int, float, bool]:
        """Records a request; returns (status, delay, failing) for it."""
        with self.lock:
            b = self.behaviour
            failing = b["fail_next"] > 0
            if failing:
                b["fail_next"] -= 1
            status = b["fail_status"] if failing else b["status"]
            record["answered"] = status
            self.received.append(record)
            return status, 0.0 if failing else b["delay"], failing


def call(url: str, headers: dict[str, str], timeout: float) -> dict:
    """One downstream GET; never raises."""
    u = urlsplit(url)
    out: dict = {"url": url, "service": u.hostname, "status": 0, "backend": None}
    start = time.monotonic()
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request("GET", u.path or "/", headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        out["status"] = resp.status
        out["backend"] = resp.getheader(BACKEND_HEADER)
        out["headers"] = {k.lower(): v for k, v in resp.getheaders()}
        try:
            out["body"] = json.loads(body)
        except ValueError:
            out["body"] = body[:300]
    except (OSError, http.client.HTTPException) as e:
        out["error"] = repr(e)
    finally:
        conn.close()
        out["latency"] = round(time.monotonic() - start, 4)
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State
    call_timeout: float

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if isinstance(self.server, ControlServer):
            return self._control()
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        record = {"at": time.time(), "method": self.command, "path": self.path,
                  "host": headers.get("host", ""), "headers": headers}
        status, delay, failing = self.state.take(record)
        if delay:
            time.sleep(delay)
        forward = {k: v for k, v in headers.items() if k in PROPAGATED}
        calls = [] if failing else [call(u, forward, self.call_timeout) for u in self.state.calls]
        payload = {"name": self.state.name, "method": self.command, "path": self.path,
                   "host": record["host"], "headers": headers, "calls": calls}
        self._answer(status, payload, {BACKEND_HEADER: self.state.name})

    do_POST = do_PUT = do_DELETE = do_HEAD = do_GET

    def _control(self) -> None:
        if self.command == "GET" and self.path == "/received":
            with self.state.lock:
                return self._answer(200, list(self.state.received))
        if self.command == "POST" and self.path == "/behaviour":
            change = json.loads(self.rfile.read(int(self.headers["content-length"])))
            with self.state.lock:
                self.state.behaviour.update(change)
                return self._answer(200, dict(self.state.behaviour))
        self._answer(404, {"error": f"no control {self.command} {self.path}"})

    def _answer(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the proxy gave up (a route timeout)

    def address_string(self) -> str:
        return str(self.client_address[0]) if self.client_address else "unix"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        if not isinstance(self.server, ControlServer):
            print(f"{self.state.name}: {self.address_string()} {format % args}", flush=True)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer's own would reverse-resolve the address: a DNS timeout inside a pod netns.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "app", self.server_address[1]


class ControlServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="identity reported to callers, e.g. reviews-v2")
    p.add_argument("--port", type=int, action="append", default=[], help="HTTP port (repeatable)")
    p.add_argument("--call", action="append", default=[], help="downstream URL (repeatable)")
    p.add_argument("--control", required=True, help="Unix socket path for the harness")
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--fail-next", type=int, default=0)
    p.add_argument("--fail-status", type=int, default=503)
    p.add_argument("--call-timeout", type=float, default=10.0)
    args = p.parse_args()
    Handler.state = State(args)
    Handler.call_timeout = args.call_timeout
    servers: list[socketserver.BaseServer] = [Server(("0.0.0.0", port), Handler) for port in args.port]
    if os.path.exists(args.control):
        os.unlink(args.control)
    servers.append(ControlServer(args.control, Handler))  # last: its socket means "ready"
    for s in servers[:-1]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    print(f"{args.name}: serving ports {args.port}, calls {args.call}", flush=True)
    servers[-1].serve_forever()


if __name__ == "__main__":
    main()
