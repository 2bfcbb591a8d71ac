"""JWT signing keys made per test, the tokens a scenario names, and an HTTP server for the JWKS.

The keys are fresh each run, so no token can pass by accident of a fixture; `{{jwks.NAME}}`
(the inline `jwks` of a RequestAuthentication) and the JWKS served at `{{jwks_uri.NAME}}` hold
only the public half. Pilotfish fetches `jwksUri`s itself and inlines the keys (istiod's
default), so the server listens on loopback of the test host, where pilotfish runs.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from .security import Security

TOKEN_LIFETIME = 3600


def _generate(name: str, alg: str) -> RSAKey | ECKey:
    params = {"kid": name, "alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=params)
    return ECKey.generate_key("P-256", parameters=params)


class JwtIssuers:
    """The scenario's `jwt_keys` and `tokens`, and the JWKS server (stopped by `close()`)."""

    def __init__(self, security: Security) -> None:
        self.keys = {name: _generate(name, alg) for name, alg in security.jwt_keys.items()}
        self.jwks = {name: json.dumps(KeySet([k]).as_dict(private=False), separators=(",", ":"))
                     for name, k in self.keys.items()}
        now = int(time.time())
        self.tokens: dict[str, str] = {}
        for name, t in security.tokens.items():
            key = self.keys[t.key]
            exp = now - TOKEN_LIFETIME if t.expired else now + TOKEN_LIFETIME
            claims = {"iss": t.iss, "sub": t.sub, "iat": exp - 2 * TOKEN_LIFETIME if t.expired else now,
                      "exp": exp}
            header = {"alg": security.jwt_keys[t.key], "kid": t.kid or t.key, "typ": "JWT"}
            self.tokens[name] = jwt.encode(header, claims, key)
        self._server: ThreadingHTTPServer | None = None
        self.fetches: list[str] = []
        if self.keys:
            self._serve()

    def _serve(self) -> None:
        issuers = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - stdlib name
                name = self.path.strip("/").removesuffix(".json")
                issuers.fetches.append(self.path)
                body = issuers.jwks.get(name, "").encode()
                self.send_response(200 if body else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def config_values(self) -> Mapping[str, str]:
        """`{{jwks.NAME}}` and `{{jwks_uri.NAME}}` for config files."""
        values = {f"jwks.{name}": text for name, text in self.jwks.items()}
        if self._server is not None:
            port = self._server.server_address[1]
            values.update({f"jwks_uri.{name}": f"http://127.0.0.1:{port}/{name}.json" for name in self.keys})
        return values

    def request_values(self) -> Mapping[str, str]:
        """`{{token.NAME}}` for request URLs and headers."""
        return {f"token.{name}": token for name, token in self.tokens.items()}

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
