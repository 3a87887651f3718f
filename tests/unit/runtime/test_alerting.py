"""The alert runner of a worker that stops leading takes its alert gauges down with it."""

from __future__ import annotations

from typing import Any, cast

from prometheus_client import CollectorRegistry

from journeystream.config import Settings
from journeystream.core.alerts import AlertBook, Rule
from journeystream.metrics import Metrics
from journeystream.runtime.alerting import AlertRunner

RULE = Rule(
    name="AbandonmentHigh",
    metric="abandonment_rate",
    op="above",
    threshold=0.35,
    clear=0.25,
    window_ms=15 * 60_000,
    for_ms=5 * 60_000,
    min_volume=20,
    severity="warning",
    summary="{value:.2f} > {threshold}",
)


async def test_a_runner_that_steps_down_removes_its_alert_gauges() -> None:
    """Another worker (or process) leads now and reports the rule: a stale `firing` of 1 left
    here would keep the alert on every dashboard that sums the workers."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    unused = cast(Any, None)  # a runner that does not lead touches neither store nor topic
    runner = AlertRunner(Settings.from_env({}), [RULE], unused, unused, unused, metrics, None)
    runner.book = AlertBook([RULE])
    metrics.alert_value.labels(RULE.name).set(0.5)
    metrics.alert_firing.labels(RULE.name).set(1)

    assert await runner.round(leading=False) == 0

    assert registry.get_sample_value("journeystream_alert_firing", {"rule": RULE.name}) is None
    assert registry.get_sample_value("journeystream_alert_value", {"rule": RULE.name}) is None
    assert runner.book is None
