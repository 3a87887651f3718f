from journeystream.demo import render_summary
from journeystream.supervise import parse_metrics

METRICS = parse_metrics(
    """journeystream_events_consumed_total 120.0
journeystream_events_valid_total 110.0
journeystream_events_rejected_total{reason="not_json"} 7.0
journeystream_events_rejected_total{reason="bad_time"} 3.0
journeystream_consumer_lag{partition="0",topic="t"} 4.0
journeystream_consumer_lag{partition="1",topic="t"} 1.0
journeystream_sink_rows_total{table="interaction_events"} 100.0
journeystream_sink_rows_total{table="rejected_events"} 10.0
journeystream_sink_rows_total{table="journeys"} 42.0
journeystream_journeys_closed_total{status="abandoned"} 2.0
journeystream_irritants_total{kind="long_wait"} 5.0
"""
)


def test_summary_shows_flow_rejections_journeys_and_irritants() -> None:
    text = render_summary(METRICS, rate=12.0, uptime_s=30.0)
    assert "consumed 120 · valid 110 · rejected 10 · lag 5" in text
    assert "interaction_events 100, rejected_events 10" in text
    assert "bad_time 3, not_json 7" in text
    assert "42 versions stored; closed abandoned 2" in text
    assert "irritants: long_wait 5" in text


def test_summary_shows_each_rule_kpi_and_which_fire() -> None:
    metrics = parse_metrics(
        """journeystream_alert_value{rule="ClaimAbandonmentHigh"} 0.4375
journeystream_alert_value{rule="NpsNegative"} NaN
journeystream_alert_firing{rule="ClaimAbandonmentHigh"} 1.0
journeystream_alert_firing{rule="NpsNegative"} 0.0
journeystream_alert_evaluated_seconds 1767225600.0
"""
    )
    lines = render_summary(metrics, rate=0.0, uptime_s=1.0).splitlines()
    assert "   KPIs of the alert rules (complete minutes up to 00:00 UTC):" in lines
    assert "     FIRING ClaimAbandonmentHigh" in lines[-2] and lines[-2].endswith(" 0.438")
    assert lines[-1].split() == ["NpsNegative", "no", "data"]
    assert "KPIs" not in render_summary(METRICS, rate=12.0, uptime_s=30.0)
