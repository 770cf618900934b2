"""The Go client bench/websocket_fanout.py measures with: its own tests
(frame parsing, event-time parsing against Go's time.Parse)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

WSLOAD = Path(__file__).resolve().parent.parent / "bench" / "wsload"


def test_the_websocket_load_generator_parses_frames_and_event_times_right():
    go = shutil.which("go")
    if go is None:
        pytest.skip("no Go toolchain: bench/wsload is only built by the benchmark")
    result = subprocess.run([go, "test", "./..."], cwd=WSLOAD, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
