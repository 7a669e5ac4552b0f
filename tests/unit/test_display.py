"""One wording for durations and shares, in the CLI, the window and the reports."""

from __future__ import annotations

import pytest

from station.display import format_duration, format_percent


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "—"),
        (0.0, "0.0 s"),
        (13.04, "13.0 s"),
        (59.94, "59.9 s"),
        (59.96, "1 min 00 s"),
        (65.4, "1 min 05 s"),
        (3599.4, "59 min 59 s"),
        (3600, "1 h 00 min"),
        (7625, "2 h 07 min"),
        (-0.2, "0.0 s"),
    ],
)
def test_a_recorded_duration_reads_to_a_tenth_of_a_second(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0 s"), (42.4, "42 s"), (59.6, "1 min 00 s"), (185, "3 min 05 s")]
)
def test_the_live_timer_counts_whole_seconds(seconds, text):
    assert format_duration(seconds, decimals=0) == text


@pytest.mark.parametrize(
    ("share", "text"), [(None, "—"), (0.975, "97.5 %"), (1.0, "100.0 %"), (0.0, "0.0 %")]
)
def test_a_share_reads_as_a_percentage(share, text):
    assert format_percent(share) == text
