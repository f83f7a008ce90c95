"""Aggregating the overhead rounds (medians across rounds, added = target minus direct in the
same round), the goals, the Markdown table and the chart."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from bench import stats

Key = tuple[bool, int, str]
GOAL_RATIO = 0.5
GOAL_ADDED_C1_MS = 5.0


def _median(rows: list[dict[str, Any]], *path: str) -> float:
    values = []
    for row in rows:
        value: Any = row
        for part in path:
            value = value[part]
        values.append(float(value))
    return round(median(values), 3)


def _median_present(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 3) if present else None


def aggregate(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[Key, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        groups[(record["stream"], record["concurrency"], record["target"])].append(record)
    rows = []
    for (stream, concurrency, target), rounds in sorted(groups.items()):
        direct = {r["round"]: r for r in groups.get((stream, concurrency, "direct"), [])}
        added = (
            {
                metric: round(
                    median(r[kind][q] - direct[r["round"]][kind][q] for r in rounds if r["round"] in direct), 3
                )
                for metric, kind, q in (("p50", "total", "p50"), ("p99", "total", "p99"), ("ttft_p50", "ttft", "p50"))
            }
            if direct
            else {}
        )
        rows.append(
            {
                "stream": stream,
                "concurrency": concurrency,
                "target": target,
                "rounds": len(rounds),
                "ttft_p50": _median(rounds, "ttft", "p50"),
                "ttft_p99": _median(rounds, "ttft", "p99"),
                "total_p50": _median(rounds, "total", "p50"),
                "total_p99": _median(rounds, "total", "p99"),
                "added_ms": added,
                "requests_per_s": _median(rounds, "requests_per_s"),
                "cpu_ms_per_request": _median(rounds, "cpu_ms_per_request"),
                "rss_mb": max(r["rss_mb"] for r in rounds),
                "errors": sum(r["errors"] for r in rounds),
                "fail_open": sum(r.get("fail_open", 0) for r in rounds),
                "retrieval_ms_mean": _median_present([r.get("retrieval_ms_mean") for r in rounds]),
                "with_memories": sum(r["with_memories"] for r in rounds),
                "requests": sum(r["total"]["n"] for r in rounds),
            }
        )
    return rows


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["stream"], r["concurrency"], r["target"]): r for r in rows}
    checks = []
    for (stream, concurrency, target), row in sorted(by.items()):
        proxy = by.get((stream, concurrency, "litellm"))
        if target != "mnemo-on" or proxy is None or not row["added_ms"]:
            continue
        for q in ("p50", "p99"):
            value = stats.ratio(row["added_ms"][q], proxy["added_ms"][q])
            checks.append(
                {
                    "goal": f"mnemo-on added {q} <= {GOAL_RATIO} x litellm added",
                    "stream": stream,
                    "concurrency": concurrency,
                    "mnemo_added_ms": row["added_ms"][q],
                    "litellm_added_ms": proxy["added_ms"][q],
                    "ratio": value,
                    "met": value is not None and value <= GOAL_RATIO,
                }
            )
        if concurrency == 1:
            checks.append(
                {
                    "goal": f"mnemo-on added p50 <= {GOAL_ADDED_C1_MS} ms at concurrency 1",
                    "stream": stream,
                    "concurrency": 1,
                    "mnemo_added_ms": row["added_ms"]["p50"],
                    "ratio": stats.ratio(row["added_ms"]["p50"], GOAL_ADDED_C1_MS),
                    "met": row["added_ms"]["p50"] <= GOAL_ADDED_C1_MS,
                }
            )
    return checks


def build(
    records: list[dict[str, Any]], setup: dict[str, Any], start: dict[str, Any], end: dict[str, Any]
) -> dict[str, Any]:
    rows = aggregate(records)
    return {
        "bench": "overhead",
        "machine_start": start,
        "machine_end": end,
        "setup": setup,
        "summary": rows,
        "goals": goals(rows),
        "blocks": records,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Gateway overhead",
        "",
        stats.machine_sentence(result) + " "
        f"Medians over {result['setup']['rounds']} "
        "interleaved rounds; *added* is target minus direct in the same round; *retrieval ms* is Mnemo's own "
        "embed + search time per request (mean, from /metrics). Times in ms.",
        "",
    ]
    for stream in (False, True):
        lines += [
            f"## {'Streaming' if stream else 'Non-streaming'}",
            "",
            "| c | target | TTFT p50 | TTFT p99 | total p50 | total p99 | added p50 | added p99 "
            "| req/s | CPU ms/req | RSS MB | retrieval ms | fail-open | errors |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for row in result["summary"]:
            if row["stream"] != stream:
                continue
            added = row["added_ms"]
            lines.append(
                f"| {row['concurrency']} | {row['target']} | {row['ttft_p50']:.2f} | {row['ttft_p99']:.2f} | "
                f"{row['total_p50']:.2f} | {row['total_p99']:.2f} | "
                f"{added.get('p50', 0):+.2f} | {added.get('p99', 0):+.2f} | "
                f"{row['requests_per_s']:.0f} | {row['cpu_ms_per_request']:.2f} | {row['rss_mb']:.0f} | "
                f"{row['retrieval_ms_mean'] if row['retrieval_ms_mean'] is not None else ''} | "
                f"{row['fail_open']:.0f} | {row['errors']} |"
            )
        lines.append("")
    lines += ["## Goals", "", "| goal | stream | c | Mnemo | LiteLLM | ratio | met |", "|---|---|---|---|---|---|---|"]
    for check in result["goals"]:
        lines.append(
            f"| {check['goal']} | {check['stream']} | {check['concurrency']} | {check['mnemo_added_ms']:+.2f} | "
            f"{check.get('litellm_added_ms', '')} | {check['ratio']} | {'yes' if check['met'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for axis, stream in zip(axes, (False, True), strict=True):
        rows = [r for r in result["summary"] if r["stream"] == stream]
        for index, target in enumerate(dict.fromkeys(r["target"] for r in rows)):
            mine = sorted((r for r in rows if r["target"] == target), key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in mine]
            color = f"C{index}"
            axis.plot(xs, [r["total_p50"] for r in mine], "o-", color=color, label=f"{target} p50")
            axis.plot(xs, [r["total_p99"] for r in mine], "x--", color=color, alpha=0.6, label=f"{target} p99")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(result["setup"]["concurrency"], [str(c) for c in result["setup"]["concurrency"]])
        axis.set_xlabel("concurrency")
        axis.set_title(("streaming" if stream else "non-streaming") + ": total request time")
        axis.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("ms (log scale)")
    axes[1].legend(fontsize=7, ncol=2)
    start = result["machine_start"]
    figure.suptitle(f"Gateway overhead, {start['cpus']}-CPU shared machine, load {start['load_average'][0]} at start")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
