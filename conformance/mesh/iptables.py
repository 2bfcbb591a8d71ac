"""The traffic capture Istio's init container (`istio-iptables`) installs in a pod, in REDIRECT
mode, as in its golden files (tools/istio-iptables/pkg/capture/testdata): inbound TCP to
15006, outbound TCP to 15001, the proxy's own traffic (uid/gid 1337) and what it sends from
127.0.0.6 to the app left alone.

One deviation: the apps and the test client are not uid 1337, so their traffic is captured, and
nothing here excludes extra ports: Envoy's admin API is reached on 127.0.0.1 from inside the
netns, which `-d 127.0.0.1/32 -j RETURN` already leaves alone, as in a real pod.
"""

from __future__ import annotations

PROXY_UID = 1337
PROXY_GID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
# istio-iptables' own exclusions (15008 HBONE) and the injector's default
# `-d 15090,15021,15020` (Prometheus, health, agent).
EXCLUDED_INBOUND_PORTS = (15008, 15090, 15021, 15020)


def rules() -> str:
    """The nat table, as `iptables-restore --noflush` input."""
    uid, gid = PROXY_UID, PROXY_GID
    lines = [
        "*nat",
        ":ISTIO_INBOUND - [0:0]",
        ":ISTIO_REDIRECT - [0:0]",
        ":ISTIO_IN_REDIRECT - [0:0]",
        ":ISTIO_OUTPUT - [0:0]",
        f"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {OUTBOUND_PORT}",
        f"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {INBOUND_PORT}",
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        *(f"-A ISTIO_INBOUND -p tcp --dport {p} -j RETURN" for p in EXCLUDED_INBOUND_PORTS),
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A OUTPUT -j ISTIO_OUTPUT",
        # What Envoy sends to the app from 127.0.0.6 (inbound clusters) goes straight through.
        "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        # The proxy calling its own pod's IP: back in as inbound traffic.
        f"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --uid-owner {uid} -j RETURN",
        f"-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner {gid} -j ISTIO_IN_REDIRECT",
        f"-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner {gid} -j RETURN",
        f"-A ISTIO_OUTPUT -m owner --gid-owner {gid} -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        "COMMIT",
    ]
    return "\n".join(lines) + "\n"
