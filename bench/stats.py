"""Percentiles and the machine snapshot every results file carries (these machines are shared)."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Sequence
from typing import Any

import numpy as np


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else float("nan")


def summary(values: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean of a list of milliseconds, rounded for the results files."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "mean": float("nan")}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p99": round(percentile(values, 99), 3),
        "mean": round(float(np.mean(values)), 3),
    }


def machine() -> dict[str, Any]:
    """Where and when: CPU count and model, load average, time (called at start and at end)."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0 or denominator != denominator or numerator != numerator:
        return None
    return round(numerator / denominator, 3)


def machine_sentence(result: dict[str, Any]) -> str:
    """The opening of every results page: when, on what, and how busy the shared machine was."""
    start, end = result["machine_start"], result["machine_end"]
    return (
        f"{start['time']} → {end['time']}, {start['cpus']} CPUs ({start['cpu_model']}), shared machine: load average "
        f"{start['load_average']} at start, {end['load_average']} at end."
    )
