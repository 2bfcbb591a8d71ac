"""One test's mesh: pilotfish on the bridge, and pods with iptables capture, a sidecar and an app.

`Mesh.start()` applies the config, starts pilotfish, creates every pod and starts all apps and
sidecars at once, then waits until every app answers and every sidecar holds its config.
`close()` removes everything, whatever state the test left it in.

Name resolution: each pod's /etc/hosts (ip netns exec bind-mounts /etc/netns/<ns>/hosts) maps
every Service to its VIP under `name.ns.svc.cluster.local`, `name.ns.svc`, `name.ns`, and plain
`name` for Services of the pod's own namespace, as cluster DNS with the pod's search path would;
external hosts' `hostnames` map to their IP. The test client resolves with the same table.

With `security.mtls`, pilotfish also serves its TLS xDS port (on the bridge IP too) with a CA
kept in the test's work dir, and every sidecar authenticates there as its pod's service account
(`spiffe://cluster.local/ns/<ns>/sa/<account>`): a client certificate from `pilotfish ca issue`,
SERVICE_ACCOUNT in its node metadata, and a Pod object with `serviceAccountName` and the label
`security.istio.io/tlsMode: istio` that Istio's injector adds (what auto-mTLS keys on).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import yaml

from harness.client import Request as HttpRequest
from harness.client import Response, send
from harness import pilotfish as pilotfish_mod
from harness.pilotfish import HarnessError, Pilotfish
from harness.template import placeholders, render

from . import iptables
from .apps import App
from .configdir import ConfigDir
from .iptables import PROXY_GID, PROXY_UID
from .jwt import JwtIssuers
from .netns import Network, NetnsThreads, clean_leftovers, sh
from .scenario import PodSpec, Request
from .security import Security
from .sidecar import Sidecar, bootstrap

CLIENT_WORKERS = 16
READY_TIMEOUT = 40.0
TLS_MODE_LABEL = "security.istio.io/tlsMode"


@dataclass
class Pod:
    spec: PodSpec
    ip: str
    netns: str
    threads: NetnsThreads
    app: App | None = None
    sidecar: Sidecar | None = None


class Mesh:
    def __init__(self, work_dir: Path, specs: Mapping[str, PodSpec], client: str,
                 xds_variant: str = "sotw", security: Security | None = None) -> None:
        if xds_variant not in ("sotw", "delta"):
            raise ValueError(f"xds_variant {xds_variant!r} is not sotw or delta")
        self.xds_variant = xds_variant
        self.work_dir = work_dir
        self.specs = dict(specs)
        self.client = client
        self.security = security or Security()
        clean_leftovers()
        self.network = Network()
        self.jwt: JwtIssuers | None = None
        try:
            # Unix sockets need a short path (108 bytes); pytest's tmp dirs can be longer. Also
            # the sidecars' certificates: uid 1337 cannot enter pytest's tmp dirs.
            self.sockets = Path(f"/tmp/pfmesh-{self.network.tag}")
            self.sockets.mkdir(exist_ok=True)
            os.chmod(self.sockets, 0o755)
            self.config = ConfigDir(work_dir / "config", work_dir / "scratch")
            self.ips = {name: self.network.allocate_ip() for name in self.specs}
            self.jwt = JwtIssuers(self.security)
        except BaseException:
            self.network.close()
            raise
        self.vips: dict[str, str] = {}
        self.pods: dict[str, Pod] = {}
        self.pilotfish: Pilotfish | None = None

    # --- config ----------------------------------------------------------------------------

    def _values(self, text: str) -> dict[str, str]:
        values = {f"pod.{name}.ip": ip for name, ip in self.ips.items()}
        values.update(self.jwt.config_values() if self.jwt else {})
        for key in placeholders(text):
            if key.startswith("vip.") and key not in self.vips:
                self.vips[key] = self.network.allocate_vip()
        return {**values, **self.vips}

    def apply(self, source: Path, delete: bool = False) -> list[str]:
        """`kubectl apply -f source` (or `delete -f`), placeholders rendered; hosts files follow."""
        raw = source.read_text()
        text = render(raw, self._values(raw), str(source))
        names = (self.config.delete if delete else self.config.apply)(text, source.name)
        self._write_hosts_files()
        return names

    def _pod_objects(self) -> str:
        docs = []
        for s in self.specs.values():
            if s.external:
                continue
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": s.name, "namespace": s.namespace, "labels": dict(s.labels)},
                "spec": {"containers": [{"name": "app", "image": "conformance/app",
                                         "ports": [{"containerPort": p} for p in s.ports]}]},
                "status": {"phase": "Running", "podIP": self.ips[s.name]},
            }
            if self.security.mtls:
                pod["spec"]["serviceAccountName"] = s.account
                if s.sidecar:
                    pod["metadata"]["labels"][TLS_MODE_LABEL] = "istio"
            docs.append(pod)
        return yaml.safe_dump_all(docs, sort_keys=False)

    def _identity(self, spec: PodSpec) -> Path:
        """The pod's client certificate for the TLS xDS port, readable by its Envoy (uid 1337)."""
        out = self.sockets / f"identity-{spec.name}"
        pilotfish_mod.ca_issue(self.work_dir / "ca", spec.namespace, spec.account, out)
        for path in (out, *out.iterdir()):
            os.chown(path, PROXY_UID, PROXY_GID)
        return out

    def hosts_table(self, namespace: str) -> list[tuple[str, list[str]]]:
        table: list[tuple[str, list[str]]] = [("127.0.0.1", ["localhost"])]
        for obj in self.config.objects():
            ip = (obj.get("spec") or {}).get("clusterIP")
            if obj.get("kind") != "Service" or not ip or ip == "None":
                continue
            name, ns = obj["metadata"]["name"], obj["metadata"].get("namespace") or "default"
            names = [f"{name}.{ns}.svc.cluster.local", f"{name}.{ns}.svc", f"{name}.{ns}"]
            table.append((ip, names + ([name] if ns == namespace else [])))
        for s in self.specs.values():
            table.append((self.ips[s.name], [s.name, *s.hostnames]))
        return table

    def _hosts_text(self, namespace: str) -> str:
        return "".join(f"{ip}\t{' '.join(names)}\n" for ip, names in self.hosts_table(namespace))

    def _write_hosts_files(self) -> None:
        # Rewritten in place: the bind mount of a running pod keeps pointing at this inode.
        for pod in self.pods.values():
            with open(f"/etc/netns/{pod.netns}/hosts", "w") as f:
                f.write(self._hosts_text(pod.spec.namespace))

    def resolve(self, host: str, namespace: str) -> str:
        for ip, names in self.hosts_table(namespace):
            if host in names:
                return ip
        if host.replace(".", "").isdigit():
            return host
        raise HarnessError(f"{host!r} resolves to nothing in namespace {namespace}'s /etc/hosts")

    # --- lifecycle -------------------------------------------------------------------------

    def start(self, config_dirs: tuple[Path, ...]) -> None:
        for d in config_dirs:
            for f in sorted(d.glob("*.yaml")):
                self.apply(f)
        self.config.apply(self._pod_objects(), "pods (written by the harness)")
        mtls = self.security.mtls
        ttl = self.security.ttl_arg()
        self.pilotfish = Pilotfish(self.config.path, self.work_dir, host=self.network.gateway_ip,
                                   ca_dir=self.work_dir / "ca" if mtls else None,
                                   extra_args=["--workload-cert-ttl", ttl] if ttl else [])
        self.pilotfish.wait_serving()
        for spec in self.specs.values():
            self._create_pod(spec)
        for pod in self.pods.values():
            if pod.app:
                pod.app.wait_up(READY_TIMEOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        for pod in self.pods.values():
            if pod.sidecar:
                pod.sidecar.wait_settled(max(1.0, deadline - time.monotonic()))

    def _create_pod(self, spec: PodSpec) -> None:
        ip = self.ips[spec.name]
        netns = self.network.add_pod(spec.name, ip, self._hosts_text(spec.namespace))
        # Threads start as requests need them: any pod can send (`from:`) without a cost.
        threads = NetnsThreads(netns, CLIENT_WORKERS)
        pod = self.pods[spec.name] = Pod(spec, ip, netns, threads)
        prefix = self.network.exec_argv(spec.name)
        if spec.sidecar:
            sh(*prefix, "iptables-restore", "--noflush", input=iptables.rules())
            assert self.pilotfish is not None
            identity = self._identity(spec) if self.security.mtls else None
            address = self.pilotfish.secure_address if identity else self.pilotfish.address
            assert address is not None
            config = bootstrap(address, ip, spec.name, spec.namespace, spec.labels,
                               delta=self.xds_variant == "delta", identity=identity,
                               service_account=spec.account if identity else None)
            pod.sidecar = Sidecar(spec.name, prefix, threads, config, self.work_dir)
        if spec.ports or spec.calls:
            pod.app = App(spec.name, prefix, spec.ports, spec.calls, spec.behaviour,
                          self.sockets / f"{len(self.pods)}.sock", self.work_dir)

    def close(self) -> None:
        """Stops every process, then removes netns, bridge and files; never raises."""
        steps = [p.sidecar.stop for p in self.pods.values() if p.sidecar]
        steps += [p.app.stop for p in self.pods.values() if p.app]
        # pilotfish before the bridge: a concurrent run's cleanup kills a pilotfish whose
        # gateway IP is gone.
        steps += [self.pilotfish.stop] if self.pilotfish else []
        steps += [p.threads.close for p in self.pods.values()]
        steps += [self.jwt.close] if self.jwt else []
        steps += [self.network.close, lambda: shutil.rmtree(self.sockets, ignore_errors=True)]
        for step in steps:
            try:
                step()
            except Exception as e:  # noqa: BLE001 - teardown must go on
                print(f"mesh teardown: {e!r}")

    # --- traffic ---------------------------------------------------------------------------

    @property
    def sidecars(self) -> list[Sidecar]:
        return [p.sidecar for p in self.pods.values() if p.sidecar]

    def _prepare(self, request: Request) -> tuple[str, int, HttpRequest]:
        """Where `curl URL` in the sending pod would connect, and what it would send
        (`{{token.NAME}}`s filled in)."""
        values = dict(self.jwt.request_values()) if self.jwt else {}
        url = render(request.url, values, "request url")
        u = urlsplit(url)
        port = u.port or 80
        ip = self.resolve(u.hostname or "", self.pods[request.from_pod or self.client].spec.namespace)
        return ip, port, HttpRequest(
            method=request.method,
            path=(u.path or "/") + (f"?{u.query}" if u.query else ""),
            host=u.hostname if port == 80 else f"{u.hostname}:{port}",
            headers={k: render(v, values, f"request header {k}") for k, v in request.headers.items()},
            body=request.body,
        )

    def send(self, request: Request, timeout: float = 15.0) -> Response:
        """One request from its pod (the socket opened inside the pod's netns)."""
        ip, port, http = self._prepare(request)
        return self.pods[request.from_pod or self.client].threads.run(send, port, http, timeout, ip)

    def send_many(self, request: Request, count: int, concurrency: int = 1) -> list[Response]:
        """`count` requests, `concurrency` at a time (each batch sent at once)."""
        ip, port, http = self._prepare(request)
        threads = self.pods[request.from_pod or self.client].threads
        out: list[Response] = []
        for start in range(0, count, max(1, concurrency)):
            batch = min(max(1, concurrency), count - start)
            out += threads.map(lambda _: send(port, http, 15.0, ip), list(range(batch)))
        return out
