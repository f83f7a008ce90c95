"""The gateway's Prometheus metrics, one registry per app (built in the lifespan, never global).

Counters and histograms are updated as requests flow; queue depth, outbox size and the
workers' totals (kept in Redis by every worker, see mnemo.job_metrics) are read when
``GET /metrics`` is scraped (gateway.metrics_route).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from mnemo.job_metrics import DURATION_BUCKETS, SKIP_REASONS, JobTotals

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# Up to memory.retrieval_ceiling_ms's default: a chat may wait that long behind a busy embedder.
RETRIEVAL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0)
INJECTED_BUCKETS = (0, 1, 2, 3, 4, 6, 8, 12, 16, 25, 50, 100)
# Counters the code increments by name; label names are sorted (the order /metrics shows them in).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "mnemo_requests_total": (
        "HTTP requests by route template, method, status and model row",
        ("method", "model", "route", "status"),
    ),
    "mnemo_exchanges_enqueued_total": ("Completed exchanges the queue accepted", ()),
    "mnemo_outbox_writes_total": ("Exchanges kept in the on-disk outbox while Redis was unavailable", ()),
    "mnemo_enqueue_failures_total": (
        "Exchanges the queue refused (queue_unavailable) or that were dropped (outbox_full, outbox_unavailable)",
        ("reason",),
    ),
    "mnemo_retrieval_fail_open_total": ("Chats answered without memory because retrieval failed", ("reason",)),
    "mnemo_memory_status_total": (
        "Requests by API (chat, responses, messages) and X-Mnemo-Memory-Status (ok, off, skipped:<reason>)",
        ("api", "status"),
    ),
    "mnemo_chat_errors_total": ("Chat requests answered with an error, by status", ("status",)),
    "mnemo_chat_lifecycles_total": (
        "Chat requests done with: reply sent or refused, and the record step run or skipped",
        (),
    ),
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        for name, (help_text, labels) in COUNTERS.items():
            self._counter(name, help_text, labels)
        self.ttft = self._histogram(
            "mnemo_chat_time_to_first_token_seconds",
            "Chat completions: request received to first reply byte sent (the whole body when not streaming)",
            LATENCY_BUCKETS,
        )
        self.latency = self._histogram(
            "mnemo_chat_duration_seconds", "Chat completions: request received to last byte sent", LATENCY_BUCKETS
        )
        self.retrieval = Histogram(
            "mnemo_retrieval_duration_seconds",
            "Memory retrieval per chat (embedding + search), including fail-opens",
            buckets=RETRIEVAL_BUCKETS,
            registry=self.registry,
        )
        self.injected = Histogram(
            "mnemo_memories_injected",
            "Memories injected per chat request that reads memory",
            buckets=INJECTED_BUCKETS,
            registry=self.registry,
        )

    def _counter(self, name: str, help_text: str, labels: tuple[str, ...]) -> Counter:
        counter = Counter(name.removesuffix("_total"), help_text, labels, registry=self.registry)
        self._counters[name] = counter
        return counter

    def _histogram(self, name: str, help_text: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, help_text, ("stream",), buckets=buckets, registry=self.registry)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        counter = self._counters.get(name) or self._counter(name, name, tuple(sorted(labels)))
        (counter.labels(**labels) if labels else counter).inc(amount)

    def value(self, name: str, **labels: str) -> float:
        sample = name if name.endswith("_total") else name + "_total"
        found = self.registry.get_sample_value(sample, labels)
        return 0.0 if found is None else found

    def observe_chat(self, *, stream: bool, ttft_s: float, duration_s: float) -> None:
        label = "true" if stream else "false"
        self.ttft.labels(stream=label).observe(ttft_s)
        self.latency.labels(stream=label).observe(duration_s)

    def observe_retrieval(self, elapsed_ms: float, injected: int) -> None:
        self.retrieval.observe(elapsed_ms / 1000)
        self.injected.observe(injected)


class ScrapeValues(Collector):
    """Values read at scrape time, rendered once (a fresh collector per scrape, no shared state)."""

    def __init__(
        self,
        queue_depth: int | None,
        outbox_size: int,
        jobs: JobTotals | None,
        vector_cache: tuple[int, int] | None = None,
    ) -> None:
        self.queue_depth = queue_depth
        self.outbox_size = outbox_size
        self.jobs = jobs
        self.vector_cache = vector_cache

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("mnemo_outbox_size", "Exchanges waiting in the outbox for Redis", self.outbox_size)
        if self.queue_depth is not None:
            yield GaugeMetricFamily(
                "mnemo_queue_depth", "Exchanges waiting to be applied (every user's pending list)", self.queue_depth
            )
        yield GaugeMetricFamily(
            "mnemo_queue_up", "1 when the queue answered this scrape", int(self.queue_depth is not None)
        )
        if self.jobs is not None:
            yield from worker_families(self.jobs)
        if self.vector_cache is not None:
            users, size = self.vector_cache
            yield GaugeMetricFamily("mnemo_vector_cache_users", "Users whose dense vectors are kept in memory", users)
            yield GaugeMetricFamily("mnemo_vector_cache_bytes", "Memory those vectors take", size)


def worker_families(jobs: JobTotals) -> Iterator[Metric]:
    outcomes = CounterMetricFamily("mnemo_worker_jobs", "Worker jobs by outcome (all workers)", labels=("outcome",))
    for outcome, count in sorted(jobs.jobs.items()):
        outcomes.add_metric([outcome], count)
    yield outcomes
    cumulative = [(f"{bound:g}", jobs.buckets.get(bound, 0.0)) for bound in DURATION_BUCKETS]
    yield HistogramMetricFamily(
        "mnemo_worker_job_duration_seconds",
        "Worker job duration, waiting for the user's turn included (all workers)",
        buckets=[*cumulative, ("+Inf", jobs.duration_count)],
        sum_value=jobs.duration_sum,
    )
    tokens = CounterMetricFamily(
        "mnemo_extraction_tokens", "LLM tokens spent on extraction by applied jobs", labels=("kind",)
    )
    for kind in ("prompt", "completion"):
        tokens.add_metric([kind], jobs.counters.get(f"{kind}_tokens", 0.0))
    yield tokens
    for name, help_text in (
        ("llm_calls", "LLM calls made by applied jobs"),
        ("memories_created", "Memories written by applied jobs"),
        ("memories_invalidated", "Memories invalidated by applied jobs"),
        ("memories_truncated", "Raw-mode memories stored cut to limits.max_memory_chars"),
        ("memories_expired", "Memories erased by the retention sweep once expired (mnemo.retention)"),
    ):
        yield CounterMetricFamily(f"mnemo_worker_{name}", help_text, jobs.counters.get(name, 0.0))
    skipped = CounterMetricFamily(
        "mnemo_worker_memories_skipped",
        "Memories exchanges would have created beyond the limits (limits.*), skipped",
        labels=("reason",),
    )
    for reason in SKIP_REASONS:
        skipped.add_metric([reason], jobs.counters.get(f"memories_skipped:{reason}", 0.0))
    yield skipped
