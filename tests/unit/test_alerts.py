"""Threshold alert rules (SPEC §4): validation messages, the lifecycle with `for` and
hysteresis, min_volume gating, below-rules, and the shipped example file."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from journeystream.core.alerts import (
    AlertBook,
    AlertState,
    Notification,
    Rule,
    alert_id,
    evaluate,
    load_rules,
    measure,
    parse_duration,
    rule_window,
    window_counts,
)
from journeystream.core.events import Event
from journeystream.core.facts import AppliedEvent, JourneyClosed
from journeystream.core.kpis import KpiAccumulator, KpiCounts
from journeystream.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "alerts.example.yaml"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000

VALID = """\
rules:
  - name: AbandonmentHigh
    metric: abandonment_rate
    filter: {journey: subscription, channel: web}
    window: 15m
    above: 0.35
    clear: 0.25
    min_volume: 20
    for: 5m
    severity: warning
    summary: "{value:.0%} abandoned on {journey}/{channel}/{segment} (threshold {threshold:.0%})"
"""


def one_rule(**fields: object) -> str:
    """A rules file with a single rule: a valid base with `fields` replaced (None drops)."""
    base: dict[str, object] = {
        "name": "Rule_1",
        "metric": "abandonment_rate",
        "window": "15m",
        "above": 0.35,
        "severity": "warning",
    }
    base.update(fields)
    lines = [f"    {key}: {value}" for key, value in base.items() if value is not None]
    return "rules:\n  -\n" + "\n".join(lines) + "\n"


def errors_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_rules(text, "alerts.yaml")
    return str(caught.value)


def rule(**changes: object) -> Rule:
    values: dict[str, object] = {
        "name": "AbandonmentHigh",
        "metric": "abandonment_rate",
        "op": "above",
        "threshold": 0.35,
        "clear": 0.25,
        "window_ms": 15 * MIN,
        "for_ms": 5 * MIN,
        "min_volume": 20,
        "severity": "warning",
        "summary": "{value:.2f} > {threshold}",
        "journey": "subscription",
    }
    values.update(changes)
    return Rule(**values)  # type: ignore[arg-type]


def run(
    r: Rule, steps: list[tuple[int, float | None, float | None]]
) -> tuple[AlertState, list[Notification]]:
    """Evaluate a sequence of (now_ms, value, denominator); return the last state and all notifications."""
    state = AlertState()
    sent: list[Notification] = []
    for now, value, denominator in steps:
        state, notes = evaluate(r, state, value, denominator, now)
        sent += notes
    return state, sent


# -- loading -------------------------------------------------------------------------------


def test_valid_rule_is_parsed() -> None:
    [r] = load_rules(VALID, "alerts.yaml")
    assert r == Rule(
        name="AbandonmentHigh",
        metric="abandonment_rate",
        op="above",
        threshold=0.35,
        clear=0.25,
        window_ms=15 * MIN,
        for_ms=5 * MIN,
        min_volume=20,
        severity="warning",
        summary="{value:.0%} abandoned on {journey}/{channel}/{segment} (threshold {threshold:.0%})",
        channel="web",
        journey="subscription",
        segment=None,
    )
    assert r.render_summary(0.4) == "40% abandoned on subscription/web/all (threshold 35%)"


def test_defaults() -> None:
    [r] = load_rules(one_rule(), "alerts.yaml")
    assert (r.clear, r.for_ms, r.min_volume, r.channel, r.journey, r.segment) == (
        0.35,
        0,
        0,
        None,
        None,
        None,
    )
    assert r.render_summary(0.5) == (
        "Rule_1: abandonment_rate is 0.5 (above 0.35) on channel all, journey all, segment all"
    )


def test_empty_rules_list_is_allowed() -> None:
    assert load_rules("rules: []\n", "alerts.yaml") == []


def test_example_file_validates() -> None:
    rules = load_rules(EXAMPLE.read_text(), str(EXAMPLE))
    assert len(rules) >= 5
    by_metric = {r.metric for r in rules}
    assert {"abandonment_rate", "failure_demand_rate", "contact_abandonment_rate", "nps"} <= by_metric
    nps = next(r for r in rules if r.metric == "nps")
    assert (nps.op, nps.threshold, nps.clear, nps.min_volume, nps.window_ms) == ("below", 0, 10, 30, 60 * MIN)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("rules: [\n", "not valid YAML"),
        ("- name: x\n", "expected a mapping with a 'rules' list"),
        ("rules: []\ngroups: []\n", "unknown top-level key 'groups'"),
        ("rules:\n  - just a string\n", "rule 1: expected a mapping of rule fields"),
    ],
)
def test_file_level_errors(text: str, needle: str) -> None:
    message = errors_of(text)
    assert "alerts.yaml" in message and needle in message


def test_duplicate_yaml_key_is_an_error() -> None:
    message = errors_of(one_rule() + "    above: 0.5\n")
    assert "duplicate key 'above'" in message and 'in "alerts.yaml", line 8' in message


def test_bad_name() -> None:
    message = errors_of(one_rule(name="'9lives'"))
    assert "alerts.yaml: rule 1 (9lives), field 'name'" in message
    assert "^[A-Za-z][A-Za-z0-9_]*$" in message


def test_missing_name() -> None:
    assert "rule 1, field 'name': expected a name" in errors_of(one_rule(name=None))


def test_duplicate_names() -> None:
    text = one_rule() + "  -\n" + one_rule().split("-\n", 1)[1]
    assert "rule 2 (Rule_1), field 'name': duplicate of rule 1" in errors_of(text)


def test_unknown_metric_lists_known_ones() -> None:
    message = errors_of(one_rule(metric="abandon_rate"))
    assert "field 'metric'" in message and "abandonment_rate" in message and "'abandon_rate'" in message


def test_customers_is_not_an_alert_metric() -> None:
    assert "field 'metric'" in errors_of(one_rule(metric="customers"))


def test_both_above_and_below() -> None:
    assert "field 'above/below': expected exactly one of 'above' or 'below', got both" in errors_of(
        one_rule(below=0.1)
    )


def test_neither_above_nor_below() -> None:
    assert "field 'above/below'" in errors_of(one_rule(above=None))


@pytest.mark.parametrize("bad", ["high", "true", ".nan", "[1]"])
def test_threshold_must_be_a_finite_number(bad: str) -> None:
    assert "field 'above': expected a finite number" in errors_of(one_rule(above=bad))


def test_clear_above_the_above_threshold() -> None:
    assert "field 'clear': must be <= above (0.35)" in errors_of(one_rule(clear=0.4))


def test_clear_below_the_below_threshold() -> None:
    assert "field 'clear': must be >= below (0)" in errors_of(
        one_rule(metric="nps", above=None, below=0, clear=-5)
    )


@pytest.mark.parametrize("bad", ["90s", "30s", "0m", "2d", "25h", "5 minutes", "15", "m"])
def test_window_must_be_whole_minutes_within_a_day(bad: str) -> None:
    message = errors_of(one_rule(window=f"'{bad}'"))
    assert "field 'window': expected a whole number of minutes between 1m and 1d" in message


def test_window_must_be_a_string() -> None:
    assert "field 'window'" in errors_of(one_rule(window=15))


def test_bad_for() -> None:
    assert "field 'for': expected a duration between 0s and 1d" in errors_of(one_rule(**{"for": "soon"}))


@pytest.mark.parametrize("bad", ["-1", "2.5", "true", "lots"])
def test_min_volume_must_be_a_non_negative_integer(bad: str) -> None:
    assert "field 'min_volume': expected an integer >= 0" in errors_of(one_rule(min_volume=bad))


def test_min_volume_on_a_counter() -> None:
    message = errors_of(one_rule(metric="irritant_complaint", min_volume=5))
    assert "field 'min_volume': applies to a rate's denominator; irritant_complaint is a counter" in message


def test_bad_severity() -> None:
    assert "field 'severity': expected one of info, warning, critical; got 'high'" in errors_of(
        one_rule(severity="high")
    )


def test_filter_must_be_a_mapping() -> None:
    assert "field 'filter': expected a mapping" in errors_of(one_rule(filter="web"))


def test_unknown_filter_key() -> None:
    assert "field 'filter.agent'" in errors_of(one_rule(filter="{agent: a1}"))


def test_bad_filter_channel() -> None:
    assert "field 'filter.channel': expected one of web," in errors_of(one_rule(filter="{channel: fax}"))


@pytest.mark.parametrize("bad", ["Bad-Name", "all", "''"])
def test_bad_filter_journey(bad: str) -> None:
    assert "field 'filter.journey'" in errors_of(one_rule(filter=f"{{journey: {bad}}}"))


@pytest.mark.parametrize("bad", ["''", "all", "42"])
def test_bad_filter_segment(bad: str) -> None:
    assert "field 'filter.segment'" in errors_of(one_rule(filter=f"{{segment: {bad}}}"))


@pytest.mark.parametrize("bad", ["'{rate} is high'", "'{} is high'", "'{value:zz}'", "42", "''"])
def test_bad_summary(bad: str) -> None:
    assert "field 'summary'" in errors_of(one_rule(summary=bad))


def test_unknown_rule_key() -> None:
    message = errors_of(one_rule(threshold=0.3))
    assert "rule 1 (Rule_1), field 'threshold': unknown key; expected one of" in message


def test_all_errors_are_reported_together() -> None:
    text = one_rule(severity="high") + "  -\n" + one_rule(name="Other", window="'90s'").split("-\n", 1)[1]
    message = errors_of(text)
    assert message.startswith("alerts.yaml: 2 error(s) in alert rules:")
    assert "alerts.yaml: rule 1 (Rule_1), field 'severity'" in message
    assert "alerts.yaml: rule 2 (Other), field 'window'" in message


@pytest.mark.parametrize(
    ("text", "ms"),
    [("0", 0), ("0s", 0), ("90s", 90_000), ("15m", 15 * MIN), ("1h30m", 90 * MIN), ("1d", 1440 * MIN)],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "5", "1m1h", "1.5h", "-5m", "5M"])
def test_parse_duration_refuses(text: str) -> None:
    assert parse_duration(text) is None


# -- windows and measuring -----------------------------------------------------------------


def test_rule_window_uses_complete_minutes() -> None:
    r = rule()
    assert rule_window(r, T0 + 15 * MIN + 30_000) == (T0, T0 + 15 * MIN)
    assert rule_window(r, T0 + 15 * MIN) == (T0, T0 + 15 * MIN)


def test_measure_rolls_up_the_window_and_filter() -> None:
    accumulator = KpiAccumulator()
    for n, (status, at) in enumerate(
        [
            ("abandoned", T0 - 1),  # before the window
            ("abandoned", T0),
            ("completed", T0 + 5 * MIN),
            ("cancelled", T0 + 14 * MIN + 59_999),
            ("abandoned", T0 + 15 * MIN),  # the current, incomplete minute
        ]
    ):
        accumulator.add(JourneyClosed(f"j{n}", "subscription", "std", "web", status, at, 1, 0))
    accumulator.add(JourneyClosed("k", "claim", "std", "web", "abandoned", T0, 1, 0))  # other journey
    value, denominator = measure(rule(), accumulator.cells(), T0 + 15 * MIN + 10_000)
    assert value == pytest.approx(1 / 3)  # 1 abandoned of 3 decided, in [T0, T0 + 15m)
    assert denominator == 3


def test_measure_counter_has_no_denominator() -> None:
    accumulator = KpiAccumulator()
    event = Event("e1", T0, "web", "page_view", customer_id="C1")
    accumulator.add(AppliedEvent(event, "C1", "j", "subscription", "std"))
    assert measure(rule(metric="events", min_volume=0), accumulator.cells(), T0 + MIN) == (1.0, None)


# -- lifecycle -----------------------------------------------------------------------------


def test_inactive_pending_firing_resolved() -> None:
    r = rule()
    state, notes = evaluate(r, AlertState(), 0.4, 30, T0)
    assert (state, notes) == (AlertState("pending", T0, 0.4), [])
    state, notes = evaluate(r, state, 0.5, 30, T0 + 4 * MIN)
    assert (state, notes) == (AlertState("pending", T0, 0.5), [])
    state, notes = evaluate(r, state, 0.45, 30, T0 + 5 * MIN)
    assert state == AlertState("firing", T0 + 5 * MIN, 0.45)
    assert notes == [
        Notification(
            rule="AbandonmentHigh",
            severity="warning",
            status="firing",
            value=0.45,
            threshold=0.35,
            labels={
                "alertname": "AbandonmentHigh",
                "severity": "warning",
                "channel": "all",
                "journey": "subscription",
                "segment": "all",
            },
            summary="0.45 > 0.35",
            starts_at=T0 + 5 * MIN,
        )
    ]
    assert notes[0].annotations() == {"summary": "0.45 > 0.35", "value": "0.45", "threshold": "0.35"}
    state, notes = evaluate(r, state, 0.3, 30, T0 + 6 * MIN)  # between clear and threshold
    assert (state.status, notes) == ("firing", [])
    state, notes = evaluate(r, state, 0.25, 30, T0 + 7 * MIN)  # at clear: resolves
    assert state == AlertState("inactive", None, 0.25)
    assert [(n.status, n.value, n.starts_at, n.ends_at) for n in notes] == [
        ("resolved", 0.25, T0 + 5 * MIN, T0 + 7 * MIN)
    ]


def test_for_fires_exactly_at_the_bound() -> None:
    r = rule()
    state, _ = evaluate(r, AlertState(), 0.4, 30, T0)
    state, notes = evaluate(r, state, 0.4, 30, T0 + 5 * MIN - 1)
    assert (state.status, notes) == ("pending", [])
    state, notes = evaluate(r, state, 0.4, 30, T0 + 5 * MIN)
    assert state.status == "firing" and [n.status for n in notes] == ["firing"]


def test_zero_for_fires_on_first_breach() -> None:
    state, notes = evaluate(rule(for_ms=0), AlertState(), 0.36, 20, T0)
    assert state == AlertState("firing", T0, 0.36) and [n.status for n in notes] == ["firing"]


def test_threshold_itself_is_not_a_breach() -> None:
    state, notes = evaluate(rule(for_ms=0), AlertState(), 0.35, 100, T0)
    assert (state.status, notes) == ("inactive", [])


def test_pending_breach_that_stops_goes_back_silently_and_restarts_the_clock() -> None:
    r = rule()
    state, sent = run(r, [(T0, 0.4, 30), (T0 + MIN, 0.34, 30)])
    assert (state.status, sent) == ("inactive", [])
    state, sent = run(
        r, [(T0, 0.4, 30), (T0 + MIN, 0.34, 30), (T0 + 2 * MIN, 0.4, 30), (T0 + 6 * MIN, 0.4, 30)]
    )
    assert (state, sent) == (AlertState("pending", T0 + 2 * MIN, 0.4), [])


def test_hysteresis_notifies_once_while_oscillating_around_the_threshold() -> None:
    values = [0.4, 0.34, 0.36, 0.30, 0.5, 0.26, 0.36, 0.34, 0.2, 0.3, 0.34]
    state, sent = run(rule(for_ms=0), [(T0 + i * MIN, v, 50) for i, v in enumerate(values)])
    assert [(n.status, n.value, n.starts_at, n.ends_at) for n in sent] == [
        ("firing", 0.4, T0, None),
        ("resolved", 0.2, T0, T0 + 8 * MIN),
    ]
    assert state.status == "inactive"


def test_min_volume_blocks_new_alerts() -> None:
    r = rule(for_ms=0)
    assert run(r, [(T0, 0.9, 19)]) == (AlertState("inactive", None, 0.9), [])
    state, sent = run(r, [(T0, 0.9, 20)])  # the floor itself is enough volume
    assert state.status == "firing" and len(sent) == 1


def test_low_volume_or_missing_value_sends_a_pending_alert_back() -> None:
    assert run(rule(), [(T0, 0.9, 30), (T0 + MIN, 0.9, 5)])[0].status == "inactive"
    assert run(rule(), [(T0, 0.9, 30), (T0 + MIN, None, 0)])[0].status == "inactive"


def test_low_volume_or_missing_value_keeps_a_firing_alert_firing() -> None:
    steps: list[tuple[int, float | None, float | None]] = [
        (T0, 0.9, 30),
        (T0 + 5 * MIN, 0.9, 30),
        (T0 + 6 * MIN, 0.0, 3),  # looks clear, but on 3 journeys: not trusted
        (T0 + 7 * MIN, None, 0),  # no data at all
    ]
    state, sent = run(rule(), steps)
    assert state == AlertState("firing", T0 + 5 * MIN, 0.9)
    assert [n.status for n in sent] == ["firing"]
    state, notes = evaluate(rule(), state, 0.1, 25, T0 + 8 * MIN)
    assert [(n.status, n.starts_at, n.ends_at) for n in notes] == [("resolved", T0 + 5 * MIN, T0 + 8 * MIN)]


def test_below_rule() -> None:
    r = rule(metric="nps", op="below", threshold=0.0, clear=10.0, for_ms=0, min_volume=30, journey=None)
    values = [5.0, -5.0, 0.0, 5.0, -20.0, 9.9, 10.0, 3.0]
    state, sent = run(r, [(T0 + i * MIN, v, 40) for i, v in enumerate(values)])
    assert [(n.status, n.value) for n in sent] == [("firing", -5.0), ("resolved", 10.0)]
    assert state.status == "inactive"
    assert sent[0].labels["journey"] == "all"


def test_counter_rule_ignores_denominator() -> None:
    r = rule(metric="irritant_complaint", threshold=10.0, clear=5.0, min_volume=0, for_ms=0)
    _, sent = run(r, [(T0, 12.0, None), (T0 + MIN, 4.0, None)])
    assert [n.status for n in sent] == ["firing", "resolved"]


steps_strategy = st.lists(
    st.tuples(
        st.integers(0, 3 * MIN),  # time step
        st.one_of(st.none(), st.floats(-50, 50, allow_nan=False)),
        st.one_of(st.none(), st.integers(0, 40)),
    ),
    max_size=60,
)


@given(
    steps_strategy,
    st.sampled_from(["above", "below"]),
    st.floats(-10, 10, allow_nan=False),
    st.floats(0, 20, allow_nan=False),
    st.integers(0, 10 * MIN),
    st.integers(0, 30),
)
def test_notifications_alternate_firing_then_resolved(
    steps: list[tuple[int, float | None, int | None]],
    op: str,
    threshold: float,
    band: float,
    for_ms: int,
    min_volume: int,
) -> None:
    clear = threshold - band if op == "above" else threshold + band
    r = rule(op=op, threshold=threshold, clear=clear, for_ms=for_ms, min_volume=min_volume)
    state, now, sent = AlertState(), T0, []
    for step, value, denominator in steps:
        now += step
        state, notes = evaluate(r, state, value, None if denominator is None else float(denominator), now)
        assert len(notes) <= 1
        if notes:
            assert (notes[0].status == "firing") == (state.status == "firing")
        sent += notes
    assert [n.status for n in sent] == ["firing", "resolved"] * (len(sent) // 2) + ["firing"] * (
        len(sent) % 2
    )
    for fired, resolved in zip(sent[::2], sent[1::2], strict=False):
        assert resolved.starts_at == fired.starts_at
        assert resolved.ends_at is not None and resolved.ends_at >= fired.starts_at


def test_duplicate_name_reported_even_when_the_rule_has_other_errors() -> None:
    text = one_rule() + "  -\n" + one_rule(severity="high").split("-\n", 1)[1]
    message = errors_of(text)
    assert "rule 2 (Rule_1), field 'name': duplicate of rule 1" in message
    assert "rule 2 (Rule_1), field 'severity'" in message


# -- the rule book, stepped minute by minute ----------------------------------------------

BOOK_RULES = """
rules:
  - name: Abandon
    metric: abandonment_rate
    filter: {journey: claim}
    window: 3m
    above: 0.5
    clear: 0.3
    min_volume: 4
    for: 1m
    severity: critical
