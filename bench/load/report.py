"""The load bench's markdown table (bench/results/load.md)."""

from __future__ import annotations

from typing import Any


def render(results: dict[str, Any]) -> str:
    process = results["process"]
    cold, before, end, after = process["cold"], process["before"], process["end_of_load"], process["after"]
    restarted = process.get("restarted")
    snapshots = (cold, before, end, after) + ((restarted,) if restarted else ())
    tcp = [", ".join(f"{state} {n}" for state, n in snapshot["tcp"].items()) for snapshot in snapshots]
    machine = results["machine_start"]
    lines = [
        "# Load and soak",
        "",
        f"{results['clients']} concurrent streaming clients for {results['duration_s']} s against `mnemo up` "
        "(embedded Redis, Qdrant Edge, raw extraction, memory on); scripted upstream with a 200 ms first chunk "
        f"and 8 chunks 20 ms apart. Machine: {machine.get('cpus')} CPUs, load average at start "
        f"{machine.get('load_average')}. Command: `.venv/bin/python -m bench.load.run"
        f"{results.get('options', ' --quick' if results['quick'] else '')}`.",
        "",
        "| | value |",
        "| --- | --- |",
        f"| requests | {results['requests']} ({results['requests_per_s']}/s) |",
        f"| errors | {results['errors']} {results['error_kinds'] or ''} |",
        f"| 5xx | {results['status_5xx']} |",
        f"| chats answered without their memories | {skipped(results)} |",
        f"| exchanges sent / stored | {results['exchanges_sent']} / {results['exchanges_stored']} |",
        f"| lost | {results['exchanges_lost']} |",
        f"| duplicated memories | {results['memories_duplicated']} |",
        f"| worker caught up | {results['worker_drain_s']} s after the load stopped{backlog(results)} |",
        *cost_rows(results),
        f"| time to first chunk p50 / p99 | {results['ttft_ms']['p50']} / {results['ttft_ms']['p99']} ms |",
        f"| whole stream p50 / p99 | {results['total_ms']['p50']} / {results['total_ms']['p99']} ms |",
        "",
        f"| Mnemo process | cold start | before (after a {results['warmup_s']:g} s warm-up) | end of load "
        "| after (idle 6 s, then 3 chats) |" + (" a new process on the same data |" if restarted else ""),
        "| --- | --- | --- | --- | --- |" + (" --- |" if restarted else ""),
        row("RSS MB", [s["rss_mb"] for s in snapshots]),
        *memory_rows(snapshots),
        row("embedded redis RSS MB", [s["children_rss_mb"] for s in snapshots]),
        row("open file descriptors", [s["fds"] for s in snapshots]),
        row("TCP connections", tcp),
        row("unix sockets (the queue's Redis pool)", [s["unix_sockets"] for s in snapshots]),
        row("threads", [s["threads"] for s in snapshots]),
        "",
        f"RSS after the soak ÷ at ready (cold start): {after['rss_mb'] / cold['rss_mb']:.2f} (goal ≤ 1.3; issue 25).",
        *growth_lines(results, cold, after, restarted),
        "",
        f"File descriptors by kind, before: {fd_list(before)}; after: {fd_list(after)}.",
        "",
    ]
    return "\n".join(lines)


def skipped(results: dict[str, Any]) -> str:
    """From each answer's X-Mnemo-Memory-Status: how many said ``skipped:<reason>``, and why."""
    status: dict[str, int] = results.get("memory_status", {})
    answered = sum(status.values())
    reasons = {key: n for key, n in status.items() if key.startswith("skipped")}
    if not answered:
        return "not counted"
    share = 100 * sum(reasons.values()) / answered
    detail = ", ".join(f"{key} {n}" for key, n in sorted(reasons.items()))
    return f"{sum(reasons.values())} of {answered} ({share:.2f}%){' — ' + detail if detail else ''}"


def backlog(results: dict[str, Any]) -> str:
    if "worker_backlog_at_load_end" not in results:
        return ""
    return (
        f" ({results['worker_backlog_at_load_end']} exchanges still to store then, "
        f"{results['worker_catch_up_per_s']}/s)"
    )


def cost_rows(results: dict[str, Any]) -> list[str]:
    """Redis commands and CPU per exchange, from the load's start until the worker caught up."""
    if "redis_commands" not in results:
        return []
    redis, cpu = results["redis_commands"], results["cpu_ms_per_exchange"]
    total = redis["total"]
    top = ", ".join(f"{name} {n}" for name, n in total["top"].items())
    return [
        f"| Redis commands per exchange (during / after the load) | {total['per_exchange']} "
        f"({redis['during_load']['per_exchange']} / {redis['after_load']['per_exchange']}), "
        f"{total['scripts_per_exchange']} of them scripts; most called: {top} |",
        f"| CPU per exchange, Mnemo process / redis-server | {cpu['mnemo']} / {cpu['redis']} ms |",
    ]


def growth_lines(
    results: dict[str, Any], cold: dict[str, Any], after: dict[str, Any], restarted: dict[str, Any] | None
) -> list[str]:
    """Where the growth went: the store's data (what a new process on the same data holds too)
    and the rest, per exchange stored."""
    if not restarted:
        return []
    stored = max(1, results["exchanges_stored"])
    data_kb = (restarted["rss_mb"] - cold["rss_mb"]) * 1024 / stored
    return [
        f"RSS after the soak ÷ a new process on the same data: {after['rss_mb'] / restarted['rss_mb']:.2f} "
        "(what the process kept beyond its data: leaks, fragmentation, pools).",
        f"The data: a new process on the soak's {stored} stored exchanges holds "
        f"{restarted['rss_mb'] - cold['rss_mb']:+.1f} MB more than at ready, {data_kb:.1f} KB per exchange stored.",
    ]


def memory_rows(snapshots: tuple[dict[str, Any], ...]) -> list[str]:
    """The RSS row split by kind of mapping (probe.memory_by_kind), kinds of 1 MB or more."""
    kinds: dict[str, float] = {}
    for snapshot in snapshots:
        for kind, mb in snapshot.get("memory", {}).items():
            kinds[kind] = max(kinds.get(kind, 0.0), mb)
    shown = [kind for kind, mb in sorted(kinds.items(), key=lambda item: -item[1]) if mb >= 1]
    return [row(f"&nbsp;&nbsp;{kind}", [s.get("memory", {}).get(kind, 0.0) for s in snapshots]) for kind in shown]


def row(name: str, values: list[Any]) -> str:
    return f"| {name} | " + " | ".join(str(value) for value in values) + " |"


def fd_list(snapshot: dict[str, Any]) -> str:
    return ", ".join(f"{kind} {count}" for kind, count in snapshot["fd_kinds"].items())
