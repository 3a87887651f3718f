"""Prometheus metrics (`journeystream_*`), built on an injected registry so tests and several
apps in one process never collide in the global one."""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_consumed = Counter(
            "journeystream_events_consumed", "Messages read from the interactions topic", registry=registry
        )
        self.events_valid = Counter(
            "journeystream_events_valid", "Messages that passed the event contract", registry=registry
        )
        self.events_rejected = Counter(
            "journeystream_events_rejected", "Messages refused, by reason code", ["reason"], registry=registry
        )
        self.sink_rows = Counter(
            "journeystream_sink_rows", "Rows written to ClickHouse", ["table"], registry=registry
        )
        self.sink_flush_seconds = Histogram(
            "journeystream_sink_flush_seconds",
            "Time to write one batch to ClickHouse",
            ["table"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.store_delay_seconds = Histogram(
            "journeystream_store_delay_seconds",
            "From the producer's message timestamp to the raw event row being written to ClickHouse",
            buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.sink_errors = Counter(
            "journeystream_sink_errors", "Failed batch writes (each is retried)", ["table"], registry=registry
        )
        self.rows_expired_at_insert = Counter(
            "journeystream_rows_expired_at_insert",
            "Rows already older than their table's retention when written: ClickHouse drops them at "
            "insert (TTL)",
            ["table"],
            registry=registry,
        )
        self.sink_pending_rows = Gauge(
            "journeystream_sink_pending_rows", "Rows buffered, not yet written", registry=registry
        )
        self.consumer_lag = Gauge(
            "journeystream_consumer_lag",
            "Messages behind the end of the partition",
            ["topic", "partition"],
            registry=registry,
        )
        self.events_late = Counter(
            "journeystream_events_late",
            "Valid events older than their partition's watermark",
            registry=registry,
        )
        self.events_applied = Counter(
            "journeystream_events_applied",
            "Events applied to journeys (duplicates excluded)",
            registry=registry,
        )
        self.irritants = Counter(
            "journeystream_irritants", "Irritants detected, by kind", ["kind"], registry=registry
        )
        self.state_customers = Gauge(
            "journeystream_state_customers",
            "Customer states held in memory",
            ["partition"],
            registry=registry,
        )
        self.open_journeys = Gauge(
            "journeystream_open_journeys", "Open journeys held in memory", ["partition"], registry=registry
        )
        self.state_bytes = Gauge(
            "journeystream_state_bytes",
            "Serialized size of the customer states held in the table",
            ["partition"],
            registry=registry,
        )
        self.journeys_closed = Counter(
            "journeystream_journeys_closed", "Journeys closed, by status", ["status"], registry=registry
        )
        self.watermark = Gauge(
            "journeystream_watermark_seconds",
            "Event-time watermark of a stage partition (Unix seconds)",
            ["stage", "partition"],
            registry=registry,
        )
        self.stage_late = Gauge(
            "journeystream_stage_late_items",
            "Items that reached a stage partition after its watermark",
            ["stage", "partition"],
            registry=registry,
        )
        self.buffered = Gauge(
            "journeystream_buffered_items",
            "Items waiting in a stage partition's reorder buffer",
            ["stage", "partition"],
            registry=registry,
        )
        self.ready = Gauge("journeystream_ready", "1 when the worker is consuming", registry=registry)
        self.kpi_cells = Gauge(
            "journeystream_kpi_cells",
            "KPI minute cells held in worker state",
            ["partition"],
            registry=registry,
        )
        self.kpi_too_late = Counter(
            "journeystream_kpi_too_late",
            "KPI contributions refused: their minute was already beyond the KPI horizon",
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "journeystream_checkpoint_seconds",
            "From a checkpoint's start to its offsets committed (rows, records, changelogs, commit)",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.alert_value = Gauge(
            "journeystream_alert_value",
            "Last value of each alert rule's metric (NaN when it has none, e.g. no volume)",
            ["rule"],
            registry=registry,
        )
        self.alert_firing = Gauge(
            "journeystream_alert_firing", "1 while the rule's alert is firing", ["rule"], registry=registry
        )
        self.alert_evaluated = Gauge(
            "journeystream_alert_evaluated_seconds",
            "Last minute boundary evaluated (Unix seconds, event time)",
            registry=registry,
        )
        self.alert_notifications = Counter(
            "journeystream_alert_notifications",
            "Alert notifications, by status (firing, resolved)",
            ["status"],
            registry=registry,
        )
        self.erasure_parts = Counter(
            "journeystream_erasure_parts",
            "Parts of erasure requests carried out (journeystream erase), by part (customer, "
            "anonymous, links) and outcome (erased, no-op, failed)",
            ["part", "outcome"],
            registry=registry,
        )
        self.alertmanager_posts = Counter(
            "journeystream_alertmanager_posts",
            "Posts to Alertmanager, by outcome (ok, error)",
            ["outcome"],
            registry=registry,
        )

    # StageObserver (stages/effects.py)
    def forget_partition(self, topic: str, partition: int, stage: str | None) -> None:
        """Remove the gauges of a partition this worker gave up (a rebalance): its new owner
        reports them, and a stale series here would show lag or buffered items that no
        longer exist, summed into every dashboard and alert."""
        label = str(partition)
        series: list[tuple[Gauge, tuple[str, ...]]] = [(self.consumer_lag, (topic, label))]
        if stage is not None:
            series += [(gauge, (stage, label)) for gauge in (self.watermark, self.stage_late, self.buffered)]
        if stage == "journeys":
            series += [
                (gauge, (label,))
                for gauge in (self.state_customers, self.open_journeys, self.state_bytes, self.kpi_cells)
            ]
        for gauge, labels in series:
            with contextlib.suppress(KeyError):  # never set for this partition
                gauge.remove(*labels)

    def forget_alert(self, rule: str) -> None:
        for gauge in (self.alert_value, self.alert_firing):
            with contextlib.suppress(KeyError):
                gauge.remove(rule)

    def on_consumed(self, count: int) -> None:
        self.events_consumed.inc(count)

    def on_valid(self, count: int) -> None:
        self.events_valid.inc(count)

    def on_rejected(self, code: str) -> None:
        self.events_rejected.labels(code).inc()

    def on_late(self, count: int) -> None:
        self.events_late.inc(count)

    def on_applied(self, count: int) -> None:
        self.events_applied.inc(count)

    def on_irritant(self, kind: str) -> None:
        self.irritants.labels(kind).inc()

    def on_journey_closed(self, status: str) -> None:
        self.journeys_closed.labels(status).inc()

    def on_kpi_too_late(self, count: int) -> None:
        self.kpi_too_late.inc(count)

    def on_checkpoint(self, seconds: float) -> None:
        self.checkpoint_seconds.observe(seconds)

    def on_erasure_part(self, part: str, outcome: str) -> None:
        self.erasure_parts.labels(part, outcome).inc()

    # SinkObserver
    def on_flushed(self, table: str, rows: int, seconds: float) -> None:
        self.sink_rows.labels(table).inc(rows)
        self.sink_flush_seconds.labels(table).observe(seconds)

    def on_error(self, table: str, error: BaseException) -> None:
        self.sink_errors.labels(table).inc()

    def on_pending(self, rows: int) -> None:
        self.sink_pending_rows.set(rows)

    def on_expired(self, table: str, rows: int) -> None:
        self.rows_expired_at_insert.labels(table).inc(rows)
