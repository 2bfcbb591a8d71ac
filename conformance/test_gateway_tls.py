"""Gateway TLS end to end: the gateway Envoy authenticates to pilotfish's TLS xDS port with a
client certificate from `pilotfish ca issue`, gets the credentials of its Gateway's
`credentialName`s over SDS, and terminates real TLS with them (Istio's secure-ingress task).
A gateway on the plaintext port gets the same listeners but never a secret.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import Behaviour, Request, Tls
from harness.client import send
from harness.net import wait_until
from harness.pilotfish import GATEWAY_NODE_ID, HarnessError

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "fixtures" / "gateway-tls" / "gateway.yaml"
KEYS = HERE.parent / "tests" / "fixtures" / "gateway-tls"
CA = KEYS / "ca.crt"
SECRET_NAMES = ["kubernetes://admin-cert", "kubernetes://admin-cert-cacert", "kubernetes://web-cert"]
PLAIN_NODE_ID = GATEWAY_NODE_ID.replace("ingress-gw.", "ingress-plain.")


def _secret_docs() -> list[str]:
    """The Secrets of tests/fixtures/gateway-tls (web-cert, admin-cert, admin-cert-cacert), as
    the YAML text they are written in there."""
    docs = (KEYS / "config.yaml").read_text().split("\n---\n")
    return [d for d in docs if (yaml.safe_load(d) or {}).get("kind") == "Secret"]


def _secrets() -> list[dict[str, Any]]:
    return [yaml.safe_load(d) for d in _secret_docs()]


def _stack(make_stack, xds_variant: str):
    stack = make_stack(
        backends={"web": Behaviour()},
        extra_ports=["https", "plainhttp", "plainhttps"],
        xds_variant=xds_variant,
        secure_xds=True,
    )
    stack.write_config(CONFIG)
    secrets = stack.work_dir / "secrets.yaml"
    secrets.write_text("\n---\n".join(_secret_docs()) + "\n")
    stack.write_config(secrets)
    return stack


def _https(stack, host: str, client: bool = False, port: str = "https"):
    tls = Tls(
        server_name=host,
        ca_file=CA,
        client_cert=KEYS / "client.crt" if client else None,
        client_key=KEYS / "client.key" if client else None,
    )
    return send(stack.ports[port], Request(path="/cart", host=host), timeout=5.0, tls=tls)


def _secret_names(envoy, state: str) -> list[str]:
    """Names of the SDS secrets Envoy holds in `state` (`dynamic_active_secrets`, …)."""
    dump = envoy.config_dump("dynamic_active_secrets" if state == "active" else "dynamic_warming_secrets")
    return sorted(c.get("name", "") for c in dump.get("configs", []))


def _warming_listeners(envoy) -> list[str]:
    dump = envoy.config_dump("dynamic_listeners")
    return sorted(c["name"] for c in dump.get("configs", []) if "warming_state" in c)


@pytest.mark.parametrize("xds_variant", ["sotw", "delta"])
def test_authenticated_gateway_terminates_tls_with_the_secrets(make_stack, xds_variant: str) -> None:
    stack = _stack(make_stack, xds_variant)
    stack.start()
    https_port = stack.ports["https"]
    assert https_port in stack.envoy.active_listener_ports(), (
        f"HTTPS listener {https_port} not active; warming {_warming_listeners(stack.envoy)}, "
        f"secrets {_secret_names(stack.envoy, 'active')}"
    )
    assert _secret_names(stack.envoy, "active") == SECRET_NAMES

    # SIMPLE: the certificate served for SNI web.example.com is the Secret's, and routes.
    resp = _https(stack, "web.example.com")
    assert resp.status == 200 and resp.backend == "web", resp.describe()
    web_cert = next(s for s in _secrets() if s["metadata"]["name"] == "web-cert")
    assert resp.peer_cert_der == ssl.PEM_cert_to_DER_cert(web_cert["stringData"]["tls.crt"]), (
        f"the gateway served {resp.peer_cert}, not web-cert's certificate"
    )
    assert resp.peer_cert is not None
    assert dict(x[0] for x in resp.peer_cert["subject"]) == {"commonName": "web.example.com"}
    assert ("DNS", "web.example.com") in resp.peer_cert["subjectAltName"]

    # MUTUAL: without a client certificate Envoy ends the connection (in TLS 1.3 the client
    # sees it after its side of the handshake: an EOF or reset instead of a response).
    refused = _https(stack, "admin.example.com")
    assert refused.status == 0 and refused.error, refused.describe()
    mutual = _https(stack, "admin.example.com", client=True)
    assert mutual.status == 200 and mutual.backend == "web", mutual.describe()
    assert mutual.seen_by_backend["host"] == "admin.example.com"
    assert stack.backends["web"].request_count() == 2

    # httpsRedirect on the HTTP server.
    redirect = stack.send(Request(path="/cart?id=1", host="web.example.com"))
    assert redirect.status == 301, redirect.describe()
    assert redirect.headers.get("location") == "https://web.example.com/cart?id=1", redirect.describe()


def _lds_applied(envoy) -> bool:
    try:
        return envoy.stats("listener_manager.lds.update_success").get("listener_manager.lds.update_success", 0) > 0
    except HarnessError:  # admin not up yet
        return False


def _assert_no_secret_material(envoy) -> None:
    dump = str(envoy.config_dump())
    for secret in _secrets():
        for value in secret["stringData"].values():
            line = value.splitlines()[1]
            assert line not in dump, f"{secret['metadata']['name']} material in {envoy.name}'s config dump"


@pytest.mark.parametrize("xds_variant", ["sotw", "delta"])
def test_plaintext_gateway_is_never_sent_the_secrets(make_stack, xds_variant: str) -> None:
    """A gateway on the plaintext port whose Gateway names the same credential is given no
    TLS server at all (nothing that would wait for a secret), while an authenticated gateway
    is sent the secrets and serves them."""
    stack = _stack(make_stack, xds_variant)
    stack.start_pilotfish()
    plain = stack.start_envoy(labels={"istio": "plaingateway"}, node_id=PLAIN_NODE_ID)
    # Its plain-HTTP server is served at once: nothing waits on SDS.
    plain.wait_ready(stack.ports["plainhttp"], f"http.{stack.ports['plainhttp']}", 10.0)
    redirect = stack.send(Request(path="/", host="web.example.com"), port="plainhttp")
    assert redirect.status == 301, redirect.describe()

    # An authenticated gateway: the secrets exist and pilotfish sends them.
    tls_gateway = stack.start_envoy(identity=stack.identity("istio-system", "istio-ingressgateway"))
    tls_gateway.wait_ready(stack.ports["https"], None, 20.0)
    assert _secret_names(tls_gateway, "active") == SECRET_NAMES
    resp = _https(stack, "web.example.com")
    assert resp.status == 200 and resp.backend == "web", resp.describe()

    # The plaintext gateway never got a secret, nor a listener asking for one.
    assert _secret_names(plain, "active") == [], "secrets sent to a proxy on the plaintext port"
    assert _secret_names(plain, "warming") == [], "a listener of the plaintext gateway waits for a secret"
    assert _warming_listeners(plain) == []
    refused = _https(stack, "web.example.com", port="plainhttps")
    assert refused.status == 0 and refused.peer_cert is None, refused.describe()
    _assert_no_secret_material(plain)
