"""The control topic (`{app_id}.control`): erasure requests and their reports.

`journeystream erase` writes a request keyed by the key it targets (the customer id, or
`anon:<anonymous id>`); whichever worker owns that control partition sends it on, as an
`Erase` message, to the by-customer partition that owns the key, exactly as events travel.
That partition's owner erases the key's state and cascades to the anonymous ids merged into
it (their journey-stage state and their login links, wherever those live); every part is
reported back on the control topic, keyed by the request id, once it is durable. So erasure
works with any number of workers, and a request read twice (after a crash) is carried out
twice, which changes nothing the second time.

    {"v": 1, "kind": "erase", "request": ID, "key": KEY}
    {"v": 1, "kind": "report", "request": ID, "part": ..., ...}    (see `report_value`)

Requests and reports hold the id as stored (a token when ids are pseudonymised); reports
hold only a hash of the key. The topic's retention bounds how long a request's id stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from journeystream.core.identity import ANONYMOUS_PREFIX
from journeystream.stages.effects import Effects, ErasurePart, OutputRecord, Record
from journeystream.stages.envelope import Erase
from journeystream.stages.routing import Outbox, Partitioner
from journeystream.stages.topology import Topology

VERSION = 1
PARTS = ("customer", "anonymous", "links")


@dataclass(frozen=True, slots=True)
class EraseRequest:
    request: str
    key: str  # a customer id, or anon:<anonymous id>


def erase_request(request: str, key: str) -> tuple[bytes, bytes]:
    """The control record (key, value) of an erasure request."""
    return key.encode(), orjson.dumps({"v": VERSION, "kind": "erase", "request": request, "key": key})


def parse(value: bytes | None) -> EraseRequest | dict[str, Any] | None:
    """A control record: an erase request, a report (a dict), or None if it is neither
    (unreadable, or of a newer version: left for the worker that understands it)."""
    try:
        data = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("v") != VERSION:
        return None
    if data.get("kind") == "report" and isinstance(data.get("request"), str):
        return data
    request, key = data.get("request"), data.get("key")
    if data.get("kind") == "erase" and isinstance(request, str) and isinstance(key, str) and key:
        return EraseRequest(request, key)
    return None


def report_value(
    part: ErasurePart,
    worker: str,
    rows_removed: Mapping[str, int] | None = None,
    rows_left: Mapping[str, int] | None = None,
    linked_ids: int = 0,
    error: str | None = None,
) -> bytes:
    """The report of one part of an erasure (no id in it: the key only as a SHA-256)."""
    return orjson.dumps(
        {
            "v": VERSION,
            "kind": "report",
            "request": part.request,
            "part": part.part,
            "key_sha256": hashlib.sha256(part.key.encode()).hexdigest(),
            "primary": part.primary,
            "existed": part.existed,
            "items_dropped": part.items_dropped,
            "expect": part.expect,
            "rows_removed": dict(rows_removed or {}),
            "rows_left": dict(rows_left or {}),
            "linked_ids": linked_ids,
            "worker": worker,
            "error": error,
        }
    )


class ControlProcessor:
    """Reads the control partitions this worker owns: each erase request goes on to the
    journey-stage partition of its key. Stateless, so its offsets commit as read."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.ignored = 0  # records that are no request (reports, unreadable)
        self._partition_of = Partitioner(topology.partitions)

    def process(self, records: Sequence[Record], effects: Effects) -> None:
        outbox = Outbox()
        for record in records:
            message = parse(record.value)
            if isinstance(message, EraseRequest):
                partition = self._partition_of(message.key)
                outbox.add(self.topology.by_customer, partition, Erase(message.key, message.request, True))
            else:
                self.ignored += 1
        outbox.flush_to(effects)


def cascade(part_key: str, request: str, linked: Sequence[str], topology: Topology, effects: Effects) -> int:
    """The primary's cascade: erase the anonymous keys merged into `part_key` (their state on
    the journey stage) and, for each anonymous id (the request's own, for a visitor), its
    login links on the identity stage. Returns how many parts were asked for."""
    partition_of = Partitioner(topology.partitions)
    outbox = Outbox()
    asked = 0
    anonymous_keys = [key for key in linked if key.startswith(ANONYMOUS_PREFIX)]
    for key in anonymous_keys:
        outbox.add(topology.by_customer, partition_of(key), Erase(key, request, False))
        asked += 1
    if part_key.startswith(ANONYMOUS_PREFIX):
        anonymous_keys.append(part_key)
    for key in anonymous_keys:
        anonymous_id = key[len(ANONYMOUS_PREFIX) :]
        outbox.add(topology.by_device, partition_of(anonymous_id), Erase(anonymous_id, request, False))
        asked += 1
    outbox.flush_to(effects)
    return asked


def control_record(topic: str, part: ErasurePart, value: bytes) -> OutputRecord:
    """A report travels keyed by its request id (any partition: the command reads them all)."""
    return OutputRecord(topic, part.request.encode(), value)
