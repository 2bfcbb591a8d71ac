"""The pilotfish binary: `serve` as a managed process, `bootstrap` and `validate` as commands."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Mapping, Sequence

from .net import accepts_connections, free_port, wait_until
from .process import ManagedProcess

REPO_ROOT = Path(__file__).resolve().parents[2]

GATEWAY_NODE_ID = "router~127.0.0.1~ingress-gw.istio-system~istio-system.svc.cluster.local"
GATEWAY_LABELS: Mapping[str, str] = {"istio": "ingressgateway"}
# The identity a gateway on the TLS xDS port authenticates as; its namespace must be the node
# id's, or pilotfish sends it no secrets.
GATEWAY_NAMESPACE = "istio-system"
GATEWAY_SERVICE_ACCOUNT = "istio-ingressgateway"


class HarnessError(AssertionError):
    """The suite could not set up what a test needs; the message says what and shows logs."""


def binary() -> Path:
    """`$PILOTFISH_BIN`, else `target/debug/pilotfish` under the repo root."""
    path = Path(os.environ.get("PILOTFISH_BIN", REPO_ROOT / "target" / "debug" / "pilotfish"))
    if not path.is_absolute():
        path = REPO_ROOT / path
    if not path.is_file():
        raise HarnessError(f"pilotfish binary {path} not found: run `cargo build` or set PILOTFISH_BIN")
    return path


def run(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Runs `pilotfish ARGS` to completion, capturing output."""
    return subprocess.run(
        [str(binary()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def bootstrap(
    xds_address: str,
    admin_port: int,
    node_id: str = GATEWAY_NODE_ID,
    labels: Mapping[str, str] = GATEWAY_LABELS,
    identity: Path | None = None,
    stats_port: int = 0,
    health_port: int = 0,
) -> dict[str, Any]:
    """The Envoy bootstrap `pilotfish bootstrap` prints, parsed.

    With `identity` (a dir from `ca_issue`) Envoy speaks TLS to `xds_address` (the secure
    port), trusting the dir's `root-cert.pem` and presenting its client certificate.
    `stats_port` / `health_port` are istio-proxy's 15090 / 15021 listeners; off (0) unless
    given, because Envoys sharing the host's network would all bind the same wildcard port.
    """
    args = ["bootstrap", "--node-id", node_id, "--xds-address", xds_address]
    args += ["--admin-port", str(admin_port)]
    args += ["--stats-port", str(stats_port), "--health-port", str(health_port)]
    if labels:
        args += ["--labels", ",".join(f"{k}={v}" for k, v in labels.items())]
    if identity is not None:
        args += ["--xds-root-cert", str(identity / "root-cert.pem")]
        args += ["--xds-client-cert-dir", str(identity)]
    out = run(args)
    if out.returncode != 0:
        raise HarnessError(
            f"`pilotfish {' '.join(args)}` exited {out.returncode}\n"
            f"stderr:\n{out.stderr}\nstdout:\n{out.stdout}"
        )
    try:
        value = json.loads(out.stdout)
    except ValueError as e:
        raise HarnessError(f"`pilotfish bootstrap` printed no JSON ({e}):\n{out.stdout[:2000]}")
    if not isinstance(value, dict):
        raise HarnessError(f"`pilotfish bootstrap` printed {type(value).__name__}, not an object")
    return value


def ca_issue(ca_dir: Path, namespace: str, service_account: str, out: Path) -> Path:
    """`pilotfish ca issue`: `cert-chain.pem`, `key.pem`, `root-cert.pem` for one identity in
    `out`, signed by the CA kept in `ca_dir` (the one `serve --ca-dir` uses)."""
    args = ["ca", "issue", "--ca-dir", str(ca_dir), "--namespace", namespace]
    args += ["--service-account", service_account, "--out", str(out)]
    result = run(args)
    if result.returncode != 0:
        raise HarnessError(
            f"`pilotfish {' '.join(args)}` exited {result.returncode}\nstderr:\n{result.stderr}"
        )
    missing = [f for f in ("cert-chain.pem", "key.pem", "root-cert.pem") if not (out / f).is_file()]
    if missing:
        raise HarnessError(f"`pilotfish ca issue` wrote no {missing} in {out}")
    return out


class Pilotfish:
    """`pilotfish serve` on a free port of `host` (loopback unless pods must reach it).

    With `ca_dir`, also the TLS xDS port (istiod's 15012) on another free port, its CA kept in
    `ca_dir`: only proxies authenticated there are sent secrets.
    """

    def __init__(
        self,
        config_dir: Path,
        work_dir: Path,
        debounce: str = "100ms",
        port: int | None = None,
        host: str = "127.0.0.1",
        ca_dir: Path | None = None,
        secure_port: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.config_dir = config_dir
        self.host = host
        self.port = port or free_port(host)
        self.address = f"{host}:{self.port}"
        self.ca_dir = ca_dir
        self.secure_port: int | None = None
        self.secure_address: str | None = None
        args = [
            str(binary()),
            "serve",
            "--config-dir",
            str(config_dir),
            "--xds-address",
            self.address,
            "--debounce",
            debounce,
        ]
        if ca_dir is not None:
            self.secure_port = secure_port or free_port(host)
            self.secure_address = f"{host}:{self.secure_port}"
            args += ["--secure-xds-address", self.secure_address, "--ca-dir", str(ca_dir)]
        args += extra_args
        log_level = os.environ.get("PILOTFISH_LOG", "info")
        self.process = ManagedProcess(
            "pilotfish",
            args,
            work_dir / "pilotfish.log",
            env={"RUST_LOG": log_level, "NO_COLOR": "1", "RUST_BACKTRACE": "1"},
        )

    def wait_serving(self, timeout: float = 15.0) -> None:
        ports = [self.port] + ([self.secure_port] if self.secure_port is not None else [])
        ok = wait_until(
            lambda: not self.process.running()
            or all(accepts_connections(self.host, p) for p in ports),
            timeout,
        )
        if not self.process.running():
            raise HarnessError(
                f"pilotfish exited with {self.process.exit_code()} before serving:\n"
                f"{self.process.log_tail()}"
            )
        if not ok:
            raise HarnessError(
                f"pilotfish did not accept connections on {self.address}"
                f"{' and ' + self.secure_address if self.secure_address else ''} within {timeout}s:\n"
                f"{self.process.log_tail()}"
            )

    def stop(self) -> None:
        self.process.stop()
