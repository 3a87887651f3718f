"""One function per irritant rule (SPEC §2). Each looks at the event being applied, its
resolved journey name and the customer's recent history, and says whether it fires."""

from __future__ import annotations

from typing import Any

from journeystream.core.config import RulesConfig
from journeystream.core.events import Event
from journeystream.core.facts import UNSPECIFIED

History = list[tuple[int, str, str]]  # (event time, resolved journey, event id)


def journeys_match(a: str, b: str) -> bool:
    """Journeys match when their resolved names are equal or either is `unspecified`."""
    return a in (b, UNSPECIFIED) or b == UNSPECIFIED


def is_inbound_assisted_contact(event: Event, config: RulesConfig) -> bool:
    return (
        event.type == "contact_start"
        and event.channel in config.kinds.assisted
        and event.attributes.get("direction", "inbound") == "inbound"
    )


def latest_match_within(
    history: History, time: int, journey: str, window_ms: int
) -> tuple[int, str, str] | None:
    """The most recent entry with 0 <= time - entry <= window on a matching journey."""
    for entry in reversed(history):
        gap = time - entry[0]
        if gap < 0:
            continue  # after this event (applied late): not "before it"
        if gap > window_ms:
            continue  # histories may be slightly out of order after merges; keep scanning
        if journeys_match(journey, entry[1]):
            return entry
    return None


def repeat_contact_after_web(
    event: Event, journey: str, digital: History, config: RulesConfig
) -> tuple[int, str, str] | None:
    """An inbound assisted contact after self-service digital use on a matching journey."""
    if not is_inbound_assisted_contact(event, config):
        return None
    return latest_match_within(digital, event.occurred_at, journey, config.web_to_contact_window_ms)


def repeat_contact(
    event: Event, journey: str, contacts: History, config: RulesConfig
) -> tuple[int, str, str] | None:
    """An inbound assisted contact after another one on a matching journey."""
    if not is_inbound_assisted_contact(event, config):
        return None
    return latest_match_within(contacts, event.occurred_at, journey, config.repeat_contact_window_ms)


def long_wait(event: Event, config: RulesConfig) -> dict[str, Any] | None:
    if event.type not in ("contact_answered", "contact_abandoned"):
        return None
    wait = event.attributes.get("wait_s")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > config.long_wait_s:
        return {"wait_s": wait, "threshold_s": config.long_wait_s}
    return None


def detractor(event: Event) -> dict[str, Any] | None:
    nps = event.attributes.get("nps") if event.type == "survey" else None
    if isinstance(nps, int | float) and not isinstance(nps, bool) and nps <= 6:
        return {"nps": nps}
    return None


def high_effort(event: Event) -> dict[str, Any] | None:
    ces = event.attributes.get("ces") if event.type == "survey" else None
    if isinstance(ces, int | float) and not isinstance(ces, bool) and ces >= 5:
        return {"ces": ces}
    return None


def effort_score(
    inbound_contacts: int,
    channel_switches: int,
    contacts_abandoned: int,
    long_waits: int,
    repeat_contacts: int,
    complaints: int,
    config: RulesConfig,
) -> int:
    weights = config.effort
    extra_inbound = inbound_contacts - 1 if inbound_contacts > 1 else 0  # max(0, ...) without a call
    return (
        weights.extra_inbound_contact * extra_inbound
        + weights.channel_switch * channel_switches
        + weights.contact_abandoned * contacts_abandoned
        + weights.long_wait * long_waits
        + weights.repeat_contact * repeat_contacts
        + weights.complaint * complaints
    )
