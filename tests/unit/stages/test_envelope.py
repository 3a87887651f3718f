"""The internal topics' wire format: every message kind survives a round trip, records are
cut at the size limit without reordering, and records of the Faust runtime are still read."""

from __future__ import annotations

import orjson
import pytest

from journeystream.core.events import Event
from journeystream.core.journeys import KeyedEvent, MergePayload, MergeRequest
from journeystream.stages.envelope import Erase, Watermark, encode_envelopes, encode_message, pack, unpack


def _event(n: int) -> Event:
    return Event(
        event_id=f"e{n}",
        occurred_at=1_700_000_000_000 + n,
        channel="web",
        type="page_view",
        customer_id=None,
        anonymous_id=f"a{n}",
        journey="claim",
        segment=None,
        session_id="s1",
        agent_id=None,
        attributes={"page": f"/p{n}"},
    )


MESSAGES = [
    _event(1),
    KeyedEvent("c1", _event(2), "anon:a2"),
    KeyedEvent("c2", _event(3)),
    MergeRequest("anon:a1", "c1", 1_700_000_000_005, "e9"),
    MergePayload("c1", "anon:a1", b'[3,"anon:a1"]'),
    MergePayload("c1", "anon:a2", None),
    Watermark("A3", 1_700_000_000_000),
]


def test_every_message_kind_round_trips_in_order() -> None:
    (record,) = list(pack([encode_message(message) for message in MESSAGES]))
    assert unpack(record) == MESSAGES


def test_records_are_cut_at_the_limit_and_keep_the_order() -> None:
    messages = [_event(n) for n in range(200)]
    encoded = [encode_message(message) for message in messages]
    records = list(pack(encoded, limit=2_000))
    assert len(records) > 5
    assert all(len(record) <= 2_000 + max(map(len, encoded)) for record in records)
    assert [message for record in records for message in unpack(record)] == messages


def test_nothing_to_pack_gives_no_record() -> None:
    assert list(pack([])) == []
    assert encode_envelopes([]) == []


def test_envelopes_encoded_at_once_are_the_bytes_pack_makes() -> None:
    messages = [*MESSAGES, *(_event(n) for n in range(60)), *MESSAGES]
    encoded = [encode_message(message) for message in messages]
    body = len(b",".join(encoded))
    # around the limit where pack starts to cut: one envelope up to it, several beyond
    for limit in (body + 100, body, body - 1, body - 300, 2_000, 100, 1):
        assert encode_envelopes(messages, limit) == list(pack(encoded, limit))
    assert encode_envelopes(MESSAGES[:1], 1) == list(pack(encoded[:1], 1))


def test_records_of_the_faust_runtime_are_still_read() -> None:
    event = _event(4)
    from journeystream.core.state import event_to_list

    legacy = {
        orjson.dumps({"k": "w", "s": "B1", "w": 5}): Watermark("B1", 5),
        orjson.dumps({"k": "e", "e": event_to_list(event)}): event,
        orjson.dumps({"k": "e", "key": "c9", "e": event_to_list(event), "m": None}): KeyedEvent("c9", event),
        orjson.dumps({"k": "r", "key": "anon:a", "into": "c", "at": 7, "id": "e1"}): MergeRequest(
            "anon:a", "c", 7, "e1"
        ),
        orjson.dumps({"k": "p", "key": "c", "src": "anon:a", "st": None}): MergePayload("c", "anon:a", None),
    }
    for raw, message in legacy.items():
        assert unpack(raw) == [message]


def test_an_event_with_every_field_set_round_trips() -> None:
    # event_from_list builds the Event positionally: the list order must be the field order
    event = Event(
        event_id="e1",
        occurred_at=1_700_000_000_000,
        channel="phone",
        type="contact_start",
        customer_id="c1",
        anonymous_id="a1",
        journey="claim",
        segment="gold",
        session_id="s1",
        agent_id="g1",
        attributes={"direction": "inbound"},
    )
    assert unpack(next(pack([encode_message(KeyedEvent("c1", event, "anon:a1"))]))) == [
        KeyedEvent("c1", event, "anon:a1")
    ]


def test_each_message_kind_has_the_documented_wire_form() -> None:
    # written from the module's docstring: records in flight when a worker is upgraded
    # are read by the next version, so the bytes of format 1 must not drift
    expected = [
        b'["d",["e1",1700000000001,"web","page_view",null,"a1","claim",null,"s1",null,{"page":"/p1"}]]',
        b'["e","c1",["e2",1700000000002,"web","page_view",null,"a2","claim",null,"s1",null,{"page":"/p2"}],'
        b'"anon:a2"]',
        b'["r","anon:a1","c1",1700000000005,"e9"]',
        b'["p","c1","anon:a1","[3,\\"anon:a1\\"]"]',
        b'["p","c1","anon:a2",null]',
        b'["w","A3",1700000000000]',
        b'["x","c7","req-1",true]',
    ]
    messages = [
        _event(1),
        KeyedEvent("c1", _event(2), "anon:a2"),
        *MESSAGES[3:],
        Erase("c7", "req-1", True),
    ]
    assert [encode_message(message) for message in messages] == expected
    assert encode_envelopes(messages) == [b"[1,[" + b",".join(expected) + b"]]"]
    assert unpack(b"[1,[" + b",".join(expected) + b"]]") == messages


def test_a_record_of_another_format_or_kind_is_refused_with_what_it_is() -> None:
    with pytest.raises(ValueError, match="internal record format 2 is not 1"):
        unpack(b'[2,[["w","A3",5]]]')
    with pytest.raises(ValueError, match="unknown internal message kind 'z'"):
        unpack(b'[1,[["w","A3",5],["z",1]]]')
