"""Aggregating the overhead rounds (medians across rounds, added = target minus direct in the
same round, on the same model API), the goals, the Markdown table and the chart. Records written
before the bench sent other APIs than chat carry no ``api`` and read as chat."""

from __future__ import annotations

import itertools
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from bench import stats

Key = tuple[str, bool, int, str]
API_TITLES = {"chat": "Chat Completions", "responses": "Responses API", "messages": "Anthropic Messages API"}
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
        groups[(record.get("api", "chat"), record["stream"], record["concurrency"], record["target"])].append(record)
    rows = []
    for (api, stream, concurrency, target), rounds in sorted(groups.items()):
        direct = {r["round"]: r for r in groups.get((api, stream, concurrency, "direct"), [])}
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
                "api": api,
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
    by = {(r.get("api", "chat"), r["stream"], r["concurrency"], r["target"]): r for r in rows}
    checks = []
    for (api, stream, concurrency, target), row in sorted(by.items()):
        proxy = by.get((api, stream, concurrency, "litellm"))
        if target != "mnemo-on" or proxy is None or not row["added_ms"]:
            continue
        for q in ("p50", "p99"):
            value = stats.ratio(row["added_ms"][q], proxy["added_ms"][q])
            checks.append(
                {
                    "goal": f"mnemo-on added {q} <= {GOAL_RATIO} x litellm added",
                    "api": api,
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
                    "api": api,
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


TABLE_HEAD = [
    "| c | target | TTFT p50 | TTFT p99 | total p50 | total p99 | added p50 | added p99 "
    "| req/s | CPU ms/req | RSS MB | retrieval ms | fail-open | errors |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
]


def _table(rows: list[dict[str, Any]]) -> list[str]:
    lines = list(TABLE_HEAD)
    for row in rows:
        added = row["added_ms"]
        lines.append(
            f"| {row['concurrency']} | {row['target']} | {row['ttft_p50']:.2f} | {row['ttft_p99']:.2f} | "
            f"{row['total_p50']:.2f} | {row['total_p99']:.2f} | "
            f"{added.get('p50', 0):+.2f} | {added.get('p99', 0):+.2f} | "
            f"{row['requests_per_s']:.0f} | {row['cpu_ms_per_request']:.2f} | {row['rss_mb']:.0f} | "
            f"{row['retrieval_ms_mean'] if row['retrieval_ms_mean'] is not None else ''} | "
            f"{row['fail_open']:.0f} | {row['errors']} |"
        )
    return [*lines, ""]


def _goals(checks: list[dict[str, Any]], with_api: bool) -> list[str]:
    api_head, api_rule = ("api | ", "---|") if with_api else ("", "")
    lines = [
        "## Goals",
        "",
        f"| goal | {api_head}stream | c | Mnemo | LiteLLM | ratio | met |",
        f"|---|{api_rule}---|---|---|---|---|---|",
    ]
    for check in checks:
        api = f"{check.get('api', 'chat')} | " if with_api else ""
        lines.append(
            f"| {check['goal']} | {api}{check['stream']} | {check['concurrency']} | {check['mnemo_added_ms']:+.2f} | "
            f"{check.get('litellm_added_ms', '')} | {check['ratio']} | {'yes' if check['met'] else '**no**'} |"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    apis = result["setup"].get("apis", ["chat"])
    if apis != ["chat"]:
        return apis_markdown(result, apis)
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
        lines += [f"## {'Streaming' if stream else 'Non-streaming'}", ""]
        lines += _table([row for row in result["summary"] if row["stream"] == stream])
    lines += _goals(result["goals"], with_api=False)
    return "\n".join(lines) + "\n"


def _fmt(value: float | None, signed: bool = True) -> str:
    if value is None:
        return "–"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def api_summary(result: dict[str, Any], apis: list[str]) -> list[dict[str, Any]]:
    """Per API, streaming mode and concurrency: what each gateway adds (p50 total and TTFT), the
    ratio of Mnemo's (memory on) to LiteLLM's, and each one's CPU per request."""
    by = {(r.get("api", "chat"), r["stream"], r["concurrency"], r["target"]): r for r in result["summary"]}

    def added(key: tuple[str, bool, int], target: str, metric: str) -> float | None:
        row = by.get((*key, target))
        return row["added_ms"].get(metric) if row and row["added_ms"] else None

    def cpu(key: tuple[str, bool, int], target: str) -> float | None:
        row = by.get((*key, target))
        return row["cpu_ms_per_request"] if row else None

    out = []
    for key in itertools.product(apis, (False, True), result["setup"]["concurrency"]):
        mnemo_on, proxy = added(key, "mnemo-on", "p50"), added(key, "litellm", "p50")
        out.append(
            {
                "api": key[0],
                "stream": key[1],
                "concurrency": key[2],
                "added_p50": {t: added(key, t, "p50") for t in ("mnemo-off", "mnemo-read", "mnemo-on", "litellm")},
                "added_ttft_p50": {t: added(key, t, "ttft_p50") for t in ("mnemo-on", "litellm")},
                "cpu_ms_per_request": {t: cpu(key, t) for t in ("direct", "mnemo-on", "litellm")},
                "mnemo_on_over_litellm": None if mnemo_on is None or proxy is None else stats.ratio(mnemo_on, proxy),
                "errors": sum(row["errors"] for (*k, _), row in by.items() if tuple(k) == key),
            }
        )
    return out


def apis_markdown(result: dict[str, Any], apis: list[str]) -> str:
    setup = result["setup"]
    served = setup.get("litellm_apis", [])
    lines = [
        "# Gateway overhead by model API",
        "",
        stats.machine_sentence(result) + " "
        f"Medians over {setup['rounds']} interleaved rounds ({', '.join(API_TITLES[a] for a in apis)} back to back "
        "at each concurrency and streaming mode); *added* is target minus the direct upstream on the same API in "
        "the same round; TTFT is the first body bytes of a stream. Times in ms; compare ratios, not absolute ms "
        "(a shared 2-vCPU machine).",
        "",
        f"LiteLLM proxy measured on: {', '.join(served) or 'none'}.",
        "",
        "## Summary: added p50 per API",
        "",
        "| API | stream | c | mnemo-off | mnemo-read | mnemo-on | LiteLLM | on ÷ LiteLLM | added TTFT p50 on / "
        "LiteLLM | CPU ms/req direct / on / LiteLLM | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in api_summary(result, apis):
        added, ttft, cpu = row["added_p50"], row["added_ttft_p50"], row["cpu_ms_per_request"]
        lines.append(
            f"| {row['api']} | {'yes' if row['stream'] else 'no'} | {row['concurrency']} | "
            f"{_fmt(added['mnemo-off'])} | {_fmt(added['mnemo-read'])} | {_fmt(added['mnemo-on'])} | "
            f"{_fmt(added['litellm'])} | {_fmt(row['mnemo_on_over_litellm'], False)} | "
            f"{_fmt(ttft['mnemo-on'])} / {_fmt(ttft['litellm'])} | "
            f"{_fmt(cpu['direct'], False)} / {_fmt(cpu['mnemo-on'], False)} / {_fmt(cpu['litellm'], False)} | "
            f"{row['errors']} |"
        )
    lines.append("")
    for api in apis:
        for stream in (False, True):
            rows = [r for r in result["summary"] if r.get("api", "chat") == api and r["stream"] == stream]
            lines += [f"## {API_TITLES[api]}, {'streaming' if stream else 'non-streaming'}", "", *_table(rows)]
    failures = [
        {"api": b.get("api", "chat"), "target": b["target"], **f}
        for b in result["blocks"]
        for f in b.get("failures", [])
    ]
    if failures:
        lines += ["## Failed requests (first of each block)", ""]
        seen = set()
        for failure in failures:
            if (failure["api"], failure["target"]) in seen:
                continue
            seen.add((failure["api"], failure["target"]))
            lines.append(
                f"- {failure['api']} → {failure['target']}: status {failure['status']}, "
                f"answer `{failure['answer'][:200]}`"
            )
        lines.append("")
    lines += _goals(result["goals"], with_api=True)
    return "\n".join(lines) + "\n"


def chart(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
    for axis, stream in zip(axes, (False, True), strict=True):
        rows = [r for r in result["summary"] if r["stream"] == stream and r.get("api", "chat") == "chat"]
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
