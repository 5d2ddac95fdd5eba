"""Temp files left by a netfwd killed mid-write are swept at the next recovery; live writers' are not."""

from __future__ import annotations

import os
import subprocess

from netfwd.safefiles import sweep_temp_files, write_atomic


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid  # reaped: no such process any more (PID reuse within the test is not a concern)


def test_sweep_removes_only_temp_files_of_dead_writers(tmp_path):
    (tmp_path / "snapshots").mkdir()
    write_atomic(tmp_path / "applied.txt", "owned state\n")
    dead = dead_pid()
    stale = [tmp_path / f".applied.txt.{dead}.tmp", tmp_path / "snapshots" / f".abc.txt.{dead}.tmp"]
    live = tmp_path / f".state.json.{os.getpid()}.tmp"  # a writer that is still running
    for path in (*stale, live):
        path.write_text("torn")

    assert sorted(sweep_temp_files(tmp_path)) == sorted(stale)
    assert live.exists() and not any(p.exists() for p in stale)
    assert (tmp_path / "applied.txt").read_text() == "owned state\n"
    assert sweep_temp_files(tmp_path) == []


def test_sweep_reads_the_pid_not_a_random_part_made_of_digits(tmp_path):
    """Regression: a random part of 16 decimal digits was read as the PID (OverflowError, a traceback
    in every later command) and a live writer's temp file could look dead."""
    dead, me = dead_pid(), os.getpid()
    stale = tmp_path / f".state.json.{dead}.1234567890123456.tmp"
    live = tmp_path / f".applied.txt.{me}.9876543210987654.tmp"
    stale.write_text("torn")
    live.write_text("being written")
    assert sweep_temp_files(tmp_path) == [stale]
    assert live.exists()
