"""Processes are recognised by PID *and* start time, so a recycled PID is never signalled."""

from __future__ import annotations

import os
import signal
import subprocess

from station.sim.process import ProcessRef, wait_gone


def test_a_reference_follows_its_process_and_not_a_recycled_pid():
    child = subprocess.Popen(["sleep", "30"])
    try:
        ref = ProcessRef.of(child.pid)
        assert ref is not None and ref.alive()
        impostor = ProcessRef(child.pid, ref.start_time + 1)  # same PID, another process
        assert not impostor.alive()
        assert impostor.signal(signal.SIGTERM) is False
        assert child.poll() is None

        assert ref.signal(signal.SIGTERM) is True
        child.wait(timeout=5)
        assert wait_gone([ref], timeout_s=1) == []
        assert ProcessRef.of(child.pid) is None
    finally:
        child.kill()
        child.wait(timeout=5)


def test_a_zombie_counts_as_gone():
    child = subprocess.Popen(["true"])
    ref = ProcessRef.of(child.pid)
    # Not reaped yet: once it has exited it is a zombie, which holds nothing.
    assert ref is None or wait_gone([ref], timeout_s=5) == []
    child.wait(timeout=5)


def test_pid_files_are_read_with_their_parent_checked(tmp_path):
    child = subprocess.Popen(["sleep", "30"])
    try:
        pid_file = tmp_path / "child.pid"
        pid_file.write_text(f"{child.pid}\n")
        me = ProcessRef.of(os.getpid())
        assert me is not None
        assert ProcessRef.from_pid_file(pid_file, parent=me) == ProcessRef.of(child.pid)
        assert ProcessRef.from_pid_file(pid_file, parent=ProcessRef(1, 0)) is None
        assert ProcessRef.from_pid_file(tmp_path / "missing.pid") is None
        assert [c.pid for c in me.children()].count(child.pid) == 1
    finally:
        child.kill()
        child.wait(timeout=5)
