"""Summaries of repeated measurements: the median, the spread, and ratios taken run by run."""

from __future__ import annotations

import statistics


def summary(values: list[float]) -> dict:
    """Median, minimum and maximum of several runs (the runs themselves kept)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def ratios(values: list[float], baselines: list[float]) -> dict:
    """Each run against the baseline measured in the same round, summarized."""
    return summary([v / b for v, b in zip(values, baselines, strict=True)])
