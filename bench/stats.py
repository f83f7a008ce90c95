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


# CPU features that decide how fast the embedder's int8 products run.
FEATURE_FLAGS = ("avx2", "avx512f", "avx512_vnni", "amx_int8")
# How a virtual CPU idles: with halt polling off, a vCPU halts the moment it waits, and each stage of
# a chat at concurrency 1 then starts cold (README, "Why concurrency 1 stays far from 5 ms").
IDLE_FILES = {
    "cpuidle_driver": "/sys/devices/system/cpu/cpuidle/current_driver",
    "guest_halt_poll_ns": "/sys/module/haltpoll/parameters/guest_halt_poll_ns",
}


def cpu_facts(cpuinfo: str) -> dict[str, Any]:
    """Model, family and the flags that matter here, from the text of /proc/cpuinfo."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if not line.strip():
            break  # the first processor's block is enough: the CPUs of one machine match
        fields.setdefault(name.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name", ""),
        "cpu_family": fields.get("cpu family", ""),
        "cpu_features": [flag for flag in FEATURE_FLAGS if flag in flags],
        "virtual_machine": "hypervisor" in flags,
    }


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as file:
            return file.read().strip()
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """Where and when: CPU count, model and features, how idle vCPUs wait, load average, time
    (called at start and at end)."""
    idle = {name: value for name, path in IDLE_FILES.items() if (value := read_text(path)) is not None}
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        **cpu_facts(read_text("/proc/cpuinfo") or ""),
        "idle": idle,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def ratio(numerator: float, denominator: float) -> float | None:
    if denominator == 0 or denominator != denominator or numerator != numerator:
        return None
    return round(numerator / denominator, 3)


def cpu_description(snapshot: dict[str, Any]) -> str:
    """Model, family, features and how a VM idles, e.g. ``AMD EPYC, family 25, avx2 avx512f
    avx512_vnni; a VM, cpuidle haltpoll, halt polling 0 ns``; a snapshot written before these
    fields existed gives the model alone."""
    parts = [snapshot.get("cpu_model") or "unknown model"]
    if snapshot.get("cpu_family"):
        parts.append(f"family {snapshot['cpu_family']}")
    text = ", ".join(parts)
    if snapshot.get("cpu_features"):
        text += ", " + " ".join(snapshot["cpu_features"])
    if snapshot.get("virtual_machine"):
        idle = snapshot.get("idle", {})
        text += "; a VM"
        if "cpuidle_driver" in idle:
            text += f", cpuidle {idle['cpuidle_driver']}"
        if "guest_halt_poll_ns" in idle:
            text += f", halt polling {idle['guest_halt_poll_ns']} ns"
    return text


def machine_sentence(result: dict[str, Any]) -> str:
    """The opening of every results page: when, on what, and how busy the shared machine was."""
    start, end = result["machine_start"], result["machine_end"]
    return (
        f"{start['time']} → {end['time']}, {start['cpus']} CPUs ({cpu_description(start)}), shared machine: load "
        f"average {start['load_average']} at start, {end['load_average']} at end."
    )
