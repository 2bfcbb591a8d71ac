"""A child process with its output in a log file, stopped for sure at teardown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class ManagedProcess:
    """Runs `argv` with stdout and stderr appended to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        self._log.flush()
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def exit_code(self) -> int | None:
        return self.proc.poll()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds. Safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        if not self._log.closed:
            self._log.close()

    def log_text(self) -> str:
        """The log so far, without ANSI colour codes."""
        try:
            return _ANSI.sub("", self.log_path.read_text(errors="replace"))
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_text().splitlines()
        return "\n".join(text[-lines:])

    def wait_for_log(self, needles: Sequence[str], timeout: float, since: int = 0) -> bool:
        """Waits for a log line holding every one of `needles`, after offset `since`."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_text()[since:].splitlines()
            if any(all(n in line for n in needles) for line in lines):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def log_size(self) -> int:
        return len(self.log_text())

    def describe(self) -> str:
        state = "running" if self.running() else f"exited with {self.exit_code()}"
        return f"{self.name} (pid {self.pid}, {state}), log {self.log_path}"
