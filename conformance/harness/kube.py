"""Kubernetes mode: the fake API server, a real kubectl, and `pilotfish serve --kubeconfig`.

No real API server runs here, so the cluster is the fake of pilotfish's Rust tests run as a
process (`examples/fake_apiserver.rs`, built by `cargo build --all-targets`). It speaks the
wire format kubectl and kube-rs speak, keeps its objects in memory, and serves two endpoints:
pilotfish reads the main one, kubectl writes through the second, so an outage of the main one
(`outage()`: requests hang, watches drop) cuts pilotfish off while kubectl still changes the
cluster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .net import free_port, wait_until
from .pilotfish import REPO_ROOT, HarnessError
from .pilotfish import binary as pilotfish_binary
from .process import ManagedProcess


def fake_apiserver_binary() -> Path:
    """`$FAKE_APISERVER_BIN`, else `examples/fake_apiserver` beside the pilotfish binary."""
    if env := os.environ.get("FAKE_APISERVER_BIN"):
        path = Path(env)
        return path if path.is_absolute() else REPO_ROOT / path
    path = pilotfish_binary().parent / "examples" / "fake_apiserver"
    if not path.is_file():
        raise HarnessError(
            f"fake API server {path} not found: run `cargo build --all-targets` "
            "or set FAKE_APISERVER_BIN"
        )
    return path


def kubectl_binary() -> str | None:
    """`$KUBECTL`, else `kubectl` on PATH; None when there is none."""
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


class FakeApiServer:
    """The fake API server on a free loopback port, with a kubeconfig for each endpoint."""

    def __init__(self, work_dir: Path, install_istio_crds: bool = False) -> None:
        """`install_istio_crds`: start with pilotfish's CRDs, instead of `kubectl apply -f crds/`."""
        self.kubeconfig = work_dir / "kubeconfig"
        self.kubectl_kubeconfig = work_dir / "kubectl-kubeconfig"
        argv = [
            str(fake_apiserver_binary()),
            "--kubeconfig",
            str(self.kubeconfig),
            "--second-kubeconfig",
            str(self.kubectl_kubeconfig),
        ]
        if install_istio_crds:
            argv.append("--install-istio-crds")
        self.process = ManagedProcess("fake-apiserver", argv, work_dir / "fake-apiserver.log")
        try:
            self.url = self._wait_url(timeout=10.0)
        except HarnessError:
            self.process.stop()
            raise

    def _wait_url(self, timeout: float) -> str:
        def url() -> str | None:
            lines = [ln for ln in self.process.log_text().splitlines() if ln.startswith("http://")]
            return lines[0] if lines and self.kubectl_kubeconfig.is_file() else None

        if not wait_until(lambda: url() is not None or not self.process.running(), timeout):
            raise HarnessError(f"the fake API server printed no URL within {timeout}s:\n{self.process.log_tail()}")
        found = url()
        if found is None:
            raise HarnessError(f"the fake API server exited with {self.process.exit_code()}:\n{self.process.log_tail()}")
        return found

    def _signal(self, signum: int, confirmation: str) -> None:
        """Sends `signum` and waits until the fake logs that it acted on it."""
        since = self.process.log_size()
        self.process.proc.send_signal(signum)
        if not self.process.wait_for_log([confirmation], timeout=5.0, since=since):
            raise HarnessError(f"the fake API server did not log {confirmation!r}:\n{self.process.log_tail()}")

    def outage(self) -> None:
        """pilotfish's endpoint stops answering (requests hang) and its watches drop."""
        self._signal(signal.SIGUSR1, "outage:")

    def recover(self) -> None:
        """pilotfish's endpoint answers again, the hung requests first."""
        self._signal(signal.SIGUSR2, "outage over")

    def stop(self) -> None:
        self.process.stop()


class Kubectl:
    """kubectl against one kubeconfig, with its own discovery cache and a transcript."""

    def __init__(self, binary: str, kubeconfig: Path, work_dir: Path) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.cache_dir = work_dir / "kubectl-cache"
        self.transcript = work_dir / "kubectl.log"

    def run(self, *args: str, check: bool = True, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        argv = [self.binary, "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(self.cache_dir), *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        with open(self.transcript, "a") as log:
            log.write(f"$ kubectl {' '.join(args)}\n{out.stdout}{out.stderr}[exit {out.returncode}]\n")
        if check and out.returncode != 0:
            raise HarnessError(
                f"`kubectl {' '.join(args)}` exited {out.returncode}\n"
                f"stderr:\n{out.stderr}\nstdout:\n{out.stdout}"
            )
        return out

    def apply(self, path: Path) -> str:
        return self.run("apply", "-f", str(path)).stdout

    def delete(self, *what: str) -> str:
        return self.run("delete", *what).stdout

    def transcript_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.transcript.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class KubePilotfish:
    """`pilotfish serve --kubeconfig`: xDS and `/ready` on free loopback ports. Has what
    `Stack` uses of a `Pilotfish` (address, port, process, stop), so a `Stack` runs Envoy
    against it."""

    def __init__(self, kubeconfig: Path, work_dir: Path, debounce: str = "100ms") -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.address = f"{self.host}:{self.port}"
        self.http_port = free_port()
        self.process = ManagedProcess(
            "pilotfish",
            [
                str(pilotfish_binary()),
                "serve",
                "--kubeconfig",
                str(kubeconfig),
                "--xds-address",
                self.address,
                "--http-address",
                f"{self.host}:{self.http_port}",
                "--debounce",
                debounce,
                "--pod-name",
                "pilotfish-conformance",
            ],
            work_dir / "pilotfish.log",
            env={"RUST_LOG": os.environ.get("PILOTFISH_LOG", "info"), "NO_COLOR": "1", "RUST_BACKTRACE": "1"},
        )

    def ready_status(self) -> int:
        """`GET /ready`: 200 once the cluster is listed; 0 when nothing answers."""
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.http_port}/ready", timeout=1.0) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError:
            return 0

    def wait_ready(self, timeout: float = 15.0) -> None:
        if wait_until(lambda: not self.process.running() or self.ready_status() == 200, timeout, 0.1):
            if self.process.running():
                return
            raise HarnessError(f"pilotfish exited with {self.process.exit_code()}:\n{self.process.log_tail()}")
        raise HarnessError(
            f"pilotfish's /ready was {self.ready_status()}, not 200, after {timeout}s:\n{self.process.log_tail()}"
        )

    def stop(self) -> None:
        self.process.stop()
