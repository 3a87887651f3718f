"""The alert evaluator: one worker (the one holding partition 0 of the journey stage)
steps the pure AlertBook over each minute the KPI watermark has completed, reading the
windows from `kpi_minute`, so the rules see every shard whichever worker counted it.

Each notification goes to the alerts topic, the `alerts` table and Alertmanager; the rules'
state goes to `alert_state` after the notifications (sink table order), so a new leader
carries on without repeating or missing an episode.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

from journeystream.config import Settings
from journeystream.core.alerts import (
    AlertBook,
    AlertState,
    Evaluation,
    Notification,
    Rule,
    alert_id,
    build_notification,
)
from journeystream.metrics import Metrics
from journeystream.runtime.alertmanager import AlertmanagerClient, alert_payload
from journeystream.sinks.clickhouse import StoreAccess, with_client
from journeystream.sinks.queries import alert_states, kpi_watermark, rule_minutes
from journeystream.sinks.rows import ALERT_STATE, ALERTS, alert_json, alert_row, alert_state_row, now_ms
from journeystream.sinks.sink import BatchingSink

log = logging.getLogger(__name__)

MAX_BOUNDARIES_PER_ROUND = 240  # a long catch-up is spread over rounds (4 h of minutes each)


class AlertsTopic(Protocol):
    async def send(self, key: bytes, value: bytes) -> None: ...


class AlertRunner:
    def __init__(
        self,
        settings: Settings,
        rules: Sequence[Rule],
        writer: StoreAccess,
        sink: BatchingSink,
        alerts_topic: AlertsTopic,
        metrics: Metrics,
        alertmanager: AlertmanagerClient | None,
    ) -> None:
        self.settings = settings
        self.rules = tuple(rules)
        self.writer = writer
        self.sink = sink
        self.alerts_topic = alerts_topic
        self.metrics = metrics
        self.alertmanager = alertmanager
        self.book: AlertBook | None = None

    async def round(self, leading: bool) -> int:
        """Evaluate what the watermark completed since the last round; returns boundaries done."""
        if not self.rules:
            return 0
        if not leading:
            self._step_down()
            return 0
        book = self.book if self.book is not None else await self._take_over()
        database = self.writer.database
        watermark = await self.writer.run(with_client(kpi_watermark, database, self.settings.partitions))
        if watermark is None:
            return 0
        boundaries = book.due(watermark, MAX_BOUNDARIES_PER_ROUND)
        if not boundaries:
            return 0
        start, end = book.span(boundaries)
        minutes = {rule.name: await self._minutes(rule, start, end) for rule in self.rules}
        for boundary in boundaries:
            for evaluation in book.step(boundary, minutes):
                await self._publish(evaluation)
        stamp = now_ms()
        for rule in self.rules:
            state = book.states[rule.name]
            self.sink.add(ALERT_STATE.name, alert_state_row(rule.name, state, boundaries[-1], stamp))
        self.metrics.alert_evaluated.set(boundaries[-1] / 1000)
        return len(boundaries)

    async def _minutes(self, rule: Rule, start: int, end: int) -> dict[int, Any]:
        database = self.writer.database
        return await self.writer.run(with_client(rule_minutes, database, rule, start, end))

    async def _take_over(self) -> AlertBook:
        database = self.writer.database
        states, until = await self.writer.run(with_client(alert_states, database))
        book = self.book = AlertBook(self.rules, states, until)
        for rule in self.rules:
            state = book.states[rule.name]
            self._gauges(rule, state)
            if state.status == "firing" and self.alertmanager is not None and state.since_ms is not None:
                value = state.value if state.value is not None else math.nan
                self._deliver(rule, build_notification(rule, "firing", value, state.since_ms))
        log.info("evaluating %d alert rules from %s", len(self.rules), until)
        return book

    def _step_down(self) -> None:
        if self.book is not None:
            log.info("another worker evaluates the alert rules now")
            self.book = None
            for rule in self.rules:  # the leader reports them now; a stale "firing" here would stay
                self.metrics.forget_alert(rule.name)
            if self.alertmanager is not None:
                self.alertmanager.forget_all()

    async def _publish(self, evaluation: Evaluation) -> None:
        rule = evaluation.rule
        self._gauges(rule, evaluation.state)
        for notification in evaluation.notifications:
            log.warning("alert %s %s: %s", rule.name, notification.status, notification.summary)
            self.metrics.alert_notifications.labels(notification.status).inc()
            self.sink.add(ALERTS.name, alert_row(rule, notification, now_ms()))
            key = alert_id(rule.name, notification.starts_at).encode()
            await self.alerts_topic.send(key=key, value=alert_json(rule, notification))
            if self.alertmanager is not None:
                self._deliver(rule, notification)

    def _deliver(self, rule: Rule, notification: Notification) -> None:
        assert self.alertmanager is not None
        payload = alert_payload(
            notification.labels, notification.annotations(), notification.starts_at, notification.ends_at
        )
        if notification.status == "firing":
            self.alertmanager.fire(rule.name, payload)
        else:
            self.alertmanager.resolve(rule.name, payload)

    def _gauges(self, rule: Rule, state: AlertState) -> None:
        value = state.value if state.value is not None else math.nan
        self.metrics.alert_value.labels(rule.name).set(value)
        self.metrics.alert_firing.labels(rule.name).set(1 if state.status == "firing" else 0)
