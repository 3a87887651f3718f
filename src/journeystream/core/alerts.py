"""Threshold alert rules on KPIs (SPEC §4): a YAML rules file validated into frozen rules, and
their pure lifecycle (inactive → pending → firing → resolved) with hysteresis.

Rules file layout:

    rules:
      - name: JourneyAbandonmentHigh
        metric: abandonment_rate          # a key of kpis.METRICS
        filter: {journey: subscription}   # optional: channel / journey / segment
        window: 15m                       # rolling window of whole minutes, 1m..1d
        above: 0.35                       # or `below`, exactly one
        clear: 0.25                       # optional, default = the threshold
        min_volume: 20                    # optional, floor on the rate's denominator
        for: 5m                           # optional, default 0s
        severity: warning                 # info | warning | critical
        summary: "Abandonment {value:.0%} on {journey}"   # optional

Pure: no clock, no I/O. The caller passes `now_ms` and the measured value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal

import yaml

from journeystream.core.events import CHANNELS
from journeystream.core.kpis import METRICS, CellKey, KpiCounts, minute_of, rollup
from journeystream.core.kpis import init as init_counts
from journeystream.core.kpis import merge as merge_counts
from journeystream.errors import ConfigError

Status = Literal["inactive", "pending", "firing"]
Op = Literal["above", "below"]

SEVERITIES: Final = ("info", "warning", "critical")
ALL: Final = "all"
"""Label value (and summary placeholder value) of a dimension the rule does not filter on.
Chosen over an empty string so grouping, inhibition and messages read "channel=all"."""

MINUTE_MS: Final = 60_000
DAY_MS: Final = 86_400_000
_NAME_RE: Final = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_JOURNEY_RE: Final = re.compile(r"[a-z0-9_]{1,64}")
_DURATION_RE: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_UNIT_MS: Final = (DAY_MS, 3_600_000, MINUTE_MS, 1000)
_RULE_KEYS: Final = frozenset(
    {
        "name",
        "metric",
        "filter",
        "window",
        "above",
        "below",
        "clear",
        "min_volume",
        "for",
        "severity",
        "summary",
    }
)
_FILTER_KEYS: Final = ("channel", "journey", "segment")
_PLACEHOLDERS: Final = {"value": 0.0, "threshold": 0.0, "channel": ALL, "journey": ALL, "segment": ALL}


@dataclass(frozen=True, slots=True)
class Rule:
    """One validated alert rule. Durations are in milliseconds; filters None = any."""

    name: str
    metric: str
    op: Op
    threshold: float
    clear: float
    window_ms: int
    for_ms: int
    min_volume: int
    severity: str
    summary: str
    channel: str | None = None
    journey: str | None = None
    segment: str | None = None

    def labels(self) -> dict[str, str]:
        """Alertmanager labels: alertname, severity and the three dimensions."""
        return {
            "alertname": self.name,
            "severity": self.severity,
            "channel": self.channel or ALL,
            "journey": self.journey or ALL,
            "segment": self.segment or ALL,
        }

    def render_summary(self, value: float) -> str:
        dims = {k: v for k, v in self.labels().items() if k in _FILTER_KEYS}
        return self.summary.format(value=value, threshold=self.threshold, **dims)


# -- loading and validation ----------------------------------------------------------------


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_rules(text: str, source: str) -> list[Rule]:
    """Parse and validate a rules file. Raises ConfigError listing every problem found, each
    naming the file, the rule (1-based index and name) and the field."""
    loader = _UniqueKeyLoader(text)
    loader.name = source  # YAML error marks then name the file, not "<unicode string>"
    try:
        doc = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise ConfigError(f"{source}: expected a mapping with a 'rules' list at the top level")
    errors = [
        f"{source}: unknown top-level key {key!r}; expected only 'rules'" for key in doc if key != "rules"
    ]
    rules: list[Rule] = []
    first_index: dict[str, int] = {}
    for index, raw in enumerate(doc["rules"], start=1):
        checker = _RuleChecker(source, index, raw)
        rule = checker.check()
        name = checker.raw.get("name")
        if isinstance(name, str) and name in first_index:
            checker.fail("name", f"duplicate of rule {first_index[name]}; names must be unique")
        elif isinstance(name, str):
            first_index[name] = index
        errors += checker.errors
        if rule is not None:
            rules.append(rule)
    if errors:
        raise ConfigError(
            f"{source}: {len(errors)} error(s) in alert rules:\n" + "\n".join(f"  - {e}" for e in errors)
        )
    return rules


class _RuleChecker:
    """Validates one raw rule, collecting every error rather than stopping at the first."""

    def __init__(self, source: str, index: int, raw: object) -> None:
        self.source = source
        self.index = index
        self.raw: dict[Any, Any] = raw if isinstance(raw, dict) else {}
        name = self.raw.get("name")
        self.label = f"rule {index} ({name})" if isinstance(name, str) else f"rule {index}"
        self.errors: list[str] = []
        if not isinstance(raw, dict):
            self.errors.append(f"{source}: {self.label}: expected a mapping of rule fields, got {_kind(raw)}")

    def message(self, field_name: str, text: str) -> str:
        return f"{self.source}: {self.label}, field '{field_name}': {text}"

    def fail(self, field_name: str, text: str) -> None:
        self.errors.append(self.message(field_name, text))

    def check(self) -> Rule | None:
        if self.errors:
            return None
        for key in self.raw:
            if key not in _RULE_KEYS:
                self.fail(str(key), f"unknown key; expected one of {', '.join(sorted(_RULE_KEYS))}")
        name = self._name()
        metric = self._metric()
        op, threshold = self._threshold()
        clear = self._clear(op, threshold)
        window_ms = self._duration("window", required=True, low=MINUTE_MS, whole_minutes=True)
        for_ms = self._duration("for", required=False, low=0, whole_minutes=False)
        min_volume = self._min_volume(metric)
        severity = self._severity()
        channel, journey, segment = self._filter()
        summary = self._summary(name, metric, op)
        if (
            self.errors
            or name is None
            or metric is None
            or op is None
            or threshold is None
            or clear is None
            or window_ms is None
            or for_ms is None
            or severity is None
            or summary is None
        ):
            return None
        return Rule(
            name=name,
            metric=metric,
            op=op,
            threshold=threshold,
            clear=clear,
            window_ms=window_ms,
            for_ms=for_ms,
            min_volume=min_volume,
            severity=severity,
            summary=summary,
            channel=channel,
            journey=journey,
            segment=segment,
        )

    def _name(self) -> str | None:
        value = self.raw.get("name")
        if not isinstance(value, str) or _NAME_RE.fullmatch(value) is None:
            self.fail("name", f"expected a name matching ^[A-Za-z][A-Za-z0-9_]*$, got {_shown(value)}")
            return None
        return value

    def _metric(self) -> str | None:
        value = self.raw.get("metric")
        if not isinstance(value, str) or value not in METRICS:
            self.fail("metric", f"expected one of {', '.join(sorted(METRICS))}; got {_shown(value)}")
            return None
        return value

    def _threshold(self) -> tuple[Op | None, float | None]:
        present = [key for key in ("above", "below") if key in self.raw]
        if len(present) != 1:
            got = "both" if present else "neither"
            self.fail("above/below", f"expected exactly one of 'above' or 'below', got {got}")
            return None, None
        op: Op = "above" if present[0] == "above" else "below"
        return op, self._number(op)

    def _clear(self, op: Op | None, threshold: float | None) -> float | None:
        if "clear" not in self.raw:
            return threshold  # no hysteresis band: resolves as soon as the breach ends
        clear = self._number("clear")
        if clear is None or op is None or threshold is None:
            return None
        if op == "above" and clear > threshold:
            self.fail(
                "clear", f"must be <= above ({threshold:g}) so the alert clears below it, got {clear:g}"
            )
        if op == "below" and clear < threshold:
            self.fail(
                "clear", f"must be >= below ({threshold:g}) so the alert clears above it, got {clear:g}"
            )
        return clear

    def _number(self, key: str) -> float | None:
        value = self.raw.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(key, f"expected a finite number, got {_shown(value)}")
            return None
        return float(value)

    def _duration(self, key: str, required: bool, low: int, whole_minutes: bool) -> int | None:
        if key not in self.raw and not required:
            return 0
        value = self.raw.get(key)
        expected = "a duration between 0s and 1d such as '30s', '5m' or '1h30m'"
        if whole_minutes:
            expected = "a whole number of minutes between 1m and 1d, such as '15m' or '1h'"
        ms = parse_duration(value) if isinstance(value, str) else None
        if ms is None or ms < low or ms > DAY_MS or (whole_minutes and ms % MINUTE_MS):
            self.fail(key, f"expected {expected}; got {_shown(value)}")
            return None
        return ms

    def _min_volume(self, metric: str | None) -> int:
        value = self.raw.get("min_volume", 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail("min_volume", f"expected an integer >= 0, got {_shown(value)}")
            return 0
        if value and metric is not None and not METRICS[metric].is_rate:
            self.fail(
                "min_volume", f"applies to a rate's denominator; {metric} is a counter, omit it or use 0"
            )
        return value

    def _severity(self) -> str | None:
        value = self.raw.get("severity")
        if value not in SEVERITIES:
            self.fail("severity", f"expected one of {', '.join(SEVERITIES)}; got {_shown(value)}")
            return None
        return str(value)

    def _filter(self) -> tuple[str | None, str | None, str | None]:
        raw = self.raw.get("filter")
        if raw is None:
            return None, None, None
        if not isinstance(raw, dict):
            self.fail("filter", f"expected a mapping with channel / journey / segment, got {_kind(raw)}")
            return None, None, None
        for key in raw:
            if key not in _FILTER_KEYS:
                self.fail(f"filter.{key}", "unknown key; expected channel, journey or segment")
        return (
            self._channel(raw.get("channel")),
            self._journey(raw.get("journey")),
            self._segment(raw.get("segment")),
        )

    def _channel(self, value: object) -> str | None:
        if value is not None and value not in CHANNELS:
            self.fail("filter.channel", f"expected one of {', '.join(CHANNELS)}; got {_shown(value)}")
            return None
        return None if value is None else str(value)

    def _journey(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or _JOURNEY_RE.fullmatch(value) is None or value == ALL:
            self.fail(
                "filter.journey",
                f"expected a journey name ^[a-z0-9_]{{1,64}}$ other than 'all'; got {_shown(value)}",
            )
            return None
        return value

    def _segment(self, value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not 1 <= len(value) <= 64 or value == ALL:
            self.fail(
                "filter.segment",
                f"expected a segment of 1..64 characters other than 'all'; got {_shown(value)}",
            )
            return None
        return value

    def _summary(self, name: str | None, metric: str | None, op: Op | None) -> str | None:
        value = self.raw.get("summary")
        if value is None:
            return (
                f"{name}: {metric} is {{value:.4g}} ({op} {{threshold:g}}) "
                "on channel {channel}, journey {journey}, segment {segment}"
            )
        if not isinstance(value, str) or not value.strip():
            self.fail("summary", f"expected a non-empty string, got {_shown(value)}")
            return None
        try:
            value.format(**_PLACEHOLDERS)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            self.fail(
                "summary",
                f"placeholders must be among {{value}}, {{threshold}}, {{channel}}, {{journey}}, {{segment}} "
                f"(literal braces doubled); {type(exc).__name__}: {exc}",
            )
            return None
        return value


def parse_duration(text: str) -> int | None:
    """Milliseconds of a duration like '90s', '15m', '1h30m', '1d' or '0'; None if malformed."""
    if text == "0":
        return 0
    match = _DURATION_RE.fullmatch(text)
    if match is None or not text:
        return None
    return sum(int(part) * unit for part, unit in zip(match.groups(), _UNIT_MS, strict=True) if part)


def _shown(value: object) -> str:
    if value is None:
        return "nothing (missing or null)"
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def _kind(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    kinds = {str: "a string", list: "a list", dict: "a mapping", type(None): "nothing"}
    return kinds.get(type(value), type(value).__name__)


# -- evaluation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertState:
    """Where one rule stands. `since_ms` is when the breach began (pending) or when the alert
    fired (firing); None while inactive. `value` is the last value evaluated."""

    status: Status = "inactive"
    since_ms: int | None = None
    value: float | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """One message for on-call: `firing` once per episode, then `resolved` once."""

    rule: str
    severity: str
    status: Literal["firing", "resolved"]
    value: float
    threshold: float
    labels: dict[str, str]
    summary: str
    starts_at: int
    ends_at: int | None = None

    def annotations(self) -> dict[str, str]:
        """Alertmanager annotations (SPEC §4): summary, value, threshold."""
        return {"summary": self.summary, "value": f"{self.value:g}", "threshold": f"{self.threshold:g}"}


def rule_window(rule: Rule, now_ms: int) -> tuple[int, int]:
    """The rolling window [start, end) of whole minutes ending at the current minute's start,
    so the minute still filling up is never used."""
    end = minute_of(now_ms)
    return end - rule.window_ms, end


def measure(
    rule: Rule, cells: Iterable[tuple[CellKey, KpiCounts]], now_ms: int
) -> tuple[float | None, float | None]:
    """(value, denominator) of the rule's metric over its window and filters."""
    start, end = rule_window(rule, now_ms)
    counts = rollup(cells, start, end, rule.channel, rule.journey, rule.segment)
    metric = METRICS[rule.metric]
    return metric.value(counts), metric.volume(counts)


