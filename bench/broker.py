"""A local broker for benchmarks: the same script the tests and the demo use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "kafka" / "broker.sh"


def _free_port_pair() -> int:
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


@contextmanager
def local_broker() -> Iterator[tuple[str, float]]:
    """Start a fresh broker; yields (bootstrap, seconds it took to be ready)."""
    port = _free_port_pair()
    state = ROOT / ".local" / f"bench-kafka-{port}"
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "KAFKA_PORT": str(port), "KAFKA_STATE_DIR": str(state)}
    subprocess.run([str(SCRIPT), "fetch"], env=env, check=True)
    started = time.monotonic()
    subprocess.run([str(SCRIPT), "start"], env=env, check=True, capture_output=True)
    ready = time.monotonic() - started
    try:
        yield f"127.0.0.1:{port}", ready
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(state, ignore_errors=True)
