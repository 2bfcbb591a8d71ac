"""Loopback addresses and free ports. Everything the suite opens is on 127.0.0.0/8."""

from __future__ import annotations

import itertools
import os
import random
import socket
import time

_LOOPBACK_HOSTS = itertools.count(random.Random(os.getpid()).randrange(2, 200))


def next_loopback_address() -> str:
    """A 127.0.x.y address other than 127.0.0.1, different on each call (within a run)."""
    n = next(_LOOPBACK_HOSTS)
    return f"127.0.{(n // 250) % 250}.{2 + n % 250}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the kernel picks it: bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def free_listener_port() -> int:
    """A port free on every address: for Envoy listeners, which bind 0.0.0.0."""
    return free_port("0.0.0.0")


def accepts_connections(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    """Polls `predicate` until it returns truthy or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
