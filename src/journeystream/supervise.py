"""Running `journeystream worker` as a child process and reading its HTTP endpoints.

Shared by `journeystream demo`, the integration tests and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO


def free_port_pair() -> int:
    """A port p with p and p+1 free (broker and controller listeners)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port < 65000 and _is_free(port + 1):
            return port
    raise RuntimeError("no free port pair found")


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def worker_env(bootstrap: str, app_id: str, data_dir: Path | str, **extra: str) -> dict[str, str]:
    """Settings for a worker isolated from any other on the same broker: its own topics
    (prefixed by `app_id`), consumer group, store and HTTP port. `extra` adds settings by
    their lower-case name (`partitions="4"` -> JOURNEYSTREAM_PARTITIONS)."""
    env = {
        "JOURNEYSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "JOURNEYSTREAM_APP_ID": app_id,
        "JOURNEYSTREAM_TOPIC_INTERACTIONS": f"{app_id}.interactions",
        "JOURNEYSTREAM_TOPIC_REJECTED": f"{app_id}.rejected",
        "JOURNEYSTREAM_TOPIC_JOURNEYS": f"{app_id}.journeys",
        "JOURNEYSTREAM_TOPIC_IRRITANTS": f"{app_id}.irritants",
        "JOURNEYSTREAM_TOPIC_ALERTS": f"{app_id}.alerts",
        "JOURNEYSTREAM_DATA_DIR": str(data_dir),
        "JOURNEYSTREAM_HTTP_PORT": str(free_port()),
        "JOURNEYSTREAM_LOG_LEVEL": "warn",
    }
    env.update({f"JOURNEYSTREAM_{key.upper()}": value for key, value in extra.items()})
    return env


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format → {'name{labels}': value}, comments and _created series left out."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if "_created" in name.split("{", 1)[0]:
            continue
        values[name] = float(value)
    return values


def metric_sum(metrics: Mapping[str, float], name: str, **labels: str) -> float:
    """Sum of every series of `name` whose labels include `labels`."""
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    total = 0.0
    for series, value in metrics.items():
        base = series.split("{", 1)[0]
        if base == name and all(label in series for label in wanted):
            total += value
    return total


class WorkerProcess:
    """One worker child process with its own environment (JOURNEYSTREAM_* settings)."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.port = int(self.env.get("JOURNEYSTREAM_HTTP_PORT", "6066"))
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "journeystream", "worker"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        assert self.process is not None, "worker not started"
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def helper_pids(self) -> list[int]:
        """The worker's helper processes (JOURNEYSTREAM_PROCESSES > 1), alive now (Linux /proc)."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
        except OSError:  # the worker has ended
            return []
        return [int(child) for child in children if b"spawn_main" in _cmdline(int(child))]

    def wait(self, timeout: float) -> int:
        """Wait for the worker to end by itself; its exit code."""
        assert self.process is not None, "worker not started"
        return int(self.process.wait(timeout))

    def get(self, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def metrics(self) -> dict[str, float]:
        status, body = self.get("/metrics")
        if status != 200:
            raise RuntimeError(f"/metrics answered {status}")
        return parse_metrics(body.decode())

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Wait until /ready says 200; returns the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if not self.alive():
                raise RuntimeError(
                    f"worker exited with {self.process and self.process.returncode}; see {self.log_path}"
                )
            try:
                if self.get("/ready", timeout=1.0)[0] == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready after {timeout}s; see {self.log_path}")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the worker flushes and commits), then wait; SIGKILL after `timeout`."""
        return self._end(signal.SIGTERM, timeout)

    def kill(self) -> int:
        """SIGKILL: no flush, no commit — what a crash looks like."""
        return self._end(signal.SIGKILL, 30.0)

    def _end(self, sig: signal.Signals, timeout: float) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(30)
        if self._log is not None:
            self._log.close()
            self._log = None
        return int(self.process.returncode)


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
