"""Pseudonymised ids: stable keyed tokens, applied by stage A before anything is stored or
forwarded; rejected messages withheld; the key read from a file and never shown."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from journeystream.cli import main
from journeystream.config import Settings, pseudonyms
from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.pseudonym import Pseudonyms, is_token
from journeystream.errors import ConfigError
from journeystream.sinks.rows import REJECTED_EVENTS
from journeystream.stages.effects import Effects, InputRecord
from journeystream.stages.ingest import IngestProcessor
from journeystream.stages.local import LocalStages
from tests.unit.stages.test_processors import T0, TOPOLOGY, _iso

KEY = b"0123456789abcdef0123456789abcdef"
RAW_IDS = ("CUST-7731", "anon-f00d", "sess-42", "agent-9")


def test_tokens_are_stable_keyed_and_recognisable() -> None:
    tokens = Pseudonyms(KEY)
    token = tokens.token("CUST-7731")
    assert token == Pseudonyms(KEY).token("CUST-7731")  # stable: any worker, any run
    assert token != Pseudonyms(KEY[::-1]).token("CUST-7731")  # keyed
    assert token != tokens.token("CUST-7732")
    assert token.startswith("ps_") and len(token) == 29 and is_token(token)
    assert not is_token("CUST-7731") and not is_token(token.upper())
    assert tokens.token_or_same(token) == token
    assert tokens.token_or_same("CUST-7731") == token
    assert tokens.token_of_bytes(b"CUST-7731") == token  # a message key gives the id's token
    assert "0123" not in repr(tokens)
    with pytest.raises(ValueError):
        Pseudonyms(b"short")


def test_event_ids_are_replaced_and_nothing_else() -> None:
    tokens = Pseudonyms(KEY)
    event = Event("e1", T0, "phone", "contact_start", *RAW_IDS[:2], "billing", "gold", *RAW_IDS[2:])
    hidden = tokens.event(event)
    assert (hidden.customer_id, hidden.anonymous_id, hidden.session_id, hidden.agent_id) == tuple(
        tokens.token(raw) for raw in RAW_IDS
    )
    assert (hidden.event_id, hidden.occurred_at, hidden.journey, hidden.segment) == (
        "e1",
        T0,
        "billing",
        "gold",
    )
    assert tokens.event(Event("e2", T0, "web", "page_view", anonymous_id="a")).customer_id is None


def _message(n: int, **ids: str) -> bytes:
    body = {"event_id": f"e{n}", "occurred_at": _iso(T0 + n), "channel": "phone", "type": "contact_start"}
    return orjson.dumps({**body, **ids})


def _all_bytes(effects: Effects) -> bytes:
    parts = [repr(row).encode() for _, row in effects.rows]
    for record in effects.records:
        parts += [record.key or b"", record.value or b"", repr(record.headers).encode()]
    return b"\n".join(parts)


def test_ingest_keeps_no_raw_id_in_rows_records_or_rejections() -> None:
    tokens = Pseudonyms(KEY)
    ingest, effects = IngestProcessor(TOPOLOGY, 5_000, pseudonyms=tokens), Effects()
    values = [
        _message(1, customer_id="CUST-7731", session_id="sess-42", agent_id="agent-9"),
        _message(2, anonymous_id="anon-f00d", session_id="sess-42"),
        _message(3, customer_id="CUST-7731", channel="fax"),  # rejected: bad channel
        b'{"customer_id": "CUST-7731", not json',
    ]
    records = [InputRecord(i, T0, b"CUST-7731", value) for i, value in enumerate(values)]
    ingest.process(0, records, T0, effects)
    everything = _all_bytes(effects)
    for raw in RAW_IDS:
        assert raw.encode() not in everything
    assert tokens.token("CUST-7731").encode() in everything

    rejected = [r for r in effects.records if r.topic == "rejected"]
    assert len(rejected) == 2
    for record in rejected:
        assert record.key == tokens.token("CUST-7731").encode() and record.value == b""
        headers = dict(record.headers or [])
        assert headers["journeystream.withheld"] and headers["journeystream.source"].startswith(b"in/0/")
    rows = [row for table, row in effects.rows if table == REJECTED_EVENTS.name]
    excerpt, key, size = (REJECTED_EVENTS.columns.index(c) for c in ("excerpt", "kafka_key", "size_bytes"))
    assert [(row[key], row[excerpt]) for row in rows] == [(tokens.token("CUST-7731"), "")] * 2
    assert rows[1][size] == len(values[3])


def test_without_a_key_rejections_stay_byte_for_byte() -> None:
    ingest, effects = IngestProcessor(TOPOLOGY, 5_000), Effects()
    ingest.process(0, [InputRecord(0, T0, b"CUST-7731", b"nope")], T0, effects)
    (record,) = effects.records
    assert (record.key, record.value) == (b"CUST-7731", b"nope")


def test_replay_stages_give_the_raw_run_up_to_the_id_mapping() -> None:
    """The journeys of a pseudonymised run are the raw run's with every id mapped."""
    tokens = Pseudonyms(KEY)
    values = [
        _message(1, anonymous_id="anon-f00d")
        .replace(b"contact_start", b"page_view")
        .replace(b"phone", b"web"),
        _message(2, customer_id="CUST-7731", anonymous_id="anon-f00d")
        .replace(b"contact_start", b"login")
        .replace(b"phone", b"web"),
        _message(3, customer_id="CUST-7731", session_id="sess-42"),
    ]

    def run(pseudonymised: Pseudonyms | None) -> list[tuple[object, ...]]:
        stages = LocalStages(
            "file:x", RulesConfig(allowed_lateness_ms=5_000), 21_600_000, pseudonyms=pseudonymised
        )
        effects = Effects()
        stages.feed([InputRecord(i, T0, None, v) for i, v in enumerate(values)], T0, effects)
        stages.finish(effects)
        stages.checkpoint(T0, effects)
        return [row for table, row in effects.rows if table == "journeys"]

    raw, hidden = run(None), run(tokens)
    assert len(raw) == len(hidden) > 0
    mapped = [tuple(tokens.token(v) if v == "CUST-7731" else v for v in row[1:-1]) for row in raw]
    assert [row[1:-1] for row in hidden] == mapped
    assert b"CUST-7731" not in repr(hidden).encode() and b"anon-f00d" not in repr(hidden).encode()


