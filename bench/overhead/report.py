"""Aggregating the overhead rounds (medians across rounds, added = target minus direct in the
same round, on the same model API), the goals, the Markdown tables (the production shape's
process by process) and the chart. Records written before the bench sent other APIs than chat
carry no ``api`` and read as chat; before the production shape, no ``processes``."""

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
GOAL_CPU_RATIO = 0.3  # CPU per streamed chat, against LiteLLM's
GOAL_ADDED_C1_MS = 5.0
MEMORY_ON = ("mnemo-on", "serve-on")  # the targets the goals are for: mnemo up, and the production shape
SERVE = "serve-on"
MODES = ("mnemo-off", "mnemo-read", "mnemo-on")  # mnemo up's memory modes
ROLES = ("gateway", "worker", "redis")  # the production shape's processes


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


def _processes(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per process of a target served by several: CPU ms per request (median over rounds), RSS (max)."""
    roles = rounds[0].get("processes", {})
    return {
        role: {
            "cpu_ms_per_request": _median(rounds, "processes", role, "cpu_ms_per_request"),
            "rss_mb": max(r["processes"][role]["rss_mb"] for r in rounds),
        }
        for role in roles
    }


ADDED = (("p50", "total", "p50"), ("p99", "total", "p99"), ("ttft_p50", "ttft", "p50"), ("ttft_p99", "ttft", "p99"))


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
                for metric, kind, q in ADDED
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
                **({"processes": processes} if (processes := _processes(rounds)) else {}),
            }
        )
    return rows


def _check(goal: str, row: dict[str, Any], mnemo: float | None, litellm: float | None, limit: float) -> dict[str, Any]:
    value = None if mnemo is None or litellm is None else stats.ratio(mnemo, litellm)
    return {
        "goal": goal,
        "target": row["target"],
        "api": row.get("api", "chat"),
        "stream": row["stream"],
        "concurrency": row["concurrency"],
        "mnemo": mnemo,
        "litellm": litellm,
        "ratio": value,
        "met": value is not None and value <= limit,
    }


def goals(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Memory on (``mnemo up``, and the production shape) against the LiteLLM proxy in the same
    run: added time (total, and to first token when streaming) <= 0.5x LiteLLM's at every
    concurrency; CPU per streamed chat <= 0.3x LiteLLM's (every process serving the target; the
    production shape's gateway alone too); and the absolute goal at concurrency 1."""
    by = {(r.get("api", "chat"), r["stream"], r["concurrency"], r["target"]): r for r in rows}
    checks = []
    for (api, stream, concurrency, target), row in sorted(by.items()):
        proxy = by.get((api, stream, concurrency, "litellm"))
        if target not in MEMORY_ON or proxy is None or not row["added_ms"]:
            continue
        added = ["p50", "p99", *(["ttft_p50"] if stream else [])]
        for metric in added:
            name = f"{target} added {metric.replace('ttft_', 'TTFT ')} <= {GOAL_RATIO} x litellm added"
            mine, theirs = row["added_ms"].get(metric), proxy["added_ms"].get(metric)
            checks.append(_check(name, row, mine, theirs, GOAL_RATIO))
        if stream:
            name = f"{target} CPU ms per chat <= {GOAL_CPU_RATIO} x litellm's"
            cpu = proxy["cpu_ms_per_request"]
            checks.append(_check(name, row, row["cpu_ms_per_request"], cpu, GOAL_CPU_RATIO))
            if "gateway" in row.get("processes", {}):
                gateway = row["processes"]["gateway"]["cpu_ms_per_request"]
                name = f"{target} gateway alone: CPU ms per chat <= {GOAL_CPU_RATIO} x litellm's"
                checks.append(_check(name, row, gateway, cpu, GOAL_CPU_RATIO))
        if concurrency == 1:
            name = f"{target} added p50 <= {GOAL_ADDED_C1_MS} ms at concurrency 1"
            absolute = {"litellm": None, "absolute_ms": GOAL_ADDED_C1_MS}
            checks.append(_check(name, row, row["added_ms"]["p50"], GOAL_ADDED_C1_MS, 1.0) | absolute)
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


def _goal_cell(check: dict[str, Any]) -> str:
    met = "yes" if check["met"] else "**no**"
    if "absolute_ms" in check:  # the value itself
        return f"{check['mnemo']:+.2f} ms {met}"
    return "–" if check["ratio"] is None else f"{check['ratio']:.2f} {met}"


def _goals(checks: list[dict[str, Any]], with_api: bool) -> list[str]:
    """One row per goal (and API), one column per streaming mode and concurrency: the ratio to
    LiteLLM's (or the value, for an absolute goal) and whether it is met."""
    if not checks:
        return ["## Goals", "", "None measured: they compare with the LiteLLM proxy, which this run left out."]
    columns = sorted({(c["stream"], c["concurrency"]) for c in checks})
    cells: dict[tuple[str, str, str], dict[tuple[bool, int], str]] = {}
    for check in checks:
        key = (check.get("target", "mnemo-on"), check.get("api", "chat"), check["goal"])
        cells.setdefault(key, {})[(check["stream"], check["concurrency"])] = _goal_cell(check)
    order = {target: index for index, target in enumerate(MEMORY_ON)}
    keys = sorted(cells, key=lambda k: (order.get(k[0], len(order)), k[1]))  # stable: goals keep their order
    api_head, api_rule = (" API |", "---|") if with_api else ("", "")
    titles = " | ".join(f"{'streaming' if stream else 'non-streaming'} c={c}" for stream, c in columns)
    lines = [
        "## Goals",
        "",
        "Ratio to the LiteLLM proxy's in the same run (an absolute goal: the value), and whether it is met.",
        "",
        f"| goal |{api_head} {titles} |",
        f"|---|{api_rule}{'---|' * len(columns)}",
    ]
    for target, api, goal in keys:
        row = cells[(target, api, goal)]
        api_cell = f" {api} |" if with_api else ""
        lines.append(f"| {goal} |{api_cell} " + " | ".join(row.get(col, "") for col in columns) + " |")
    return lines


def _slash(*values: float | None, signed: bool = False, digits: int = 2) -> str:
    def one(value: float | None) -> str:
        if value is None:
            return "–"
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"

    return " / ".join(one(v) for v in values)


def _over(mine: dict[str, Any] | None, proxy: dict[str, Any] | None, metric: str) -> float | None:
    """``mine``'s added ``metric`` over the proxy's, when both rows have it."""
    if mine is None or proxy is None or not mine["added_ms"] or not proxy["added_ms"]:
        return None
    return stats.ratio(mine["added_ms"][metric], proxy["added_ms"][metric])


def production_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per API, streaming mode and concurrency where the production shape ran: what it adds, its
    ratios to LiteLLM's beside mnemo up's, CPU and RSS process by process, and the chats per
    second one core of gateway serves (1000 / the gateway's CPU ms per chat)."""
    by = {(r.get("api", "chat"), r["stream"], r["concurrency"], r["target"]): r for r in result["summary"]}
    out = []
    for (api, stream, concurrency, target), row in sorted(by.items()):
        if target != SERVE:
            continue
        up, proxy = by.get((api, stream, concurrency, "mnemo-on")), by.get((api, stream, concurrency, "litellm"))
        processes = row.get("processes", {})
        cpu = {role: processes[role]["cpu_ms_per_request"] for role in ROLES if role in processes}
        gateway_cpu = cpu.get("gateway")
        out.append(
            {
                "api": api,
                "stream": stream,
                "concurrency": concurrency,
                "added_ms": row["added_ms"],
                "ttft_p50_over_litellm": {
                    SERVE: _over(row, proxy, "ttft_p50"),
                    "mnemo-on": _over(up, proxy, "ttft_p50"),
                },
                "cpu_ms_per_request": cpu
                | {
                    "all": row["cpu_ms_per_request"],
                    "mnemo-on": up["cpu_ms_per_request"] if up else None,
                    "litellm": proxy["cpu_ms_per_request"] if proxy else None,
                },
                "chats_per_s_per_gateway_core": round(1000 / gateway_cpu, 1) if gateway_cpu else None,
                "rss_mb": {role: processes[role]["rss_mb"] for role in ROLES if role in processes},
                "fail_open": row["fail_open"],
                "errors": row["errors"],
            }
        )
    return out


def _production(result: dict[str, Any], with_api: bool) -> list[str]:
    rows = production_rows(result)
    if not rows:
        return []
    api_head, api_rule = ("API | ", "---|") if with_api else ("", "")
    lines = [
        "## Production shape: mnemo serve + worker + Redis",
        "",
        f"`{SERVE}`: {result['setup'].get('serve') or 'mnemo serve, a worker process and a redis-server'}. "
        "CPU is read per process, the worker's after it drained the block's exchanges; *per gateway core* is "
        "1000 ÷ the gateway's CPU ms per chat; *÷ LiteLLM* is added time to first token over LiteLLM's, for "
        f"{SERVE} and for mnemo up (`mnemo-on`). Non-streaming, the first token is the whole body.",
        "",
        f"| {api_head}stream | c | added TTFT p50 / p99 | added total p50 / p99 | TTFT p50 ÷ LiteLLM: serve / up | "
        "CPU ms/chat: gateway / worker / Redis | CPU ms/chat: all / mnemo up / LiteLLM | chats/s per gateway core | "
        "RSS MB: gateway / worker / Redis | fail-open | errors |",
        f"|{api_rule}---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        added, cpu, rss = row["added_ms"], row["cpu_ms_per_request"], row["rss_mb"]
        ratio = row["ttft_p50_over_litellm"]
        api = f"{row['api']} | " if with_api else ""
        per_core = row["chats_per_s_per_gateway_core"]
        lines.append(
            f"| {api}{'yes' if row['stream'] else 'no'} | {row['concurrency']} | "
            f"{_slash(added.get('ttft_p50'), added.get('ttft_p99'), signed=True)} | "
            f"{_slash(added.get('p50'), added.get('p99'), signed=True)} | "
            f"{_slash(ratio[SERVE], ratio['mnemo-on'])} | "
            f"{_slash(cpu.get('gateway'), cpu.get('worker'), cpu.get('redis'))} | "
            f"{_slash(cpu['all'], cpu['mnemo-on'], cpu['litellm'])} | "
            f"{'–' if per_core is None else f'{per_core:.0f}'} | "
            f"{_slash(rss.get('gateway'), rss.get('worker'), rss.get('redis'), digits=0)} | "
            f"{row['fail_open']:.0f} | {row['errors']} |"
        )
    return [*lines, ""]


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
    lines += _production(result, with_api=False)
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
        serve = added(key, SERVE, "p50")
        out.append(
            {
                "api": key[0],
                "stream": key[1],
                "concurrency": key[2],
                "added_p50": {t: added(key, t, "p50") for t in (*MODES, SERVE, "litellm")},
                "added_ttft_p50": {t: added(key, t, "ttft_p50") for t in ("mnemo-on", "litellm")},
                "cpu_ms_per_request": {t: cpu(key, t) for t in ("direct", "mnemo-on", "litellm")},
                "mnemo_on_over_litellm": None if mnemo_on is None or proxy is None else stats.ratio(mnemo_on, proxy),
                "serve_on_over_litellm": None if serve is None or proxy is None else stats.ratio(serve, proxy),
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
        "| API | stream | c | mnemo-off | mnemo-read | mnemo-on | serve-on | LiteLLM | on ÷ LiteLLM | serve-on ÷ "
        "LiteLLM | added TTFT p50 on / LiteLLM | CPU ms/req direct / on / LiteLLM | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in api_summary(result, apis):
        added, ttft, cpu = row["added_p50"], row["added_ttft_p50"], row["cpu_ms_per_request"]
        lines.append(
            f"| {row['api']} | {'yes' if row['stream'] else 'no'} | {row['concurrency']} | "
            f"{_fmt(added['mnemo-off'])} | {_fmt(added['mnemo-read'])} | {_fmt(added['mnemo-on'])} | "
            f"{_fmt(added.get(SERVE))} | {_fmt(added['litellm'])} | {_fmt(row['mnemo_on_over_litellm'], False)} | "
            f"{_fmt(row.get('serve_on_over_litellm'), False)} | "
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
    lines += _production(result, with_api=True)
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
