"""The event contract: every rejection reason, time parsing, and what a valid event becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from journeystream.core.decode import MAX_MESSAGE_BYTES, REJECTION_CODES, Rejection, decode, parse_time
from journeystream.core.events import Event


def valid(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": "ev-1",
        "occurred_at": "2026-03-01T10:15:30.250Z",
        "customer_id": "C1",
        "anonymous_id": None,
        "channel": "web",
        "type": "page_view",
        "journey": "billing",
        "segment": "premium",
        "session_id": "s-1",
        "agent_id": None,
        "attributes": {"page": "/bill", "ua": "kept"},
    }
    for key, value in changes.items():
        if value is _DROP:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


_DROP = object()


def rejected(doc: Any) -> Rejection:
    raw = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    result = decode(raw)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.code in REJECTION_CODES
    assert result.message
    return result


def test_valid_event_is_typed_with_millisecond_time() -> None:
    event = decode(orjson.dumps(valid()))
    assert isinstance(event, Event)
    assert event.occurred_at == parse_time("2026-03-01T10:15:30.250+00:00")
    assert event.occurred_at % 1000 == 250
    assert event.attributes == {"page": "/bill", "ua": "kept"}  # unknown attribute keys are kept
    assert (event.customer_id, event.channel, event.type, event.journey) == (
        "C1",
        "web",
        "page_view",
        "billing",
    )
    assert event.routing_key == "C1"


def test_optional_fields_may_be_absent() -> None:
    doc = {
        "event_id": "e",
        "occurred_at": "2026-03-01T10:15:30Z",
        "anonymous_id": "a1",
        "channel": "sms",
        "type": "notification",
    }
    event = decode(orjson.dumps(doc))
    assert isinstance(event, Event)
    assert event.customer_id is None and event.journey is None and event.attributes == {}
    assert event.routing_key == "a1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.001Z", 1),
        ("1970-01-01T00:00:00.0019999Z", 1),  # sub-millisecond digits are dropped, not rounded
        ("1970-01-01T01:00:00+01:00", 0),
        ("1969-12-31T23:00:00-01:00", 0),
        ("1970-01-02t00:00:00.5z", 86_400_500),
        ("2024-02-29T12:00:00Z", 1_709_208_000_000),
    ],
)
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T10:15:30",  # no offset
        "2026-03-01 10:15:30Z",  # space instead of T
        "2026-02-30T00:00:00Z",  # no such day
        "2026-03-01T24:00:00Z",
        "2026-03-01T10:60:00Z",
        "2026-03-01T10:15:60Z",
        "2026-03-01T10:15:30+24:00",
        "2026-03-01T10:15:30.Z",
        "2026-03-01",
        "٢٠٢٦-03-01T10:15:30Z",  # non-ASCII digits
        "2026-03-01T10:15:30Z\n",
    ],
)
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_time(text)


def test_too_large() -> None:
    doc = valid(attributes={"page": "x" * MAX_MESSAGE_BYTES})
    assert rejected(doc).code == "too_large"


def test_exactly_at_size_limit_is_accepted() -> None:
    base = orjson.dumps(valid(attributes={"page": ""}))
    doc = valid(attributes={"page": "x" * (MAX_MESSAGE_BYTES - len(base))})
    raw = orjson.dumps(doc)
    assert len(raw) == MAX_MESSAGE_BYTES
    assert isinstance(decode(raw), Event)


@pytest.mark.parametrize("raw", [b"", b"{", b"not json", b"\xff\xfe{}", b'{"a": NaN}', b"{'a': 1}"])
def test_not_json(raw: bytes) -> None:
    assert rejected(raw).code == "not_json"


@pytest.mark.parametrize("raw", [b"[]", b"1", b'"text"', b"null", b"true"])
def test_not_object(raw: bytes) -> None:
    assert rejected(raw).code == "not_object"


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "channel", "type"])
def test_missing_required_field(field: str) -> None:
    result = rejected(valid(**{field: _DROP}))
    assert result.code == "missing_field"
    assert field in result.message


def test_null_required_field_is_missing() -> None:
    assert rejected(valid(event_id=None)).code == "missing_field"


def test_unknown_top_level_field() -> None:
    result = rejected(valid(browser="firefox"))
    assert result.code == "unknown_field"
    assert "browser" in result.message


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"event_id": 12}, "event_id"),
        ({"channel": "fax"}, "channel"),
        ({"channel": 3}, "channel"),
        ({"type": "purchase"}, "type"),
        ({"journey": "Move-Address"}, "journey"),
        ({"journey": "x" * 65}, "journey"),
        ({"customer_id": ""}, "customer_id"),
        ({"customer_id": 42}, "customer_id"),
        ({"segment": "s" * 65}, "segment"),
        ({"session_id": 5}, "session_id"),
        ({"attributes": ["page"]}, "attributes"),
    ],
)
def test_invalid_field(changes: dict[str, Any], named: str) -> None:
    result = rejected(valid(**changes))
    assert result.code == "invalid_field"
    assert named in result.message


@pytest.mark.parametrize("value", ["yesterday", "2026-03-01T10:15:30", 1_767_225_600_000, None])
def test_bad_time(value: Any) -> None:
    code = rejected(valid(occurred_at=value)).code
    assert code == ("missing_field" if value is None else "bad_time")


def test_missing_id() -> None:
    assert rejected(valid(customer_id=None, anonymous_id=None)).code == "missing_id"
    assert rejected(valid(customer_id=_DROP, anonymous_id=_DROP)).code == "missing_id"


def test_login_needs_both_ids() -> None:
    assert rejected(valid(type="login", anonymous_id=None)).code == "missing_id"
    login = decode(orjson.dumps(valid(type="login", anonymous_id="a-9")))
    assert isinstance(login, Event) and login.anonymous_id == "a-9"


def test_journey_start_needs_a_journey() -> None:
    result = rejected(valid(type="journey_start", journey=None))
    assert result.code == "missing_field"
    assert "journey" in result.message


@pytest.mark.parametrize(
    ("event_type", "attributes"),
    [
        ("survey", {}),
        ("survey", {"comment": "no score"}),
        ("survey", {"nps": 11}),
        ("survey", {"nps": -1}),
        ("survey", {"ces": 0}),
        ("survey", {"csat": 6}),
        ("survey", {"nps": 7.5}),
        ("survey", {"nps": True}),
        ("survey", {"nps": "9"}),
        ("contact_answered", {"wait_s": -1}),
        ("contact_abandoned", {"wait_s": "long"}),
        ("contact_end", {"handle_s": -0.5}),
        ("contact_end", {"resolved": "yes"}),
        ("contact_start", {"direction": "sideways"}),
        ("journey_complete", {"amount": "12"}),
        ("page_view", {"page": 3}),
        ("journey_step", {"step": ["a"]}),
        ("complaint", {"reason": None}),
        ("notification", {"kind": 1}),
    ],
)
def test_invalid_attribute(event_type: str, attributes: dict[str, Any]) -> None:
    assert rejected(valid(type=event_type, attributes=attributes)).code == "invalid_attribute"


@pytest.mark.parametrize(
    ("event_type", "attributes"),
    [
        ("survey", {"nps": 0}),
        ("survey", {"ces": 7, "csat": 1}),
        ("survey", {"nps": 10.0}),  # JSON Schema counts 10.0 as an integer
        ("contact_answered", {"wait_s": 0}),
        ("contact_abandoned", {"wait_s": 301.5}),
        ("contact_end", {"handle_s": 120, "resolved": False}),
        ("contact_start", {}),
        ("contact_start", {"direction": "outbound"}),
        ("journey_complete", {"amount": -5}),
    ],
)
def test_valid_attributes(event_type: str, attributes: dict[str, Any]) -> None:
    assert isinstance(decode(orjson.dumps(valid(type=event_type, attributes=attributes))), Event)


def test_every_rejection_code_is_exercised_here() -> None:
    """Keeps this file honest: a new code in REJECTION_CODES needs a test above."""
    source = Path(__file__).read_text(encoding="utf-8")
    for code in REJECTION_CODES:
        assert f'"{code}"' in source.replace(f'"{code}": ', "")
