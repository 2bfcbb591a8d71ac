"""Network namespaces as Kubernetes pods: one Linux bridge per test, one netns per pod.

Every pod netns gets a veth whose peer is on the bridge, its own IP in 10.251.X.0/24, `lo` up
and a default route via the bridge's IP (10.251.X.1), which is also where pilotfish listens.
Service VIPs come from 10.252.X.0/24: nothing routes them, so only a sidecar that captured the
connection can reach a Service, as without kube-proxy.

Names carry the pid of the test process that made them (netns `pfmesh-<pid>-<n>-<pod>`, the
bridge's alias `pilotfish-mesh pid=<pid>`), so `clean_leftovers` removes what a crashed run
left behind without touching a concurrent run's.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, TypeVar

NETNS_PREFIX = "pfmesh-"
BRIDGE_ALIAS = "pilotfish-mesh pid="
ETC_NETNS = Path("/etc/netns")
_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_counter = itertools.count(1)
T = TypeVar("T")


class NetnsError(RuntimeError):
    """A command that sets up the network failed; the message has its output."""


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:  # noqa: A002
    out = subprocess.run(list(argv), input=input, capture_output=True, text=True, check=False)
    if check and out.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` exited {out.returncode}: {out.stderr.strip()}")
    return out.stdout


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def clean_leftovers() -> list[str]:
    """Removes netns, bridges and /etc/netns dirs of mesh runs whose process is gone."""
    removed: list[str] = []
    owner = re.compile(rf"^{NETNS_PREFIX}(\d+)-")
    for line in sh("ip", "netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        m = owner.match(name)
        if m and not _alive(int(m.group(1))):
            for pid in sh("ip", "netns", "pids", name, check=False).split():
                try:
                    os.kill(int(pid), 9)  # a crashed run's Envoy or app, still in its netns
                except (ProcessLookupError, ValueError):
                    pass
            sh("ip", "netns", "del", name, check=False)
            removed.append(name)
    for link in json.loads(sh("ip", "-j", "-d", "link", "show", "type", "bridge") or "[]"):
        alias = link.get("ifalias", "")
        if alias.startswith(BRIDGE_ALIAS) and not _alive(int(alias[len(BRIDGE_ALIAS):])):
            sh("ip", "link", "del", link["ifname"], check=False)
            removed.append(link["ifname"])
    # A crashed run's pilotfish listens on the gateway IP of a bridge that is now gone.
    gateways = set(re.findall(r"inet (10\.251\.\d+\.1)/", sh("ip", "-4", "addr")))
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if argv[0].endswith("pilotfish") and "serve" in argv and "--xds-address" in argv[:-1]:
            host = argv[argv.index("--xds-address") + 1].rsplit(":", 1)[0]
            if host.startswith("10.251.") and host not in gateways:
                os.kill(int(proc.name), 9)
                removed.append(f"pilotfish pid {proc.name}")
    dirs = [*(ETC_NETNS.iterdir() if ETC_NETNS.is_dir() else ()), *Path("/tmp").glob(f"{NETNS_PREFIX}*")]
    for d in dirs:  # hosts files, and the Unix sockets of the apps
        m = owner.match(d.name)
        if m and not _alive(int(m.group(1))):
            shutil.rmtree(d, ignore_errors=True)
    return removed


def _free_octet() -> int:
    """An X with no address in 10.251.X.0/24 on this machine (a concurrent run's subnet)."""
    used = set(re.findall(r"inet 10\.251\.(\d+)\.", sh("ip", "-4", "addr")))
    free = [x for x in range(1, 255) if str(x) not in used]
    if not free:
        raise NetnsError("every 10.251.X.0/24 is in use")
    return random.choice(free)


def enter(netns: str) -> None:
    """Moves the calling thread into `netns` (setns(2) on its /var/run/netns file)."""
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, _CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


class NetnsThreads:
    """Worker threads living in one netns: sockets they open belong to that pod's network.

    Python has no os.setns before 3.12, and setns changes only the calling thread, so the
    test process opens pod-side sockets from these threads.
    """

    def __init__(self, netns: str, workers: int) -> None:
        self.netns = netns
        self._pool = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"in-{netns}", initializer=enter, initargs=(netns,)
        )

    def run(self, fn: Callable[..., T], *args: object) -> T:
        return self._pool.submit(fn, *args).result()

    def map(self, fn: Callable[[T], object], items: list[T]) -> list:
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class Network:
    """A bridge with the gateway IP, and pods attached to it; `close()` removes all of it."""

    def __init__(self) -> None:
        self.tag = f"{os.getpid()}-{next(_counter)}"
        self.octet = _free_octet()
        self.gateway_ip = f"10.251.{self.octet}.1"
        self.bridge = f"pfb{os.getpid() % 100000}x{self.tag.split('-')[1]}"[:15]
        self.netns: dict[str, str] = {}
        self._next_host = itertools.count(10)
        self._next_vip = itertools.count(10)
        # A fixed MAC: otherwise the bridge takes the lowest MAC of its ports, changing as pods
        # join, and pods whose ARP entry for the gateway is older lose packets to it (seconds of
        # retransmits, and an xDS stream that stalls).
        mac = "02:50:%02x:%02x:%02x:%02x" % (
            self.octet, (os.getpid() >> 16) & 0xFF, (os.getpid() >> 8) & 0xFF, os.getpid() & 0xFF)
        sh("ip", "link", "add", self.bridge, "address", mac, "type", "bridge")
        sh("ip", "link", "set", self.bridge, "alias", f"{BRIDGE_ALIAS}{os.getpid()}")
        sh("ip", "addr", "add", f"{self.gateway_ip}/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def allocate_ip(self) -> str:
        n = next(self._next_host)
        if n > 250:
            raise NetnsError("more than 240 pods in one test")
        return f"10.251.{self.octet}.{n}"

    def allocate_vip(self) -> str:
        n = next(self._next_vip)
        if n > 250:
            raise NetnsError("more than 240 VIPs in one test")
        return f"10.252.{self.octet}.{n}"

    def add_pod(self, pod: str, ip: str, hosts: str) -> str:
        """Creates the pod's netns with `ip` and /etc/hosts content `hosts`; returns its name."""
        netns = f"{NETNS_PREFIX}{self.tag}-{pod}"
        index = len(self.netns)
        self.netns[pod] = netns
        veth = f"{self.bridge[:11]}v{index}"[:15]
        (ETC_NETNS / netns).mkdir(parents=True, exist_ok=True)
        (ETC_NETNS / netns / "hosts").write_text(hosts)
        sh("ip", "netns", "add", netns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        batch = "\n".join([
            f"addr add {ip}/24 dev eth0",
            "link set eth0 up",
            "link set lo up",
            f"route add default via {self.gateway_ip}",
        ])
        sh("ip", "-n", netns, "-batch", "-", input=batch + "\n")
        return netns

    def exec_argv(self, pod: str, *argv: str) -> list[str]:
        """`argv` run inside the pod's netns (with its /etc/hosts bind-mounted)."""
        return ["ip", "netns", "exec", self.netns[pod], *argv]

    def close(self) -> None:
        """Deletes every netns (their veths go with them), the bridge and the hosts files."""
        for netns in self.netns.values():
            sh("ip", "netns", "del", netns, check=False)
            shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)
        sh("ip", "link", "del", self.bridge, check=False)