def test_key_file_is_read_once_checked_and_never_shown(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY.decode() + "\n")
    settings = Settings.from_env({"JOURNEYSTREAM_PSEUDONYM_KEY_FILE": str(key_file)})
    tokens = pseudonyms(settings)
    assert tokens is not None and tokens.token("x") == Pseudonyms(KEY).token("x")
    assert KEY.decode() not in repr(settings) and KEY.decode() not in str(settings.describe())
    assert KEY.decode() in settings.secrets()
    assert pseudonyms(Settings.from_env({})) is None
    key_file.write_text("too short")
    with pytest.raises(ConfigError, match=r"JOURNEYSTREAM_PSEUDONYM_KEY_FILE=.*fewer than 16 bytes"):
        Settings.from_env({"JOURNEYSTREAM_PSEUDONYM_KEY_FILE": str(key_file)})
    with pytest.raises(ConfigError, match=r"JOURNEYSTREAM_PSEUDONYM_KEY_FILE=.*cannot read"):
        Settings.from_env({"JOURNEYSTREAM_PSEUDONYM_KEY_FILE": str(tmp_path / "missing")})


def test_pseudonym_command_prints_the_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "key"
    key_file.write_bytes(KEY)
    monkeypatch.setenv("JOURNEYSTREAM_PSEUDONYM_KEY_FILE", str(key_file))
    assert main(["pseudonym", "CUST-7731"]) == 0
    assert capsys.readouterr().out == Pseudonyms(KEY).token("CUST-7731") + "\n"
    monkeypatch.delenv("JOURNEYSTREAM_PSEUDONYM_KEY_FILE")
    assert main(["pseudonym", "CUST-7731"]) == 2
    assert "JOURNEYSTREAM_PSEUDONYM_KEY_FILE is not set" in capsys.readouterr().err
