"""Fuzzing the decoder, and holding it in agreement with the JSON Schema file."""

from __future__ import annotations

import json
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from journeystream.core.decode import Rejection, _decode_slow, decode
from journeystream.core.events import CHANNELS, EVENT_TYPES, Event
from journeystream.core.state import event_to_list

SCHEMA = json.loads((Path(__file__).parents[2] / "schemas" / "interaction-event.v1.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    assert isinstance(decode(raw), Event | Rejection)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(json_values)
def test_arbitrary_json_never_raises(value: Any) -> None:
    assert isinstance(decode(orjson.dumps(value)), Event | Rejection)


times = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat(timespec="milliseconds")),
    st.builds(
        lambda y, mo, d, h, mi, s, frac, off: f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}{off}",
        st.integers(1, 9999),
        st.integers(1, 12),
        st.integers(1, 31),
        st.integers(0, 23),
        st.integers(0, 59),
        st.integers(0, 59),
        st.sampled_from(["", ".5", ".123", ".123456789"]),
        st.sampled_from(["Z", "z", "+00:00", "-05:30", "+14:00", "", "+5:00"]),
    ),
    st.text(max_size=25),
)
small_text = st.text(max_size=6)
maybe_id = st.one_of(st.none(), st.text(min_size=0, max_size=3), st.integers(-1000, 1000))
attribute_values = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 12), st.floats(-2, 12, allow_nan=False), small_text
)
attributes = st.dictionaries(
    st.sampled_from(
        [
            "page",
            "step",
            "amount",
            "direction",
            "wait_s",
            "handle_s",
            "resolved",
            "reason",
            "nps",
            "ces",
            "csat",
            "kind",
            "extra",
        ]
    ),
    st.one_of(attribute_values, st.sampled_from(["inbound", "outbound"])),
    max_size=4,
)


valid_times = st.datetimes(
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5, minutes=-30))])
)
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
valid_attributes: dict[str, Any] = {
    "page_view": st.fixed_dictionaries({}, optional={"page": small_text, "ua": small_text}),
    "journey_complete": st.fixed_dictionaries({}, optional={"amount": st.floats(-5, 500, allow_nan=False)}),
    "contact_start": st.fixed_dictionaries(
        {}, optional={"direction": st.sampled_from(["inbound", "outbound"])}
    ),
    "contact_answered": st.fixed_dictionaries({"wait_s": st.integers(0, 900)}),
    "contact_abandoned": st.fixed_dictionaries({"wait_s": st.floats(0, 900, allow_nan=False)}),
    "contact_end": st.fixed_dictionaries({"handle_s": st.integers(0, 900), "resolved": st.booleans()}),
    "survey": st.fixed_dictionaries(
        {"nps": st.integers(0, 10)}, optional={"ces": st.integers(1, 7), "csat": st.integers(1, 5)}
    ),
}


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    customer = draw(st.one_of(st.none(), ids))
    anonymous = draw(ids) if customer is None or event_type == "login" else draw(st.one_of(st.none(), ids))
    if event_type == "login" and customer is None:
        customer = draw(ids)
    doc: dict[str, Any] = {
        "event_id": draw(ids),
        "occurred_at": draw(valid_times).isoformat(timespec="milliseconds"),
        "customer_id": customer,
        "anonymous_id": anonymous,
        "channel": draw(st.sampled_from(CHANNELS)),
        "type": event_type,
        "journey": draw(
            st.sampled_from(["billing", "move_address"])
            if event_type == "journey_start"
            else st.one_of(st.none(), st.sampled_from(["claim", "x_1"]))
        ),
        "segment": draw(st.one_of(st.none(), st.sampled_from(["premium", "basic"]))),
        "attributes": draw(valid_attributes.get(event_type, st.just({}))),
    }
    return doc


mutations = st.one_of(
    st.tuples(
        st.just("drop"),
        st.sampled_from(
            [
                "event_id",
                "occurred_at",
                "customer_id",
                "anonymous_id",
                "channel",
                "type",
                "journey",
                "attributes",
            ]
        ),
    ),
    st.tuples(
        st.just("set"),
        st.sampled_from(["event_id", "customer_id", "anonymous_id", "journey", "segment", "channel", "type"]),
        st.one_of(maybe_id, small_text),
    ),
    st.tuples(st.just("set"), st.just("occurred_at"), times),
    st.tuples(st.just("attr"), attributes),
    st.tuples(st.just("extra"), st.just("unexpected")),
)


