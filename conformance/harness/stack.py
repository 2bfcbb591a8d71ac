"""One test's world: backends, pilotfish serving a temp config dir, and a gateway Envoy.

Everything is stopped by `close()`, which `with Stack(...)` calls even when a test fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

from . import envoy as envoy_mod
from . import pilotfish as pilotfish_mod
from .backend import Backend, Behaviour
from .client import Request, Response, send
from .envoy import Envoy
from .net import free_listener_port
from .pilotfish import (
    GATEWAY_LABELS,
    GATEWAY_NAMESPACE,
    GATEWAY_NODE_ID,
    GATEWAY_SERVICE_ACCOUNT,
    Pilotfish,
)
from .template import render


class Stack:
    def __init__(
        self,
        work_dir: Path,
        backends: Mapping[str, Behaviour],
        gateway_labels: Mapping[str, str] = GATEWAY_LABELS,
        node_id: str = GATEWAY_NODE_ID,
        extra_ports: Iterable[str] = (),
        xds_variant: str = "sotw",
        secure_xds: bool = False,
    ) -> None:
        self.work_dir = work_dir
        self.config_dir = work_dir / "config"
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.gateway_labels = dict(gateway_labels)
        if xds_variant not in ("sotw", "delta"):
            raise ValueError(f"xds_variant {xds_variant!r} is not sotw or delta")
        self.xds_variant = xds_variant
        self.node_id = node_id
        # pilotfish also serves its TLS xDS port, with its CA here; `start()` then connects the
        # gateway Envoy there with a client certificate (see `identity`).
        self.ca_dir = work_dir / "ca" if secure_xds else None
        self.gateway_port = free_listener_port()
        # More listener ports, for `{{port.NAME}}` (a Gateway server added by an edit).
        self.ports = {name: free_listener_port() for name in extra_ports}
        self.backends: dict[str, Backend] = {}
        for name, behaviour in backends.items():
            self.backends[name] = Backend(name, behaviour).start()
        self.pilotfish: Pilotfish | None = None
        self.envoys: list[Envoy] = []

    # --- config ----------------------------------------------------------------------------

    def template_values(self) -> dict[str, str]:
        values = {"gateway.port": str(self.gateway_port)}
        for name, port in self.ports.items():
            values[f"port.{name}"] = str(port)
        for name, b in self.backends.items():
            values[f"backend.{name}.address"] = b.address
            values[f"backend.{name}.port"] = str(b.port)
        return values

    def write_config(self, source: Path, name: str | None = None) -> Path:
        """Renders `source` into the served config dir as `name` (default: its own name).

        Writes a temp file and renames it, so the watcher never reads half a file.
        """
        target = self.config_dir / (name or source.name)
        text = render(source.read_text(), self.template_values(), str(source))
        tmp = self.work_dir / f".{target.name}.tmp"
        tmp.write_text(text)
        tmp.replace(target)
        return target

    def remove_config(self, name: str) -> None:
        (self.config_dir / name).unlink()

    def load_config_dir(self, source_dir: Path) -> None:
        for path in sorted(source_dir.iterdir()):
            if path.is_file() and path.suffix in (".yaml", ".yml"):
                self.write_config(path)

    # --- processes -------------------------------------------------------------------------

    @property
    def envoy(self) -> Envoy | None:
        """The gateway Envoy (the first one started)."""
        return self.envoys[0] if self.envoys else None

    def start(self, ready_timeout: float = 20.0, route_config: str | None = "default") -> None:
        """Starts pilotfish, then the gateway Envoy, and waits until the gateway listener serves.

        `route_config="default"` waits for the listener on the gateway port and its route config
        `http.<gateway port>`; None waits only for Envoy's `/ready` (a config with no Gateway).
        """
        self.start_pilotfish()
        identity = None
        if self.ca_dir is not None:
            identity = self.identity(GATEWAY_NAMESPACE, GATEWAY_SERVICE_ACCOUNT)
        envoy = self.start_envoy(identity=identity)
        if route_config == "default":
            envoy.wait_ready(self.gateway_port, f"http.{self.gateway_port}", ready_timeout)
        else:
            envoy.wait_ready(None, route_config, ready_timeout)

    def start_pilotfish(self, port: int | None = None) -> Pilotfish:
        """Starts `pilotfish serve` (on `port`, else the port it had, else a free one)."""
        secure_port = None
        if self.pilotfish is not None:
            port = port or self.pilotfish.port
            secure_port = self.pilotfish.secure_port
        self.pilotfish = Pilotfish(
            self.config_dir, self.work_dir, port=port, ca_dir=self.ca_dir, secure_port=secure_port
        )
        self.pilotfish.wait_serving()
        return self.pilotfish

    def xds_address(self, secure: bool = False) -> str:
        assert self.pilotfish is not None, "start pilotfish first (or pass its address)"
        if not secure:
            return self.pilotfish.address
        assert self.pilotfish.secure_address, "make the Stack with secure_xds=True"
        return self.pilotfish.secure_address

    def identity(self, namespace: str, service_account: str) -> Path:
        """A dir with a client certificate for `spiffe://cluster.local/ns/NS/sa/SA` from the
        stack's CA (`pilotfish ca issue`), for `start_envoy(identity=...)`."""
        assert self.ca_dir is not None, "make the Stack with secure_xds=True"
        out = self.work_dir / f"identity-{namespace}-{service_account}"
        out.mkdir(exist_ok=True)
        return pilotfish_mod.ca_issue(self.ca_dir, namespace, service_account, out)

    def start_envoy(
        self,
        labels: Mapping[str, str] | None = None,
        node_id: str | None = None,
        xds_address: str | None = None,
        identity: Path | None = None,
    ) -> Envoy:
        """Starts one more Envoy with a bootstrap from `pilotfish bootstrap`; does not wait.

        With `identity` (from `identity()`) it connects to the TLS xDS port with that client
        certificate; without, to the plaintext port, where no secret is ever sent.
        """
        admin_port = envoy_mod.new_admin_port()
        bootstrap = pilotfish_mod.bootstrap(
            xds_address or self.xds_address(secure=identity is not None),
            admin_port,
            node_id or self.node_id,
            self.gateway_labels if labels is None else labels,
            identity=identity,
        )
        if self.xds_variant == "delta":
            # Same bootstrap, incremental ADS: Envoy then speaks DeltaAggregatedResources.
            bootstrap["dynamic_resources"]["ads_config"]["api_type"] = "DELTA_GRPC"
        name = "envoy" if not self.envoys else f"envoy{len(self.envoys)}"
        envoy = Envoy(bootstrap, admin_port, self.work_dir, name=name)
        self.envoys.append(envoy)
        return envoy

    def send(self, request: Request, timeout: float = 10.0, port: str | None = None) -> Response:
        """Sends to the gateway port, or to the extra port named `port`."""
        return send(self.gateway_port if port is None else self.ports[port], request, timeout=timeout)

    def close(self) -> None:
        """Stops everything; never raises."""
        for stop in (
            *(e.stop for e in self.envoys),
            self.pilotfish.stop if self.pilotfish else None,
            *(b.stop for b in self.backends.values()),
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - teardown must go on
                print(f"teardown: {e!r}")

    def __enter__(self) -> "Stack":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- diagnostics -----------------------------------------------------------------------

    def failure_report(self, log_lines: int = 80) -> list[tuple[str, str]]:
        """Sections to print when a test fails: logs, routes Envoy holds, backend traffic."""
        sections: list[tuple[str, str]] = []
        if self.pilotfish:
            sections.append(
                (f"pilotfish log tail ({self.pilotfish.process.describe()})",
                 self.pilotfish.process.log_tail(log_lines))
            )
        for envoy in self.envoys:
            sections.append(
                (f"{envoy.name} log since startup: info and up, plus xDS accept/reject "
                 f"({envoy.process.describe()})",
                 "\n".join(envoy.report_log_lines()[-log_lines:]))
            )
            if envoy.process.running():
                _, body = envoy.admin_get("/config_dump?resource=dynamic_route_configs")
                sections.append((f"{envoy.name} dynamic route configs", body[:6000]))
                _, body = envoy.admin_get("/clusters")
                interesting = [
                    line for line in body.splitlines()
                    if "outbound|" in line and ("::health_flags::" in line or "::rq_total::" in line)
                ]
                sections.append(
                    (f"{envoy.name} clusters (health, rq_total)", "\n".join(interesting[:60]))
                )
        traffic = "\n".join(
            f"{b!r}: {b.request_count()} requests; last: "
            + ", ".join(f"{r.method} {r.path} -> {r.answered}" for r in b.received()[-5:])
            for b in self.backends.values()
        )
        sections.append(("backends", traffic))
        sections.append(("served config dir", "\n".join(
            f"--- {p.name}\n{p.read_text()}" for p in sorted(self.config_dir.iterdir()) if p.is_file()
        )[:6000]))
        return sections

