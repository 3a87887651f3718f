"""Which input offsets a keyed stage may let go of: not those whose items still wait in
its reorder buffer (a crash would lose them: the buffer is not stored)."""

from __future__ import annotations

from collections.abc import Iterable


class PendingOffsets:
    def __init__(self) -> None:
        self._origin: dict[int, int] = {}  # id(item) -> offset of the record that carried it

    def hold(self, item: object, offset: int) -> None:
        self._origin[id(item)] = offset

    def commit_point(self, still_buffered: Iterable[object], next_offset: int) -> int:
        """The offset to commit: the oldest record with an item still buffered, else the
        next offset to read. Forgets the items released since the last call."""
        origin = self._origin
        kept = {id(item): origin[id(item)] for item in still_buffered if id(item) in origin}
        self._origin = kept
        return min(min(kept.values()), next_offset) if kept else next_offset
