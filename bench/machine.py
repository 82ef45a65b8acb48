"""The machine a figure was measured on: its cores, CPU model, and the load average before and
after the measure, so a figure read later says how busy the machine was while it was taken."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def cpu_model() -> str:
    """The first `model name` of /proc/cpuinfo (Linux), else "unknown"."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "unknown")


def measured(measure: Callable[[], T]) -> tuple[T, dict]:
    """`measure()`'s result and the machine it ran on: cores, CPU model, 1/5/15-minute load
    averages just before and just after."""
    before = os.getloadavg()
    result = measure()
    after = os.getloadavg()
    return result, {"cores": os.cpu_count(), "cpu": cpu_model(),
                    "load average before": [round(x, 2) for x in before],
                    "load average after": [round(x, 2) for x in after]}


def line(machine: dict) -> str:
    """The machine as one line under a table."""
    before, after = machine["load average before"][0], machine["load average after"][0]
    return f"  (measured on {machine['cores']} cores, {machine['cpu']}; 1-minute load average {before:.2f} " \
           f"before, {after:.2f} after)"
