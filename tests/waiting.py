"""Waiting in tests for something another thread or process brings about."""

import time


def until(condition, timeout: float = 10.0) -> None:
    """Return once `condition()` is true; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
