"""Event-time ordering: a reorder buffer released by an aligned watermark.

A stage that receives items from several upstream partitions (sources) keeps, per source,
the highest watermark that source announced; its own watermark is the minimum over all
expected sources (as stream processors do after a re-keying shuffle). Items are released
in (time, arrival) order once time <= watermark; an item that arrives with time < watermark
is late: it is handed out at once, flagged, and applied best-effort (SPEC §2 "Time").

Everything is integer milliseconds; no clock is read here.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

NEVER = -(2**62)  # watermark before anything was announced


class Timeline(Generic[T]):
    """Reorder buffer + aligned watermark for one partition of one stage."""

    def __init__(self, sources: Iterable[str]) -> None:
        self._marks: dict[str, int] = {source: NEVER for source in sources}
        if not self._marks:
            raise ValueError("a timeline needs at least one source")
        # (time, arrival seq, item): tuples compare in C, and seq is unique so items never do
        self._heap: list[tuple[int, int, T]] = []
        self._seq = 0
        self.watermark = NEVER

    def __len__(self) -> int:
        return len(self._heap)

    def observe(self, source: str, watermark: int) -> bool:
        """Record a source's watermark (they only move forward); True if ours advanced."""
        previous = self._marks.get(source, NEVER)
        if watermark <= previous:
            return False
        self._marks[source] = watermark
        if previous > self.watermark:
            return False  # another source holds the aligned watermark back
        aligned = min(self._marks.values())
        if aligned > self.watermark:
            self.watermark = aligned
            return True
        return False

    def push(self, time: int, item: T) -> bool:
        """Buffer an item; returns False if it is late (time < watermark) and was not buffered."""
        if time < self.watermark:
            return False
        self._seq += 1
        heapq.heappush(self._heap, (time, self._seq, item))
        return True

    def release(self) -> list[tuple[int, T]]:
        """Every buffered item with time <= watermark, in (time, arrival) order."""
        released: list[tuple[int, T]] = []
        heap, watermark, pop = self._heap, self.watermark, heapq.heappop
        while heap and heap[0][0] <= watermark:
            time, _, item = pop(heap)
            released.append((time, item))
        return released

    def pending(self) -> list[T]:
        """Items still buffered (not yet released), in no particular order."""
        return [entry[2] for entry in self._heap]

    def discard(self, unwanted: Callable[[T], bool]) -> int:
        """Drop the buffered items `unwanted` selects (an erasure); returns how many."""
        kept = [entry for entry in self._heap if not unwanted(entry[2])]
        dropped = len(self._heap) - len(kept)
        if dropped:
            heapq.heapify(kept)
            self._heap = kept
        return dropped


class SourceWatermark:
    """The watermark of one input partition: highest event time seen minus the allowed
    lateness, moved forward by the wall clock only when the caller says the partition is
    quiet (live mode)."""

    def __init__(self, allowed_lateness_ms: int) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self.max_seen = NEVER
        self.watermark = NEVER

    def see(self, time: int) -> bool:
        """An event time was read; True if the watermark advanced. Late times change nothing."""
        if time <= self.max_seen:
            return False
        self.max_seen = time
        return self._raise_to(time - self.allowed_lateness_ms)

    def quiet(self, now_ms: int) -> bool:
        """The partition has been quiet: let the wall clock move the watermark."""
        return self._raise_to(now_ms - self.allowed_lateness_ms)

    def is_late(self, time: int) -> bool:
        return time < self.watermark

    def _raise_to(self, candidate: int) -> bool:
        if candidate > self.watermark:
            self.watermark = candidate
            return True
        return False
