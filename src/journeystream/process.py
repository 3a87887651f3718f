"""Process-wide policy of the long-running commands (`worker`, `replay`)."""

from __future__ import annotations

import gc

GC_THRESHOLD = 50_000  # allocations between young collections (CPython's default: 700)


def tune_gc() -> None:
    """These processes hold many long-lived objects (customer states, KPI cells): with the
    default thresholds, the cyclic collector walks them every few thousand allocations
    (seen in profiles as pauses inside whatever allocated last)."""
    gc.set_threshold(GC_THRESHOLD, 50, 100)
