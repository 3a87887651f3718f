"""Pseudonymised ids: keyed hashes that stand for customer, anonymous, session and agent ids.

With a secret key (JOURNEYSTREAM_PSEUDONYM_KEY_FILE) stage A replaces those four fields of
every valid event by `token(id)` before the event is stored, forwarded or logged, so no raw
id goes further than the decoder. A token is `ps_` + the first 16 bytes of
HMAC-SHA256(key, id as UTF-8) in lower-case base32 (26 characters): stable for a key (the
same id always gives the same token, on every worker and in `replay`), not reversible
without the key, and recognisable (`is_token`), so commands that take an id (`erase`) accept
either form.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from typing import Final

from msgspec.structs import replace

from journeystream.core.events import Event

TOKEN_PREFIX: Final = "ps_"
TOKEN_BYTES: Final = 16
MIN_KEY_BYTES: Final = 16
_TOKEN = re.compile(rf"{TOKEN_PREFIX}[a-z2-7]{{26}}")


def is_token(text: str) -> bool:
    """Whether `text` has the form of a token (the key is not needed to tell)."""
    return _TOKEN.fullmatch(text) is not None


class Pseudonyms:
    """Tokens under one secret key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the key must hold at least {MIN_KEY_BYTES} bytes")
        self._key = key

    def __repr__(self) -> str:
        return "Pseudonyms(key=***)"

    def token_of_bytes(self, raw: bytes) -> str:
        digest = hmac.new(self._key, raw, hashlib.sha256).digest()[:TOKEN_BYTES]
        return TOKEN_PREFIX + base64.b32encode(digest).decode("ascii").rstrip("=").lower()

    def token(self, raw: str) -> str:
        return self.token_of_bytes(raw.encode("utf-8"))

    def token_or_same(self, text: str) -> str:
        """`text` if it already is a token (a supervisor pasted one), else its token."""
        return text if is_token(text) else self.token(text)

    def optional(self, raw: str | None) -> str | None:
        return None if raw is None else self.token(raw)

    def event(self, event: Event) -> Event:
        """The event with customer_id, anonymous_id, session_id and agent_id pseudonymised."""
        return replace(
            event,
            customer_id=self.optional(event.customer_id),
            anonymous_id=self.optional(event.anonymous_id),
            session_id=self.optional(event.session_id),
            agent_id=self.optional(event.agent_id),
        )
