"""Issue 4's acceptance on real components: the broker, the worker process, a real
Alertmanager (Debian package) on loopback, and a webhook receiver behind it.

A simulated incident (claims abandoned en masse for 20 minutes of event time) must give
exactly one firing notification and, once it is over, exactly one resolution, at the
minute boundaries the simulator's ground truth implies. The KPI table must match that
ground truth minute by minute.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from journeystream.config import Settings
from journeystream.core.alerts import AlertBook, load_rules
from journeystream.core.decode import decode
from journeystream.core.events import Event
from journeystream.core.kpis import KpiCounts, minute_of
from journeystream.runtime.topics import ensure_topics
from journeystream.simulate import GroundTruth, SimConfig, SimMessage, generate_with_truth
from journeystream.supervise import WorkerProcess, free_port
from tests.integration.helpers import consume_all, produce, query, wait_for, worker_env

pytestmark = pytest.mark.integration

MINUTE = 60_000
RULE_NAME = "ClaimAbandonmentSpike"
RULES_YAML = f"""
rules:
  - name: {RULE_NAME}
    metric: abandonment_rate
    filter: {{journey: claim}}
    window: 10m
    above: 0.6
    clear: 0.4
    min_volume: 10
    for: 2m
    severity: critical
    summary: "{{value:.0%}} of claim journeys abandoned"
