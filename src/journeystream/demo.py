"""`journeystream demo`: everything local in one command.

Starts the local Kafka broker (unless one already answers at the bootstrap address), the
worker on embedded ClickHouse and the simulator in real time, then prints a live summary
until Ctrl-C (or --duration), and stops what it started, in reverse order, by PID.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from journeystream.supervise import WorkerProcess, metric_sum

ROOT = Path(__file__).resolve().parents[2]
BROKER = ROOT / "deploy" / "kafka" / "broker.sh"
EXAMPLE_RULES = ROOT / "deploy" / "alerts.example.yaml"


@dataclass
class DemoOptions:
    rate: float
    customers: int
    invalid_share: float
    duration: float | None = None
    refresh_s: float = 2.0


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def run_demo(options: DemoOptions) -> int:
    bootstrap = os.environ.get("JOURNEYSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    host, _, port = bootstrap.partition(",")[0].rpartition(":")
    data_dir = Path(os.environ.get("JOURNEYSTREAM_DATA_DIR", ROOT / ".local" / "demo"))
    logs = data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {
        "JOURNEYSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "JOURNEYSTREAM_DATA_DIR": str(data_dir),
        "JOURNEYSTREAM_ALERT_RULES": os.environ.get("JOURNEYSTREAM_ALERT_RULES", str(EXAMPLE_RULES)),
    }
    broker_env = {**os.environ, "KAFKA_PORT": port}
    started_broker = False
    simulator: subprocess.Popen[bytes] | None = None
    worker = WorkerProcess(env, logs / "worker.log")
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        if not _reachable(host, int(port)):
            print(f"starting the local Kafka broker on {bootstrap} ...", flush=True)
            subprocess.run([str(BROKER), "start"], env=broker_env, check=True)
            started_broker = True
        print(f"starting the worker (logs: {worker.log_path}) ...", flush=True)
        worker.start()
        print(
            f"worker ready in {worker.wait_ready():.1f}s; metrics on http://127.0.0.1:{worker.port}/metrics"
        )
        simulator = _start_simulator(options, env, logs / "simulator.log")
        _summary_loop(worker, simulator, options)
    except (KeyboardInterrupt, _Stop):
        print("\nstopping ...", flush=True)
    finally:
        if simulator is not None and simulator.poll() is None:
            simulator.send_signal(signal.SIGINT)
            try:
                simulator.wait(15)
            except subprocess.TimeoutExpired:
                simulator.kill()
        print(f"worker stopped (exit {worker.stop()})", flush=True)
        if started_broker:
            subprocess.run([str(BROKER), "stop"], env=broker_env, check=False)
    return 0


def _start_simulator(options: DemoOptions, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "journeystream",
        "simulate",
        "--to",
        "kafka",
        "--start",
        "now",
        "--events",
        "1000000000",
        "--rate",
        str(options.rate),
        "--customers",
        str(options.customers),
        "--invalid-share",
        str(options.invalid_share),
        "--seed",
        str(int(time.time())),
    ]
    print(f"simulating {options.rate:g} messages/s (logs: {log_path}); Ctrl-C stops everything", flush=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)


def _summary_loop(worker: WorkerProcess, simulator: subprocess.Popen[bytes], options: DemoOptions) -> None:
    started = time.monotonic()
    previous = 0.0
    previous_at = started
    while options.duration is None or time.monotonic() - started < options.duration:
        time.sleep(options.refresh_s)
        if simulator.poll() is not None:
            print(f"simulator exited with {simulator.returncode}")
            return
        metrics = worker.metrics()
        now = time.monotonic()
        consumed = metric_sum(metrics, "journeystream_events_consumed_total")
        rate = (consumed - previous) / (now - previous_at)
        previous, previous_at = consumed, now
        print(render_summary(metrics, rate, now - started), flush=True)


def render_summary(metrics: dict[str, float], rate: float, uptime_s: float) -> str:
    """A few lines a supervisor can read at a glance."""
    rejected = _by_label(metrics, "journeystream_events_rejected_total", "reason")
    lines = [
        f"── {uptime_s:6.0f}s ── {rate:8.0f} events/s ──"
        f" consumed {metric_sum(metrics, 'journeystream_events_consumed_total'):.0f}"
        f" · valid {metric_sum(metrics, 'journeystream_events_valid_total'):.0f}"
        f" · rejected {sum(rejected.values()):.0f}"
        f" · lag {metric_sum(metrics, 'journeystream_consumer_lag'):.0f}",
        "   stored: "
        + ", ".join(
            f"{table} {metric_sum(metrics, 'journeystream_sink_rows_total', table=table):.0f}"
            for table in ("interaction_events", "rejected_events")
        ),
    ]
    if rejected:
        lines.append(
            "   rejected by reason: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rejected.items()))
        )
    closed = _by_label(metrics, "journeystream_journeys_closed_total", "status")
    irritants = _by_label(metrics, "journeystream_irritants_total", "kind")
    versions = metric_sum(metrics, "journeystream_sink_rows_total", table="journeys")
    closed_text = ", ".join(f"{k} {v:.0f}" for k, v in sorted(closed.items())) or "none yet"
    lines.append(f"   journeys: {versions:.0f} versions stored; closed {closed_text}")
    if irritants:
        lines.append("   irritants: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(irritants.items())))
    lines.extend(_alert_lines(metrics))
    return "\n".join(lines)


def _alert_lines(metrics: dict[str, float]) -> list[str]:
    """The KPI each alert rule watches, over its rolling window, and which rules fire."""
    values = _by_label(metrics, "journeystream_alert_value", "rule")
    if not values:
        return []
    firing = {rule for rule, on in _by_label(metrics, "journeystream_alert_firing", "rule").items() if on}
    evaluated = metrics.get("journeystream_alert_evaluated_seconds", 0.0)
    until = time.strftime("%H:%M UTC", time.gmtime(evaluated)) if evaluated else "not yet"
    lines = [f"   KPIs of the alert rules (complete minutes up to {until}):"]
    for rule, value in sorted(values.items()):
        shown = "no data" if math.isnan(value) else f"{value:.3g}"
        lines.append(f"     {'FIRING ' if rule in firing else '       '}{rule:<34} {shown}")
    return lines


def _by_label(metrics: dict[str, float], name: str, label: str) -> dict[str, float]:
    """{label value: value} for every series of `name` carrying `label`."""
    marker = f'{label}="'
    return {
        series.split(marker, 1)[1].split('"', 1)[0]: value
        for series, value in metrics.items()
        if series.startswith(name + "{") and marker in series
    }
