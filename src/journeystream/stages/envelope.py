"""The wire format of the internal topics (by-device, by-customer): batched, versioned.

One record carries every message a processed batch sends to one partition:
`[1, [message, ...]]` (orjson), each message a list whose first element says what it is:

    ["d", event]                         an event to resolve (by-device)
    ["e", key, event, merge_from]        an event for a customer key (by-customer)
    ["r", key, into, at, login_event_id] a merge request (by-customer)
    ["p", key, source, state | null]     a merge payload (by-customer)
    ["w", source, watermark]             an upstream partition's watermark
    ["x", key, request, primary]         erase a key's state (by-customer: a customer key;
                                         by-device: an anonymous id's links)

A record is cut at MAX_RECORD_BYTES (the broker's default limit is 1 MiB). Records written
by the Faust runtime (one JSON object per message, `{"k": ...}`) are still read, so a
deployment can switch runtimes with messages in flight.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from journeystream.core.events import Event
from journeystream.core.journeys import KeyedEvent, MergePayload, MergeRequest
from journeystream.core.state import event_from_list, event_to_list

VERSION = 1
MAX_RECORD_BYTES = 512 * 1024


class Watermark(msgspec.Struct, frozen=True, gc=False):
    """Upstream partition `source` (e.g. "A3", "B0") has announced this watermark."""

    source: str
    watermark: int


@dataclass(frozen=True, slots=True)
class Erase:
    """Erase what the stage holds for `key` (journeystream erase). `primary`: the key the
    request named (its owner also erases the ClickHouse rows and cascades to the anonymous
    ids merged into it); else a key the primary cascaded to."""

    key: str
    request: str
    primary: bool


Message = Event | KeyedEvent | MergeRequest | MergePayload | Watermark | Erase


def encode_message(message: Message) -> bytes:
    return orjson.dumps(_as_list(message))


def _as_list(message: Message) -> list[Any]:
    if isinstance(message, KeyedEvent):
        return ["e", message.key, event_to_list(message.event), message.merge_from]
    if isinstance(message, Watermark):
        return ["w", message.source, message.watermark]
    if isinstance(message, Event):
        return ["d", event_to_list(message)]
    if isinstance(message, MergeRequest):
        return ["r", message.key, message.into, message.at, message.login_event_id]
    if isinstance(message, Erase):
        return ["x", message.key, message.request, message.primary]
    state = None if message.state is None else message.state.decode()
    return ["p", message.key, message.source, state]


def encode_envelopes(messages: list[Message], limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """`pack` of the encoded messages, the same bytes, in one orjson call when they fit in
    one envelope (nothing is cut when the joined messages are within `limit`)."""
    if not messages:
        return []
    whole = orjson.dumps([VERSION, [_as_list(message) for message in messages]])
    if len(messages) == 1 or len(whole) - _FRAME_BYTES <= limit:
        return [whole]
    return list(pack([encode_message(message) for message in messages], limit))


_HEAD, _TAIL = b"[%d,[" % VERSION, b"]]"
_FRAME_BYTES = len(_HEAD) + len(_TAIL)


def pack(encoded: list[bytes], limit: int = MAX_RECORD_BYTES) -> Iterator[bytes]:
    """Envelopes holding the encoded messages in order, each at most about `limit` bytes."""
    head, tail = _HEAD, _TAIL
    start, size = 0, 0
    for index, part in enumerate(encoded):
        if size and size + len(part) > limit:
            yield head + b",".join(encoded[start:index]) + tail
            start, size = index, 0
        size += len(part) + 1
    if start < len(encoded):
        yield head + b",".join(encoded[start:]) + tail


def unpack(raw: bytes | None) -> list[Message]:
    """Every message of one internal record, in order."""
    if not raw:
        raise ValueError("an internal record has no value")
    if raw[:1] == b"{":
        return [_legacy(orjson.loads(raw))]
    data = orjson.loads(raw)
    if data[0] != VERSION:
        raise ValueError(f"internal record format {data[0]!r} is not {VERSION}")
    return [_message(item) for item in data[1]]


def _message(item: list[Any]) -> Message:
    kind = item[0]
    if kind == "e":
        return KeyedEvent(item[1], event_from_list(item[2]), item[3])
    if kind == "w":
        return Watermark(item[1], item[2])
    if kind == "d":
        return event_from_list(item[1])
    if kind == "r":
        return MergeRequest(item[1], item[2], item[3], item[4])
    if kind == "p":
        return MergePayload(item[1], item[2], None if item[3] is None else item[3].encode())
    if kind == "x":
        return Erase(item[1], item[2], bool(item[3]))
    raise ValueError(f"unknown internal message kind {kind!r}")


def _legacy(data: dict[str, Any]) -> Message:
    """One message as the Faust runtime wrote it."""
    kind = data["k"]
    if kind == "w":
        return Watermark(data["s"], data["w"])
    if kind == "e":
        event = event_from_list(data["e"])
        return KeyedEvent(data["key"], event, data.get("m")) if "key" in data else event
    if kind == "r":
        return MergeRequest(data["key"], data["into"], data["at"], data["id"])
    if kind == "p":
        state = data["st"]
        return MergePayload(data["key"], data["src"], None if state is None else state.encode())
    raise ValueError(f"unknown internal message kind {kind!r}")
