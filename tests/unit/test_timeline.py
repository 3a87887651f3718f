"""Event-time ordering (SPEC §2 "Time"): the reorder buffer with its aligned watermark, and
the per-partition source watermark (highest time seen minus the allowed lateness)."""

from __future__ import annotations

import pytest

from journeystream.core.timeline import NEVER, SourceWatermark, Timeline


def test_a_timeline_needs_a_source() -> None:
    with pytest.raises(ValueError):
        Timeline([])


def test_watermark_is_the_minimum_over_all_sources() -> None:
    timeline: Timeline[str] = Timeline(["a", "b"])
    assert timeline.watermark == NEVER
    # one source alone does not move the aligned watermark: b has announced nothing yet
    assert timeline.observe("a", 100) is False
    assert timeline.watermark == NEVER
    assert timeline.observe("b", 50) is True
    assert timeline.watermark == 50
    assert timeline.observe("b", 150) is True
    assert timeline.watermark == 100  # min(a=100, b=150)
    assert timeline.observe("a", 300) is True
    assert timeline.watermark == 150  # min(a=300, b=150)


def test_watermark_only_moves_forward() -> None:
    timeline: Timeline[str] = Timeline(["a", "b"])
    timeline.observe("a", 100)
    timeline.observe("b", 100)
    assert timeline.watermark == 100
    # a source going backwards is ignored: its mark stays at 100
    assert timeline.observe("a", 80) is False
    assert timeline.watermark == 100
    assert timeline.observe("b", 120) is False  # min(a=100, b=120) = 100: no advance
    assert timeline.watermark == 100
    assert timeline.observe("a", 110) is True
    assert timeline.watermark == 110
    # announcing the same value again changes nothing
    assert timeline.observe("a", 110) is False


def test_release_in_time_then_arrival_order() -> None:
    timeline: Timeline[str] = Timeline(["a"])
    for time, item in [(30, "c"), (10, "x1"), (20, "b"), (10, "x2"), (10, "x3"), (20, "b2")]:
        assert timeline.push(time, item) is True
    assert len(timeline) == 6
    assert timeline.release() == []  # nothing is due before a watermark is announced
    timeline.observe("a", 20)
    assert timeline.release() == [(10, "x1"), (10, "x2"), (10, "x3"), (20, "b"), (20, "b2")]
    assert len(timeline) == 1
    assert timeline.pending() == ["c"]
    assert timeline.release() == []
    timeline.observe("a", 29)
    assert timeline.release() == []
    timeline.observe("a", 30)
    assert timeline.release() == [(30, "c")]
    assert len(timeline) == 0


def test_an_item_at_the_watermark_is_in_time_one_before_it_is_late() -> None:
    timeline: Timeline[str] = Timeline(["a"])
    timeline.observe("a", 1_000)
    assert timeline.push(1_000, "on time") is True
    assert timeline.push(999, "late") is False  # not buffered: the caller applies it at once
    assert timeline.pending() == ["on time"]
    assert timeline.release() == [(1_000, "on time")]


def test_items_released_only_when_every_source_has_passed_them() -> None:
    timeline: Timeline[str] = Timeline(["a", "b"])
    timeline.push(50, "x")
    timeline.observe("a", 100)
    assert timeline.release() == []
    timeline.observe("b", 49)
    assert timeline.release() == []
    timeline.observe("b", 50)
    assert timeline.release() == [(50, "x")]


def test_source_watermark_is_highest_time_seen_minus_allowed_lateness() -> None:
    source = SourceWatermark(5_000)
    assert source.watermark == NEVER
    assert source.see(10_000) is True
    assert source.watermark == 5_000
    assert source.see(9_000) is False  # older than the highest seen: no change
    assert source.watermark == 5_000
    assert source.max_seen == 10_000
    assert source.is_late(4_999) is True
    assert source.is_late(5_000) is False  # exactly the allowed lateness is still in time
    assert source.see(12_000) is True
    assert source.watermark == 7_000


def test_source_watermark_moves_with_the_wall_clock_only_when_told_quiet() -> None:
    source = SourceWatermark(5_000)
    source.see(12_000)
    assert source.quiet(8_000) is False  # 3_000 < 7_000: never backwards
    assert source.watermark == 7_000
    assert source.quiet(20_000) is True
    assert source.watermark == 15_000
    # an event older than the clock-driven watermark does not pull it back
    assert source.see(16_000) is False
    assert source.watermark == 15_000
    assert source.max_seen == 16_000
    assert source.see(21_000) is True
    assert source.watermark == 16_000
