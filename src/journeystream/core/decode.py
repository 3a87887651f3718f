"""bytes → Event, or a Rejection saying why not (SPEC §1).

`decode` never raises: anything that fails the contract comes back as a `Rejection` with a
stable `code` (a metric label) and a human-readable `message`. The checks mirror
`schemas/interaction-event.v1.json`; a test holds the two in agreement.

Two paths give one answer. The fast path decodes and checks types, enums, lengths and
unknown fields in C (msgspec, into a typed Struct, no intermediate dict), then runs the few
rules msgspec cannot express. Whatever it does not accept, for whatever reason, goes to the
slow path (orjson and hand-written checks), which alone says why a message is rejected: so
every rejection code and message is the slow path's, and the fast path only has to never
accept what the slow path refuses (and build the same Event). Attributes holding anything
but flat scalars that orjson and msgspec read alike (nested values, integers beyond 64
bits) also take the slow path.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Final

import msgspec
import orjson

from journeystream.core.events import CHANNELS, EVENT_TYPES, Channel, Event, EventType

MAX_MESSAGE_BYTES: Final = 64 * 1024
MAX_ID_LENGTH: Final = 128
MAX_SEGMENT_LENGTH: Final = 64

# Every rejection code, with what it means. Codes are stable: dashboards and alerts use them.
REJECTION_CODES: Final = {
    "too_large": "message is over 64 KiB",
    "not_json": "not valid UTF-8 JSON",
    "not_object": "JSON value is not an object",
    "missing_field": "a required field is missing or null",
    "unknown_field": "a field the contract does not define",
    "invalid_field": "a field has the wrong type, length, pattern or value",
    "bad_time": "occurred_at is not an RFC 3339 date-time with an offset",
    "missing_id": "neither customer_id nor anonymous_id",
    "invalid_attribute": "an attribute is invalid for the event type",
}


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a message was refused: `code` is one of REJECTION_CODES."""

    code: str
    message: str


class _Reject(Exception):
    """Internal: carries a Rejection out of nested checks."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.rejection = Rejection(code, message)


_KNOWN_FIELDS: Final = frozenset(
    {
        "event_id",
        "occurred_at",
        "customer_id",
        "anonymous_id",
        "channel",
        "type",
        "journey",
        "segment",
        "session_id",
        "agent_id",
        "attributes",
    }
)
_CHANNELS: Final = frozenset(CHANNELS)
_TYPES: Final = frozenset(EVENT_TYPES)
_JOURNEY_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]+))?(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_DAY_MS: Final = 86_400_000


def decode(raw: bytes) -> Event | Rejection:
    """Decode and validate one message value."""
    if len(raw) <= MAX_MESSAGE_BYTES:
        try:
            wire = _WIRE.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # deep nesting raises RecursionError
            return _decode_slow(raw)
        event = _event_from_wire(wire)
        if event is not None:
            return event
    return _decode_slow(raw)


def _decode_slow(raw: bytes) -> Event | Rejection:
    """The reference path: every rejection, with its code and message, comes from here."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejection("too_large", f"message is {len(raw)} bytes, the limit is {MAX_MESSAGE_BYTES}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", f"not valid UTF-8 JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejection("not_object", f"expected a JSON object, got {_json_type(doc)}")
    try:
        return _event_from(doc)
    except _Reject as rejected:
        return rejected.rejection


_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
# Attribute values the fast path takes: flat scalars that orjson reads alike (orjson reads
# integers in [i64 min, u64 max] as int and others as float, msgspec all as int; msgspec
# bounds stop at i64 max, so the few integers above it take the slow path too).
_Scalar = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)] | float | str | bool | None
_Segment = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SEGMENT_LENGTH)]


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """What msgspec checks in C; the rest is in _event_from_wire."""

    event_id: _Id
    occurred_at: str
    channel: Channel
    type: EventType
    customer_id: _Id | None = None
    anonymous_id: _Id | None = None
    journey: str | None = None
    segment: _Segment | None = None
    session_id: str | None = None
    agent_id: str | None = None
    attributes: dict[str, _Scalar] = msgspec.field(default_factory=dict)