@st.composite
def candidate_events(draw: st.DrawFn) -> dict[str, Any]:
    """Valid events with 0 to 2 random defects, to explore the contract's edges from both sides."""
    doc = draw(valid_events())
    for mutation in draw(st.lists(mutations, max_size=2)):
        if mutation[0] == "drop":
            doc.pop(mutation[1], None)
        elif mutation[0] == "set":
            doc[mutation[1]] = mutation[2]
        elif mutation[0] == "attr":
            doc["attributes"] = mutation[1]
        else:
            doc[mutation[1]] = 1
    return doc


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(candidate_events())
def test_decoder_agrees_with_json_schema(doc: dict[str, Any]) -> None:
    result = decode(orjson.dumps(doc))
    schema_says_valid = VALIDATOR.is_valid(doc)
    assert isinstance(result, Event) == schema_says_valid, (result, list(VALIDATOR.iter_errors(doc))[:2])


# -- the C fast path (msgspec) against the reference path ----------------------------------


def _same_answer(raw: bytes) -> None:
    fast, slow = decode(raw), _decode_slow(raw)
    assert fast == slow, (raw, fast, slow)
    if isinstance(fast, Event):
        # equal values of the same JSON types (1 and 1.0 compare equal in Python)
        assert orjson.dumps(event_to_list(fast)) == orjson.dumps(event_to_list(slow))  # type: ignore[arg-type]


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(candidate_events())
def test_fast_path_agrees_with_slow_path(doc: dict[str, Any]) -> None:
    _same_answer(orjson.dumps(doc))


@given(json_values)
def test_fast_path_agrees_on_arbitrary_json(value: Any) -> None:
    _same_answer(orjson.dumps(value))


@given(st.binary(max_size=512))
def test_fast_path_agrees_on_arbitrary_bytes(raw: bytes) -> None:
    _same_answer(raw)


_VALID = b'"event_id":"e","occurred_at":"2026-03-01T10:15:30.250Z","customer_id":"C","channel":"web"'


@pytest.mark.parametrize(
    "raw",
    [
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":123456789012345678901234567890}}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":18446744073709551615}}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":18446744073709551616}}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":-9223372036854775809}}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":1e400}}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"x":' + b"[" * 1100 + b"]" * 1100 + b"}}",
        b"{"
        + _VALID
        + b',"type":"page_view","attributes":{"x":'
        + b'{"a":' * 1100
        + b"1"
        + b"}" * 1100
        + b"}}",
        b"{" + _VALID + b',"type":"page_view","event_id":"second"}',
        b"{" + _VALID + b',"type":"page_view","attributes":{"page":"a","page":3}}',
        b"{" + _VALID + b',"type":"page_view","customer_id":"\\ud800"}',
        b"{" + _VALID + b',"type":"page_view","journey":"abc\\n"}',
        b"{" + _VALID + b',"type":"page_view","customer_id":"' + "😀".encode() * 128 + b'"}',
        b"{" + _VALID + b',"type":"page_view","customer_id":"' + "😀".encode() * 129 + b'"}',
        b"{" + _VALID + b',"type":"survey","attributes":{"nps":10.0}}',
        b"{" + _VALID + b',"type":"survey","attributes":{}}',
        b"{" + _VALID + b',"type":"contact_end","attributes":{"handle_s":-0.0,"resolved":true}}',
        b"{" + _VALID.replace(b".250Z", b".25Z") + b',"type":"page_view"}',
        b"{" + _VALID.replace(b".250Z", "٢50Z".encode()) + b',"type":"page_view"}',
        b"{" + _VALID.replace(b":30.250Z", b":60.250Z") + b',"type":"page_view"}',
        b"\xef\xbb\xbf{" + _VALID + b',"type":"page_view"}',
    ],
)
def test_fast_path_agrees_on_edge_cases(raw: bytes) -> None:
    _same_answer(raw)
    _same_answer(raw)  # again, with the time cache warm