def evaluate(
    rule: Rule, state: AlertState, value: float | None, denominator: float | None, now_ms: int
) -> tuple[AlertState, list[Notification]]:
    """Advance one rule by one evaluation. `denominator` None means the metric has none (a
    counter): min_volume does not apply."""
    measurable = value is not None and (denominator is None or denominator >= rule.min_volume)
    if state.status == "firing":
        return _while_firing(rule, state, value if measurable else None, now_ms)
    if value is None or not measurable or not _breaches(rule, value):
        # A pending alert whose breach stops (or loses its data) goes back silently.
        return AlertState("inactive", None, value), []
    since = state.since_ms if state.status == "pending" and state.since_ms is not None else now_ms
    if now_ms - since >= rule.for_ms:
        fired = AlertState("firing", now_ms, value)
        return fired, [build_notification(rule, "firing", value, now_ms)]
    return AlertState("pending", since, value), []


def _while_firing(
    rule: Rule, state: AlertState, value: float | None, now_ms: int
) -> tuple[AlertState, list[Notification]]:
    # No value (or too little volume) keeps the alert firing: a volume drop at night must not
    # give on-call a false all-clear while the problem may still be there.
    if value is None or not _cleared(rule, value):
        return AlertState("firing", state.since_ms, value if value is not None else state.value), []
    starts_at = state.since_ms if state.since_ms is not None else now_ms
    return AlertState("inactive", None, value), [
        build_notification(rule, "resolved", value, starts_at, now_ms)
    ]