_WIRE: Final = msgspec.json.Decoder(_Wire)


def _is_number(value: object, minimum: float | None = None) -> bool:
    """An int or float (not a bool), at least `minimum`: as _attr_number accepts."""
    return type(value) in (int, float) and (minimum is None or value >= minimum)  # type: ignore[operator]


def _survey_ok(attrs: dict[str, Any]) -> bool:
    try:
        _check_survey(attrs)
    except _Reject:
        return False
    return True


# Per event type, a predicate on non-empty attributes; never looser than _check_attributes
# (a False only sends the message to the slow path). JSON values are never subclasses, so
# `type(v) is str` is isinstance(v, str).
_ATTRIBUTES_OK: Final[dict[str, Callable[[dict[str, Any]], bool]]] = {
    "page_view": lambda a: type(a.get("page", "")) is str,
    "journey_step": lambda a: type(a.get("step", "")) is str,
    "journey_complete": lambda a: "amount" not in a or _is_number(a["amount"]),
    "contact_start": lambda a: a.get("direction", "inbound") in ("inbound", "outbound"),
    "contact_answered": lambda a: "wait_s" not in a or _is_number(a["wait_s"], 0),
    "contact_abandoned": lambda a: "wait_s" not in a or _is_number(a["wait_s"], 0),
    "contact_end": lambda a: (
        ("handle_s" not in a or _is_number(a["handle_s"], 0)) and type(a.get("resolved", False)) is bool
    ),
    "complaint": lambda a: type(a.get("reason", "")) is str,
    "notification": lambda a: type(a.get("kind", "")) is str,
    "survey": _survey_ok,
}


def _event_from_wire(wire: _Wire) -> Event | None:
    """The Event, or None when the slow path must decide (and explain a rejection)."""
    customer_id, anonymous_id, event_type = wire.customer_id, wire.anonymous_id, wire.type
    if customer_id is None and anonymous_id is None:
        return None
    if event_type == "login" and (customer_id is None or anonymous_id is None):
        return None
    journey = wire.journey
    if journey is None:
        if event_type == "journey_start":
            return None
    elif journey not in _JOURNEYS_OK:
        if _JOURNEY_RE.fullmatch(journey) is None:
            return None
        if len(_JOURNEYS_OK) >= _CACHE_HELD:
            _JOURNEYS_OK.clear()
        _JOURNEYS_OK.add(journey)
    attributes: dict[str, Any] = wire.attributes
    if attributes:
        accept = _ATTRIBUTES_OK.get(event_type)
        if accept is not None and not accept(attributes):
            return None
    elif event_type == "survey":
        return None  # a survey needs a score
    text = wire.occurred_at
    base = _SECONDS.get(text[:20]) if len(text) == 24 and text[23] == "Z" else None
    millis = text[20:23]
    if base is not None and millis.isdigit() and millis.isascii():
        occurred_at = base + int(millis)  # _fast_time's cached case, inline
    else:
        parsed = _fast_time(text)
        if parsed is None:
            return None
        occurred_at = parsed
    return Event(
        wire.event_id,
        occurred_at,
        wire.channel,
        event_type,
        customer_id,
        anonymous_id,
        journey,
        wire.segment,
        wire.session_id,
        wire.agent_id,
        attributes,
    )


_SECONDS: dict[str, int] = {}  # 'YYYY-MM-DDTHH:MM:SS.' -> epoch ms of that UTC second
_JOURNEYS_OK: set[str] = set()  # journey names that matched _JOURNEY_RE
_CACHE_HELD: Final = 4096  # entries per cache (cleared when full)


