"""Messages on the two internal topics (by-device, by-customer), as compact JSON.

Each value is a JSON object whose "k" says what it is: "e" an event (with its resolved key
on by-customer), "r" a merge request, "p" a merge payload, "w" a watermark announced by an
upstream partition ("s" names it, e.g. "A3" or "B0").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from journeystream.core.events import Event
from journeystream.core.journeys import KeyedEvent, MergePayload, MergeRequest
from journeystream.core.state import event_from_list, event_to_list


@dataclass(frozen=True, slots=True)
class Watermark:
    source: str
    watermark: int


Internal = KeyedEvent | MergeRequest | MergePayload | Watermark | Event


def encode_device_event(event: Event) -> bytes:
    return orjson.dumps({"k": "e", "e": event_to_list(event)})


def encode(message: KeyedEvent | MergeRequest | MergePayload | Watermark) -> bytes:
    if isinstance(message, KeyedEvent):
        return orjson.dumps(
            {"k": "e", "key": message.key, "e": event_to_list(message.event), "m": message.merge_from}
        )
    if isinstance(message, MergeRequest):
        return orjson.dumps(
            {
                "k": "r",
                "key": message.key,
                "into": message.into,
                "at": message.at,
                "id": message.login_event_id,
            }
        )
    if isinstance(message, MergePayload):
        state = None if message.state is None else message.state.decode()
        return orjson.dumps({"k": "p", "key": message.key, "src": message.source, "st": state})
    return orjson.dumps({"k": "w", "s": message.source, "w": message.watermark})


def decode_internal(raw: bytes) -> Internal:
    """Inverse of encode / encode_device_event (a device event comes back as a plain Event)."""
    data: dict[str, Any] = orjson.loads(raw)
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
