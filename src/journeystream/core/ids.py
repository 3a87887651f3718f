"""Deterministic identifiers: the same input gives the same id across replays and restarts."""

from __future__ import annotations

import hashlib


def stable_id(*parts: str) -> str:
    """A 32-hex-digit id derived from its parts (unit separator between them)."""
    return hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()


def journey_id(customer_key: str, journey: str, first_event_id: str) -> str:
    """Id of the journey opened for (customer key, journey name) by its first event."""
    return stable_id("journey", customer_key, journey, first_event_id)


def irritant_id(kind: str, trigger: str) -> str:
    """Id of an irritant; `trigger` is the triggering event id, or the journey id for
    irritants raised by a journey closing (abandonment)."""
    return stable_id("irritant", kind, trigger)