def _fast_time(value: str) -> int | None:
    """parse_time, None where it raises; `YYYY-MM-DDTHH:MM:SS.fffZ` by a cached second."""
    if len(value) == 24 and value[23] == "Z":
        base = _SECONDS.get(value[:20])
        if base is not None:
            millis = value[20:23]
            if millis.isdigit() and millis.isascii():
                return base + int(millis)
    try:
        parsed = parse_time(value)
    except ValueError:
        return None
    if len(value) == 24 and value[19] == "." and value[23] == "Z" and value.isascii():
        if len(_SECONDS) >= _CACHE_HELD:
            _SECONDS.clear()
        _SECONDS[value[:20]] = parsed - int(value[20:23])
    return parsed


def parse_time(value: str) -> int:
    """RFC 3339 date-time (with `Z` or an offset) → epoch milliseconds; sub-ms digits dropped.

    Raises ValueError when the text is not such a date-time.
    """
    match = _TIME_RE.fullmatch(value)
    if match is None:
        raise ValueError("expected YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    ordinal = date(year, month, day).toordinal()  # raises ValueError on an impossible date
    if hour > 23 or minute > 59 or second > 59:
        raise ValueError("time of day out of range")
    fraction = match.group(7)
    millis = int((fraction + "00")[:3]) if fraction else 0
    offset_ms = 0
    if match.group(8) is None:
        off_h, off_m = int(match.group(10)), int(match.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError("offset out of range")
        offset_ms = (off_h * 60 + off_m) * 60_000 * (1 if match.group(9) == "+" else -1)
    day_ms = ((hour * 60 + minute) * 60 + second) * 1000 + millis
    return (ordinal - _EPOCH_ORDINAL) * _DAY_MS + day_ms - offset_ms


def _event_from(doc: dict[str, Any]) -> Event:
    unknown = doc.keys() - _KNOWN_FIELDS
    if unknown:
        raise _Reject("unknown_field", f"unknown field(s): {', '.join(sorted(unknown)[:5])}")
    event_id = _required_str(doc, "event_id", MAX_ID_LENGTH)
    occurred_at = _occurred_at(doc)
    channel = _enum(doc, "channel", _CHANNELS, CHANNELS)
    event_type = _enum(doc, "type", _TYPES, EVENT_TYPES)
    customer_id = _optional_str(doc, "customer_id", 1, MAX_ID_LENGTH)
    anonymous_id = _optional_str(doc, "anonymous_id", 1, MAX_ID_LENGTH)
    if customer_id is None and anonymous_id is None:
        raise _Reject("missing_id", "at least one of customer_id and anonymous_id is required")
    if event_type == "login" and (customer_id is None or anonymous_id is None):
        raise _Reject("missing_id", "a login needs both customer_id and anonymous_id")
    journey = _journey(doc, event_type)
    attributes = doc.get("attributes", {})
    if not isinstance(attributes, dict):
        raise _Reject("invalid_field", f"attributes: expected an object, got {_json_type(attributes)}")
    _check_attributes(event_type, attributes)
    return Event(
        event_id=event_id,
        occurred_at=occurred_at,
        channel=channel,
        type=event_type,
        customer_id=customer_id,
        anonymous_id=anonymous_id,
        journey=journey,
        segment=_optional_str(doc, "segment", 1, MAX_SEGMENT_LENGTH),
        session_id=_optional_str(doc, "session_id", 0, None),
        agent_id=_optional_str(doc, "agent_id", 0, None),
        attributes=attributes,
    )


def _required_str(doc: dict[str, Any], name: str, max_length: int) -> str:
    value = doc.get(name)
    if value is None:
        raise _Reject("missing_field", f"{name} is required")
    if not isinstance(value, str):
        raise _Reject("invalid_field", f"{name}: expected a string, got {_json_type(value)}")
    if not 1 <= len(value) <= max_length:
        raise _Reject("invalid_field", f"{name}: length {len(value)} is outside 1..{max_length}")
    return value


def _optional_str(doc: dict[str, Any], name: str, min_length: int, max_length: int | None) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _Reject("invalid_field", f"{name}: expected a string or null, got {_json_type(value)}")
    if len(value) < min_length or (max_length is not None and len(value) > max_length):
        raise _Reject("invalid_field", f"{name}: length {len(value)} is outside {min_length}..{max_length}")
    return value


def _enum(doc: dict[str, Any], name: str, allowed: frozenset[str], listed: tuple[str, ...]) -> str:
    value = doc.get(name)
    if value is None:
        raise _Reject("missing_field", f"{name} is required")
    if not isinstance(value, str) or value not in allowed:
        raise _Reject("invalid_field", f"{name}: {_excerpt(value)} is not one of {', '.join(listed)}")
    return value


def _occurred_at(doc: dict[str, Any]) -> int:
    value = doc.get("occurred_at")
    if value is None:
        raise _Reject("missing_field", "occurred_at is required")
    if not isinstance(value, str):
        raise _Reject("bad_time", f"occurred_at: expected an RFC 3339 string, got {_json_type(value)}")
    try:
        return parse_time(value)
    except ValueError as exc:
        raise _Reject("bad_time", f"occurred_at: {_excerpt(value)} is not RFC 3339 ({exc})") from None


def _journey(doc: dict[str, Any], event_type: str) -> str | None:
    value = doc.get("journey")
    if value is None:
        if event_type == "journey_start":
            raise _Reject("missing_field", "journey is required on journey_start")
        return None
    if not isinstance(value, str) or _JOURNEY_RE.fullmatch(value) is None:
        raise _Reject("invalid_field", f"journey: {_excerpt(value)} does not match ^[a-z0-9_]{{1,64}}$")
    return value


def _check_attributes(event_type: str, attrs: dict[str, Any]) -> None:
    """Type-specific attribute rules; unknown keys are kept as they are."""
    if event_type == "page_view":
        _attr_type(attrs, "page", str, "a string")
    elif event_type == "journey_step":
        _attr_type(attrs, "step", str, "a string")
    elif event_type == "journey_complete":
        _attr_number(attrs, "amount", minimum=None)
    elif event_type == "contact_start":
        direction = attrs.get("direction", "inbound")
        if direction not in ("inbound", "outbound"):
            raise _Reject("invalid_attribute", f"direction: {_excerpt(direction)} is not inbound or outbound")
    elif event_type in ("contact_answered", "contact_abandoned"):
        _attr_number(attrs, "wait_s", minimum=0)
    elif event_type == "contact_end":
        _attr_number(attrs, "handle_s", minimum=0)
        _attr_type(attrs, "resolved", bool, "a boolean")
    elif event_type == "complaint":
        _attr_type(attrs, "reason", str, "a string")
    elif event_type == "notification":
        _attr_type(attrs, "kind", str, "a string")
    elif event_type == "survey":
        _check_survey(attrs)


def _check_survey(attrs: dict[str, Any]) -> None:
    scores = [name for name in ("nps", "ces", "csat") if name in attrs]
    if not scores:
        raise _Reject("invalid_attribute", "a survey needs at least one of nps, ces, csat")
    bounds = {"nps": (0, 10), "ces": (1, 7), "csat": (1, 5)}
    for name in scores:
        low, high = bounds[name]
        value = attrs[name]
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON Schema counts 7.0 as an integer
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _Reject(
                "invalid_attribute", f"{name}: {_excerpt(attrs[name])} is not an integer in {low}..{high}"
            )


def _attr_type(attrs: dict[str, Any], name: str, kind: type, described: str) -> None:
    if name in attrs and not isinstance(attrs[name], kind):
        raise _Reject("invalid_attribute", f"{name}: expected {described}, got {_json_type(attrs[name])}")


def _attr_number(attrs: dict[str, Any], name: str, minimum: float | None) -> None:
    if name not in attrs:
        return
    value = attrs[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Reject("invalid_attribute", f"{name}: expected a number, got {_json_type(value)}")
    if minimum is not None and value < minimum:
        raise _Reject("invalid_attribute", f"{name}: {value} is below {minimum}")


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _excerpt(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