"""


# ---- a webhook receiver and a real Alertmanager ---------------------------------------------


class Webhook:
    """Records every notification Alertmanager delivers (one JSON body per POST)."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def statuses(self) -> list[str]:
        """(status of each notification for our rule, in arrival order)."""
        return [
            body["status"]
            for body in list(self.bodies)
            if body.get("commonLabels", {}).get("alertname") == RULE_NAME
        ]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    hook.thread.start()
    try:
        yield hook
    finally:
        hook.server.shutdown()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: Webhook) -> Iterator[str]:
    """A real Alertmanager on loopback that notifies the webhook at once, never repeats a
    still-firing alert during the test, and sends resolutions."""
    config = tmp_path / "alertmanager.yml"
    config.write_text(
        "route:\n"
        "  receiver: hook\n"
        "  group_by: [alertname]\n"
        "  group_wait: 1s\n"
        "  group_interval: 1s\n"
        "  repeat_interval: 4h\n"
        "receivers:\n"
        "  - name: hook\n"
        "    webhook_configs:\n"
        f"      - url: {webhook.url}\n"
        "        send_resolved: true\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            "prometheus-alertmanager",
            f"--config.file={config}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "alertmanager.log").open("w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _get_ok(f"{url}/-/ready"), 30, "Alertmanager to be ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def _get_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


# ---- the stream and what its ground truth implies -------------------------------------------


@dataclass
class Incident:
    messages: list[SimMessage]
    truth: GroundTruth
    fires_at: int
    resolves_at: int


@pytest.fixture(scope="module")
def incident() -> Incident:
    start = minute_of(int(time.time() * 1000)) - 180 * MINUTE
    config = SimConfig(
        seed=7,
        customers=1500,
        events=30_000,
        start_ms=start,
        events_per_second=3.0,
        max_disorder_ms=2_000,
        duplicate_share=0.01,
        anonymous_share=0.1,
        spike_journey="claim",
        spike_start_ms=start + 40 * MINUTE,
        spike_end_ms=start + 60 * MINUTE,
        spike_share=0.6,
    )
    messages, truth = generate_with_truth(config)
    episodes = expected_notifications(truth, start + 11 * MINUTE, start + 170 * MINUTE)
    # the scenario itself: one episode inside the stream, or the test would prove nothing
    assert [status for status, _ in episodes] == ["firing", "resolved"], episodes
    return Incident(messages, truth, episodes[0][1], episodes[1][1])


def expected_notifications(truth: GroundTruth, first: int, last: int) -> list[tuple[str, int]]:
    """The rule stepped over the abandonment counts the simulator intended (its closures),
    minute by minute: independent of the journey engine."""
    minutes: dict[int, KpiCounts] = defaultdict(KpiCounts)
    for name, status, at in truth.closures.values():
        if name == "claim":
            counts = minutes[minute_of(at)]
            setattr(counts, f"journeys_{status}", getattr(counts, f"journeys_{status}") + 1)
    book = AlertBook(load_rules(RULES_YAML, "test rules"))
    found = []
    for boundary in range(first, last, MINUTE):
        for evaluation in book.step(boundary, {RULE_NAME: dict(minutes)}):
            found += [(n.status, boundary) for n in evaluation.notifications]
    return found


def _before(messages: list[SimMessage], until: int) -> int:
    """How many messages (in delivery order) come before event time `until`."""
    return next((i for i, m in enumerate(messages) if m.occurred_at >= until), len(messages))


# ---- the test -------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "2-processes"])
async def test_abandonment_spike_fires_once_and_resolves_once_through_alertmanager(
    kafka_bootstrap: str,
    unique_name: str,
    tmp_path: Path,
    incident: Incident,
    alertmanager: str,
    webhook: Webhook,
    processes: int,
) -> None:
    """With two processes the rules are evaluated by whichever owns by-customer partition 0,
    its queries answered through the worker's store."""
    rules = tmp_path / "alerts.yaml"
    rules.write_text(RULES_YAML)
    env = worker_env(
        kafka_bootstrap,
        unique_name,
        tmp_path / "data",
        alert_rules=str(rules),
        alertmanager_url=alertmanager,
        alert_eval_ms="500",
        alert_resend_ms="2000",  # re-posts of the firing alert must not notify again
        quiet_after_ms="86400000",  # event time only: the wall clock never moves the watermark
        processes=str(processes),
    )
    settings = Settings.from_env(env)
    await ensure_topics(settings)
    messages = incident.messages
    phase_one = _before(messages, incident.fires_at + 2 * MINUTE)
    phase_two = _before(messages, incident.resolves_at + 3 * MINUTE)
    worker = WorkerProcess(env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        await produce(
            kafka_bootstrap, settings.topic_interactions, [(m.key, m.value) for m in messages[:phase_one]]
        )
        wait_for(lambda: webhook.statuses() == ["firing"], 180, "the firing notification")
        await produce(
            kafka_bootstrap,
            settings.topic_interactions,
            [(m.key, m.value) for m in messages[phase_one:phase_two]],
        )
        wait_for(lambda: webhook.statuses() == ["firing", "resolved"], 180, "the resolution")
        time.sleep(6)  # several resends and group intervals: nothing more may arrive
        assert webhook.statuses() == ["firing", "resolved"]
        firing_metric = worker.metrics()[f'journeystream_alert_firing{{rule="{RULE_NAME}"}}']
        assert firing_metric == 0.0
    finally:
        assert worker.stop() == 0, f"worker did not stop cleanly; see {worker.log_path}"

    firing, resolved = (body["alerts"][0] for body in _our_bodies(webhook))
    assert firing["labels"] == {
        "alertname": RULE_NAME,
        "severity": "critical",
        "channel": "all",
        "journey": "claim",
        "segment": "all",
    }
    assert _ms(firing["startsAt"]) == incident.fires_at
    assert _ms(resolved["endsAt"]) == incident.resolves_at
    assert float(firing["annotations"]["value"]) > 0.6
    assert float(resolved["annotations"]["value"]) <= 0.4

    rows = query(
        env,
        "SELECT status, toUnixTimestamp64Milli(starts_at), toUnixTimestamp64Milli(ends_at) "
        "FROM {db}.alerts FINAL ORDER BY notified_at",
    )
    assert rows == [
        ("firing", incident.fires_at, None),
        ("resolved", incident.fires_at, incident.resolves_at),
    ]
    topic = await consume_all(kafka_bootstrap, settings.topic_alerts, expected=2, timeout=30)
    assert sorted(json.loads(record.value)["status"] for record in topic) == ["firing", "resolved"]

    assert_kpis_match_truth(env, messages[:phase_two], incident.truth)


def _our_bodies(webhook: Webhook) -> list[dict[str, Any]]:
    return [b for b in webhook.bodies if b.get("commonLabels", {}).get("alertname") == RULE_NAME]


def _ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def assert_kpis_match_truth(env: dict[str, str], produced: list[SimMessage], truth: GroundTruth) -> None:
    """Every minute the KPI watermark completed: events per minute and channel equal the
    distinct events produced, and journeys closed per minute, journey and status equal the
    closures the simulator intended."""
    ((complete,),) = query(
        env,
        "SELECT toUnixTimestamp64Milli(min(w)) FROM "
        "(SELECT max(watermark) AS w FROM {db}.kpi_progress GROUP BY shard)",
    )
    until = minute_of(complete)
    events: Counter[tuple[int, str]] = Counter()
    seen: set[str] = set()
    for message in produced:
        event = decode(message.value)
        if isinstance(event, Event) and event.event_id not in seen and event.occurred_at < until:
            seen.add(event.event_id)
            events[(minute_of(event.occurred_at), event.channel)] += 1
    closed: Counter[tuple[int, str, str]] = Counter()
    for name, status, at in truth.closures.values():
        if at < until:
            closed[(minute_of(at), name, status)] += 1

    live_events = query(
        env,
        "SELECT toUnixTimestamp(minute) * 1000 AS m, channel, sum(events) FROM {db}.kpi_minute FINAL "
        f"WHERE m < {until} GROUP BY m, channel HAVING sum(events) > 0",
    )
    assert {(m, channel): n for m, channel, n in live_events} == dict(events)
    live_closed: Counter[tuple[int, str, str]] = Counter()
    for status in ("completed", "abandoned", "cancelled", "expired"):
        for m, journey, n in query(
            env,
            f"SELECT toUnixTimestamp(minute) * 1000 AS m, journey, sum(journeys_{status}) "
            f"FROM {{db}}.kpi_minute FINAL WHERE m < {until} GROUP BY m, journey",
        ):
            if n:
                live_closed[(m, journey, status)] = n
    assert live_closed == closed
    assert sum(closed.values()) > 1000  # the comparison covers the incident and its aftermath