"""
M = 60_000
B0 = 1_767_225_600_000  # a minute boundary


def minute_counts(completed: int, abandoned: int) -> KpiCounts:
    return KpiCounts(journeys_completed=completed, journeys_abandoned=abandoned)


def test_window_counts_sums_the_minutes_before_the_boundary_only() -> None:
    (rule,) = load_rules(BOOK_RULES, "t")
    minutes = {B0 - 4 * M: minute_counts(9, 9), B0 - 3 * M: minute_counts(1, 0), B0 - M: minute_counts(2, 3)}
    minutes[B0] = minute_counts(5, 5)  # the boundary's own minute is still filling up
    total = window_counts(minutes, rule, B0)
    assert (total.journeys_completed, total.journeys_abandoned) == (3, 3)


def test_book_fires_once_after_for_and_resolves_once_below_clear() -> None:
    book = AlertBook(load_rules(BOOK_RULES, "t"))
    # per minute (completed, abandoned); minutes 3, 4 and 5 are the spike. The rate over the
    # 3 minutes before each boundary, by hand: boundary 3: 0/6 = 0 -> inactive
    series = [(2, 0), (2, 0), (2, 0), (0, 4), (0, 4), (0, 4), (2, 0), (2, 0), (2, 0), (2, 0)]
    minutes = {B0 + i * M: minute_counts(c, a) for i, (c, a) in enumerate(series)}
    sent = []
    for i in range(3, 11):
        for evaluation in book.step(B0 + i * M, {"Abandon": minutes}):
            sent += [(n.status, i, round(n.value, 3)) for n in evaluation.notifications]
    # boundary 4: window minutes 1..3 = (4 completed, 4 abandoned) -> 0.5, not above
    # boundary 5: minutes 2..4 -> 8/10 = 0.8 -> pending; boundary 6: 12/12 = 1.0 -> firing
    # boundary 7: 8/10 = 0.8; 8: 4/8 = 0.5 (above clear, stays); 9: 0/6 = 0 -> resolved
    assert sent == [("firing", 6, 1.0), ("resolved", 9, 0.0)]
    assert book.evaluated_until == B0 + 10 * M


def test_book_due_starts_at_the_watermark_then_continues_in_order() -> None:
    book = AlertBook(load_rules(BOOK_RULES, "t"))
    # a new book looks back the widest window plus the longest `for` (3 + 1 minutes), no more
    assert book.lookback_ms() == 4 * M
    assert book.due(B0 + 30_000, limit=10) == [B0 - 4 * M, B0 - 3 * M, B0 - 2 * M, B0 - M, B0]
    book.step(B0, {})
    assert book.due(B0 + 3 * M + 1, limit=10) == [B0 + M, B0 + 2 * M, B0 + 3 * M]
    assert book.due(B0 + 3 * M + 1, limit=2) == [B0 + M, B0 + 2 * M]
    assert book.span([B0 + M, B0 + 2 * M]) == (B0 + M - 3 * M, B0 + 2 * M)


def test_book_carries_on_from_saved_states() -> None:
    (rule,) = load_rules(BOOK_RULES, "t")
    firing = AlertState("firing", B0 - 5 * M, 0.9)
    book = AlertBook([rule], {"Abandon": firing, "Gone": AlertState("pending", B0, 1.0)}, B0)
    assert list(book.states) == ["Abandon"]  # a rule removed from the file is dropped
    assert book.due(B0 + M, limit=5) == [B0 + M]
    (evaluation,) = book.step(B0 + M, {"Abandon": {B0: minute_counts(4, 0)}})
    assert [n.status for n in evaluation.notifications] == ["resolved"]
    assert evaluation.notifications[0].starts_at == B0 - 5 * M
    assert alert_id("Abandon", B0 - 5 * M) == f"Abandon:{B0 - 5 * M}"