def _breaches(rule: Rule, value: float) -> bool:
    return value > rule.threshold if rule.op == "above" else value < rule.threshold


def _cleared(rule: Rule, value: float) -> bool:
    return value <= rule.clear if rule.op == "above" else value >= rule.clear


def build_notification(
    rule: Rule,
    status: Literal["firing", "resolved"],
    value: float,
    starts_at: int,
    ends_at: int | None = None,
) -> Notification:
    return Notification(
        rule=rule.name,
        severity=rule.severity,
        status=status,
        value=value,
        threshold=rule.threshold,
        labels=rule.labels(),
        summary=rule.render_summary(value),
        starts_at=starts_at,
        ends_at=ends_at,
    )


# -- a rule book stepped minute by minute --------------------------------------------------


def window_counts(minutes: dict[int, KpiCounts], rule: Rule, boundary_ms: int) -> KpiCounts:
    """The rule's window [boundary - window, boundary) summed from per-minute counts that
    already carry the rule's filters (one entry per minute start)."""
    total = init_counts()
    for minute in range(boundary_ms - rule.window_ms, boundary_ms, MINUTE_MS):
        counts = minutes.get(minute)
        if counts is not None:
            total = merge_counts(total, counts)
    return total


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One rule evaluated at one minute boundary."""

    rule: Rule
    boundary_ms: int
    state: AlertState
    notifications: tuple[Notification, ...]


class AlertBook:
    """Every rule's state and the last minute boundary evaluated.

    Rules are evaluated at whole-minute boundaries of event time, each once, in order, as the
    KPI watermark passes them, so the same counts give the same alerts at the same event
    times in a live run, after a restart, or over a backfill.
    """

    def __init__(
        self,
        rules: Iterable[Rule],
        states: dict[str, AlertState] | None = None,
        evaluated_until: int | None = None,
    ) -> None:
        self.rules = tuple(rules)
        known = states or {}
        self.states = {rule.name: known.get(rule.name, AlertState()) for rule in self.rules}
        self.evaluated_until = evaluated_until

    def due(self, watermark_ms: int, limit: int) -> list[int]:
        """The boundaries to evaluate now, oldest first, at most `limit`. A book that has never
        evaluated starts one lookback before the watermark's minute, not at the dawn of the
        data: enough for every rule to reach the state the present calls for (an episode
        that began earlier fires now), without replaying history to on-call."""
        last = minute_of(watermark_ms)
        if self.evaluated_until is None:
            first = last - self.lookback_ms()
        else:
            first = self.evaluated_until + MINUTE_MS
        return list(range(first, last + 1, MINUTE_MS))[:limit]

    def lookback_ms(self) -> int:
        """The widest window plus the longest `for`, in whole minutes."""
        widest = max(rule.window_ms + rule.for_ms for rule in self.rules)
        return -(-widest // MINUTE_MS) * MINUTE_MS

    def span(self, boundaries: list[int]) -> tuple[int, int]:
        """The minutes [start, end) the evaluation of `boundaries` reads."""
        widest = max(rule.window_ms for rule in self.rules)
        return boundaries[0] - widest, boundaries[-1]

    def step(self, boundary_ms: int, minutes_by_rule: dict[str, dict[int, KpiCounts]]) -> list[Evaluation]:
        """Evaluate every rule at `boundary_ms` from its per-minute counts."""
        results = []
        for rule in self.rules:
            counts = window_counts(minutes_by_rule.get(rule.name, {}), rule, boundary_ms)
            metric = METRICS[rule.metric]
            state, sent = evaluate(
                rule, self.states[rule.name], metric.value(counts), metric.volume(counts), boundary_ms
            )
            self.states[rule.name] = state
            results.append(Evaluation(rule, boundary_ms, state, tuple(sent)))
        self.evaluated_until = boundary_ms
        return results


def alert_id(rule: str, starts_at_ms: int) -> str:
    """Deterministic id of one alert episode: the rule and the time it fired."""
    return f"{rule}:{starts_at_ms}"
