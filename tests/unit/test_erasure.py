"""The ClickHouse part of an erasure, on embedded ClickHouse: ids with quotes cannot break
out of the statements, merged anonymous ids are found through login events, the report's
outcome follows what was removed, left and checked."""

from __future__ import annotations

from pathlib import Path

from journeystream.config import Settings
from journeystream.erasure import ErasureReport, delete_statement, erase_rows, id_hash, stored_id
from journeystream.sinks.clickhouse import ClickHouseWriter
from journeystream.sinks.rows import INTERACTION_EVENTS
from journeystream.sinks.store import StoreTarget, migrate

T0 = 1_767_225_600_000


def _event_row(event_id: str, customer: str | None, anonymous: str | None) -> list[object]:
    values: dict[str, object] = {
        "event_id": event_id,
        "occurred_at": T0,
        "customer_id": customer,
        "anonymous_id": anonymous,
        "channel": "web",
        "type": "login",
        "journey": None,
        "segment": None,
        "session_id": None,
        "agent_id": None,
        "attributes": "{}",
        "kafka_partition": 0,
        "kafka_offset": 0,
        "ingested_at": T0,
    }
    return [values[column] for column in INTERACTION_EVENTS.columns]


def test_erase_rows_escapes_ids_and_follows_login_links(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"JOURNEYSTREAM_DATA_DIR": str(tmp_path), "JOURNEYSTREAM_EVENTS_TTL_DAYS": "3650"}
    )
    writer = ClickHouseWriter(StoreTarget.from_settings(settings))
    db = writer.database
    tricky = "O'Brien\\' OR 1=1 --"
    try:
        writer.call(lambda c: migrate(c, settings, db))
        rows = [
            _event_row("e1", tricky, "anon-1"),
            _event_row("e2", None, "anon-1"),
            _event_row("e3", "someone-else", "anon-2"),
        ]
        writer.call(
            lambda c: c.insert(
                f"{db}.interaction_events", rows, column_names=list(INTERACTION_EVENTS.columns)
            )
        )
        report = writer.call(lambda c: erase_rows(c, db, tricky, anonymous=False))
        left = writer.call(lambda c: c.query(f"SELECT event_id FROM {db}.interaction_events").result_rows)
        again = writer.call(lambda c: erase_rows(c, db, tricky, anonymous=False))
    finally:
        writer.close()
    assert report.rows_removed["interaction_events"] == 2 and report.linked_anonymous_ids == 1
    assert left == [("e3",)]
    assert again.removed == 0


def test_report_outcome() -> None:
    report = ErasureReport(id_hash("C1"), "customer", rows_removed={"journeys": 2}, rows_left={"journeys": 0})
    assert report.outcome == "incomplete"  # worker state not checked
    report.worker_state, report.worker_complete = "none", True
    assert report.outcome == "erased" and report.complete
    report.rows_left["journeys"] = 1
    assert report.outcome == "incomplete" and any("FAILED" in line for line in report.lines())
    report.rows_left["journeys"] = 0
    report.errors.append("ClickHouse rows not erased: timeout")
    assert report.outcome == "incomplete"
    assert "  FAILED: ClickHouse rows not erased: timeout" in report.lines()
    empty = ErasureReport(id_hash("C1"), "customer", worker_state="none", worker_complete=True)
    assert empty.outcome == "no-op"


def test_stored_id_accepts_raw_or_token(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("k" * 32)
    settings = Settings.from_env({"JOURNEYSTREAM_PSEUDONYM_KEY_FILE": str(key)})
    token = stored_id(settings, "C1")
    assert token.startswith("ps_") and stored_id(settings, token) == token
    assert stored_id(Settings.from_env({}), "C1") == "C1"


def test_delete_goes_to_the_local_tables_on_a_replicated_cluster() -> None:
    single = delete_statement(
        "db", "journeys", "ReplacingMergeTree(version) ORDER BY x", "customer_key IN ('C')"
    )
    assert single == "DELETE FROM db.journeys WHERE customer_key IN ('C')"
    engine = "Distributed('prod', 'db', 'journeys_local', cityHash64(journey_id))"
    clustered = delete_statement("db", "journeys", engine, "customer_key IN ('C')")
    assert clustered == "DELETE FROM db.journeys_local ON CLUSTER 'prod' WHERE customer_key IN ('C')"
