"""The wire format of the internal topics (by-device, by-customer): batched, versioned.

One record carries every message a processed batch sends to one partition:
`[1, [message, ...]]`, each message a list whose first element says what it is:

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
from typing import Any

import msgspec
import orjson

from journeystream.core.events import Event
from journeystream.core.journeys import KeyedEvent, MergePayload, MergeRequest
from journeystream.core.state import event_from_list

VERSION = 1
MAX_RECORD_BYTES = 512 * 1024


class Watermark(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="w"):
    """Upstream partition `source` (e.g. "A3", "B0") has announced this watermark."""

    source: str
    watermark: int


class Erase(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="x"):
    """Erase what the stage holds for `key` (journeystream erase). `primary`: the key the
    request named (its owner also erases the ClickHouse rows and cascades to the anonymous
    ids merged into it); else a key the primary cascaded to."""

    key: str
    request: str
    primary: bool


Message = Event | KeyedEvent | MergeRequest | MergePayload | Watermark | Erase


class _Device(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="d"):
    """An event to resolve, as it travels: `["d", event]`."""

    event: Event


class _Payload(msgspec.Struct, frozen=True, gc=False, array_like=True, tag="p"):
    """A merge payload as it travels: the state as text, not bytes (msgspec writes bytes as
    base64)."""

    key: str
    source: str
    state: str | None


# The messages are msgspec Structs whose array form is their wire form (array_like, the
# tag first): one C call encodes or decodes a whole record. Events and merge payloads travel
# in the two wrappers above.
_Wire = KeyedEvent | MergeRequest | Watermark | Erase | _Device | _Payload
_AS_IS = frozenset({KeyedEvent, MergeRequest, Watermark, Erase})
_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(tuple[int, list[_Wire]])


def _wire(message: Message) -> _Wire:
    if isinstance(message, Event):
        return _Device(message)
    if isinstance(message, MergePayload):
        return _Payload(
            message.key, message.source, None if message.state is None else message.state.decode()
        )
    return message


def _unwired(item: _Wire) -> Message:
    if isinstance(item, _Device):
        return item.event
    if isinstance(item, _Payload):
        return _payload(item.key, item.source, item.state)
    return item


def _payload(key: str, source: str, text: str | None) -> MergePayload:
    """A merge payload from its travelling form (the state as text)."""
    return MergePayload(key, source, None if text is None else text.encode())


def encode_message(message: Message) -> bytes:
    return _ENCODER.encode(_wire(message))


def encode_envelopes(messages: list[Message], limit: int = MAX_RECORD_BYTES) -> list[bytes]:
    """`pack` of the encoded messages, the same bytes, in one orjson call when they fit in
    one envelope (nothing is cut when the joined messages are within `limit`)."""
    if not messages:
        return []
    as_is = _AS_IS
    whole = _ENCODER.encode((VERSION, [m if type(m) in as_is else _wire(m) for m in messages]))
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
    try:
        version, items = _DECODER.decode(raw)
    except msgspec.ValidationError:
        return _checked(orjson.loads(raw))  # another version or an unknown kind: which one
    if version != VERSION:
        raise ValueError(f"internal record format {version!r} is not {VERSION}")
    as_is = _AS_IS
    # the types in as_is are Messages as they are (mypy cannot narrow by type(item) in ...)
    return [item if type(item) in as_is else _unwired(item) for item in items]  # type: ignore[misc]


def _checked(data: Any) -> list[Message]:
    """The messages of a record in the list form, read one by one (and the error that says
    what is wrong with it)."""
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
        return _payload(item[1], item[2], item[3])
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
        return _payload(data["key"], data["src"], data["st"])
    raise ValueError(f"unknown internal message kind {kind!r}")
