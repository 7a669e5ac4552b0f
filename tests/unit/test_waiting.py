"""Descriptor waits: a cancel flag that wakes a long wait (what a unit's worker waits on a board with)."""

from __future__ import annotations

import os
import threading

from station.transport.waiting import WakingEvent, readable


def test_setting_a_waking_event_ends_a_long_wait_on_a_silent_descriptor() -> None:
    silent_read, silent_write = os.pipe()
    cancel = WakingEvent()
    answers: list[bool] = []
    waiter = threading.Thread(
        target=lambda: answers.append(readable(silent_read, 600.0, also=cancel.fileno())), daemon=True
    )
    try:
        waiter.start()
        cancel.set()
        waiter.join(60.0)  # without the wake-up it would sleep its whole 600 s
        assert not waiter.is_alive()
        assert answers == [False]  # the silent descriptor is still not readable: the cancel woke it
        assert cancel.is_set()
    finally:
        os.close(silent_read)
        os.close(silent_write)


def test_output_is_still_seen_when_a_cancel_flag_is_waited_on_too() -> None:
    read_end, write_end = os.pipe()
    cancel = WakingEvent()
    try:
        os.write(write_end, b"output")
        assert readable(read_end, 600.0, also=cancel.fileno())
        assert not cancel.is_set()
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_waking_event_is_set_again_harmlessly_and_stays_readable() -> None:
    cancel = WakingEvent()
    for _ in range(70_000):  # more wake-ups than the pipe holds (64 KiB)
        cancel.set()
    silent_read, silent_write = os.pipe()
    try:
        assert not readable(silent_read, 600.0, also=cancel.fileno())
    finally:
        os.close(silent_read)
        os.close(silent_write)
