"""A scenario's `security:` block, parsed strictly: mutual TLS, and JWT signing keys and tokens.

    security:
      mtls: true                # pilotfish's TLS xDS port; every sidecar authenticates there
      workload_cert_ttl: 6s     # lifetime of the certificates sidecars get over SDS
      jwt_keys:                 # made afresh for each test
        main: {alg: RS256}      # {{jwks.main}}: its public JWKS (JSON); {{jwks_uri.main}}: a URL
                                # pilotfish fetches that JWKS from
      tokens:                   # {{token.good}} in request URLs and header values
        good: {key: main, iss: testing@secure.istio.io, sub: alice}
        expired: {key: main, iss: testing@secure.istio.io, sub: alice, expired: true}
        forged: {key: rogue, kid: main, iss: testing@secure.istio.io, sub: alice}
                                # signed by `rogue`, its header naming `main`'s key id

Without `mtls` (or without the block) the mesh is the plaintext one every traffic scenario uses:
pilotfish sends mTLS, authentication and authorization config only to proxies on its TLS port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from harness.durations import seconds
from harness.strict import ScenarioError, keys

ALGORITHMS = ("RS256", "ES256")


@dataclass(frozen=True)
class Token:
    key: str
    """The `jwt_keys` entry that signs it (its `kid` names that key)."""
    iss: str
    sub: str
    expired: bool = False
    """Expired an hour ago, instead of expiring in an hour."""
    kid: str = ""
    """The key id its header names; "" = its signing key's (each key's kid is its name)."""


@dataclass(frozen=True)
class Security:
    mtls: bool = False
    workload_cert_ttl: float | None = None
    jwt_keys: Mapping[str, str] = field(default_factory=dict)
    """Key name -> algorithm."""
    tokens: Mapping[str, Token] = field(default_factory=dict)

    def ttl_arg(self) -> str | None:
        """`--workload-cert-ttl` as pilotfish parses it, or None for its default."""
        if self.workload_cert_ttl is None:
            return None
        return f"{round(self.workload_cert_ttl * 1000)}ms"


def parse_security(where: str, raw: Any) -> Security:
    if raw is None:
        return Security()
    keys(where, raw, {"mtls", "workload_cert_ttl", "jwt_keys", "tokens"})
    mtls = raw.get("mtls", False)
    if not isinstance(mtls, bool):
        raise ScenarioError(f"{where}.mtls: expected true or false, got {mtls!r}")
    ttl = None
    if raw.get("workload_cert_ttl") is not None:
        if not mtls:
            raise ScenarioError(f"{where}.workload_cert_ttl: only with mtls: true")
        ttl = seconds(raw["workload_cert_ttl"])
        if ttl < 1:
            raise ScenarioError(f"{where}.workload_cert_ttl: {raw['workload_cert_ttl']!r} is under 1s")
    jwt_keys: dict[str, str] = {}
    for name, spec in (raw.get("jwt_keys") or {}).items():
        spec = keys(f"{where}.jwt_keys.{name}", spec, {"alg"}, {"alg"})
        if spec["alg"] not in ALGORITHMS:
            raise ScenarioError(f"{where}.jwt_keys.{name}.alg: {spec['alg']!r} is not one of {ALGORITHMS}")
        jwt_keys[str(name)] = str(spec["alg"])
    tokens: dict[str, Token] = {}
    for name, spec in (raw.get("tokens") or {}).items():
        at = f"{where}.tokens.{name}"
        spec = keys(at, spec, {"key", "iss", "sub", "expired", "kid"}, {"key", "iss", "sub"})
        if spec["key"] not in jwt_keys:
            raise ScenarioError(f"{at}.key: {spec['key']!r} is not one of jwt_keys {sorted(jwt_keys)}")
        if not isinstance(spec.get("expired", False), bool):
            raise ScenarioError(f"{at}.expired: expected true or false")
        if spec.get("kid") is not None and spec["kid"] not in jwt_keys:
            raise ScenarioError(f"{at}.kid: {spec['kid']!r} is not one of jwt_keys {sorted(jwt_keys)}")
        tokens[str(name)] = Token(str(spec["key"]), str(spec["iss"]), str(spec["sub"]),
                                  bool(spec.get("expired", False)), str(spec.get("kid") or ""))
    return Security(mtls, ttl, jwt_keys, tokens)


def config_placeholder_known(key: str, security: Security) -> bool:
    """Whether a config file's `{{key}}` is a JWKS placeholder this scenario fills."""
    kind, _, name = key.partition(".")
    return kind in ("jwks", "jwks_uri") and name in security.jwt_keys


def request_placeholder_known(key: str, security: Security) -> bool:
    kind, _, name = key.partition(".")
    return kind == "token" and name in security.tokens
