"""GET /metrics against a running Mnemo: the counters and histograms move as traffic flows,
worker totals reach the gateway through Redis, and scrape-time gauges answer.

The tests share one Mnemo (each has its own users), so they read how far each series moved."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mnemo.logs import JsonFormatter, RequestIdFilter
from tests.conftest import wait_until
from tests.support.probes import (
    EAGER_MEMORY,
    LITELLM_READONLY_WARNING,
    Gateways,
    drain,
    new_user,
    sync_client,
    user_message,
)
from tests.support.servers import MnemoThread
from tests.support.upstream import ScriptedUpstream

pytestmark = LITELLM_READONLY_WARNING

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def mnemo(gateways: Gateways) -> MnemoThread:
    return gateways.get(memory=EAGER_MEMORY)


def scrape(mnemo: MnemoThread) -> Samples:
    response = httpx.get(mnemo.url + "/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


CHAT_200 = {"method": "POST", "model": "*", "route": "/v1/chat/completions", "status": "200"}


def test_chat_traffic_moves_request_latency_retrieval_and_worker_metrics(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    before = scrape(mnemo)
    assert value(before, "mnemo_queue_depth") == 0 and value(before, "mnemo_queue_up") == 1
    client = sync_client(mnemo, new_user("mia"))
    client.chat.completions.create(model="gpt-test", messages=user_message("I live in Austin"))
    wait_until(lambda: moved(before, scrape(mnemo), "mnemo_worker_jobs_total", outcome="applied") == 1)
    upstream.first_chunk_delay_s = 0.3
    stream = client.chat.completions.create(model="gpt-test", messages=user_message("Where do I live?"), stream=True)
    assert "Where do I live?" in "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    drain(mnemo)
    wait_until(lambda: moved(before, scrape(mnemo), "mnemo_worker_jobs_total", outcome="applied") == 2)
    after = scrape(mnemo)
    assert moved(before, after, "mnemo_requests_total", **CHAT_200) == 2
    for stream_label in ("true", "false"):
        assert moved(before, after, "mnemo_chat_time_to_first_token_seconds_count", stream=stream_label) == 1
        assert moved(before, after, "mnemo_chat_duration_seconds_count", stream=stream_label) == 1
    assert moved(before, after, "mnemo_chat_time_to_first_token_seconds_sum", stream="true") >= 0.3
    assert moved(before, after, "mnemo_chat_time_to_first_token_seconds_bucket", stream="true", le="0.25") == 0
    assert moved(before, after, "mnemo_retrieval_duration_seconds_count") == 2
    assert moved(before, after, "mnemo_memories_injected_count") == 2
    assert moved(before, after, "mnemo_memories_injected_sum") >= 1  # the second chat saw the first one's memory
    assert moved(before, after, "mnemo_exchanges_enqueued_total") == 2
    assert moved(before, after, "mnemo_chat_lifecycles_total") == 2
    assert moved(before, after, "mnemo_worker_job_duration_seconds_count") == 2
    assert moved(before, after, "mnemo_extraction_tokens_total", kind="prompt") > 0
    assert moved(before, after, "mnemo_worker_llm_calls_total") >= 2
    assert moved(before, after, "mnemo_worker_memories_created_total") >= 1
    assert value(after, "mnemo_outbox_size") == 0


def test_other_routes_are_counted_by_template_and_errors_by_status(mnemo: MnemoThread) -> None:
    before = scrape(mnemo)
    with httpx.Client(base_url=mnemo.url, timeout=10) as api:
        assert api.get("/v1/memories/mem_unknown").status_code == 404
        assert api.get("/v1/models").status_code == 200
        assert api.post("/v1/chat/completions", json={"model": "m"}).status_code == 400
        assert api.get("/no/such/path").status_code == 404
    after = scrape(mnemo)
    get = {"method": "GET", "model": ""}
    assert moved(before, after, "mnemo_requests_total", **get, route="/v1/memories/{memory_id}", status="404") == 1
    assert moved(before, after, "mnemo_requests_total", **get, route="/v1/models", status="200") == 1
    chat_400 = {**CHAT_200, "model": "", "status": "400"}
    assert moved(before, after, "mnemo_requests_total", **chat_400) == 1
    assert moved(before, after, "mnemo_chat_errors_total", status="400") == 1
    assert moved(before, after, "mnemo_chat_lifecycles_total") == 1  # a refused chat is done with too
    assert moved(before, after, "mnemo_requests_total", **get, route="unmatched", status="404") == 1
    # Errors are not latency samples.
    assert moved(before, after, "mnemo_chat_duration_seconds_count", stream="false") == 0


def routes_counted(samples: Samples) -> set[tuple[str, str, str]]:
    return {
        (labels["method"], labels["route"], labels["status"])
        for (name, label_set), _ in samples.items()
        if name == "mnemo_requests_total"
        for labels in [dict(label_set)]
    }


def test_mem0_routes_are_labelled_with_their_mount_and_a_miss_under_the_mount_is_unmatched(mnemo: MnemoThread) -> None:
    with httpx.Client(base_url=mnemo.url, timeout=10) as api:
        assert api.get("/mem0/v1/ping/").status_code == 200
        assert api.get("/mem0/v1/memories/mem_unknown/").status_code == 404
        assert api.get("/mem0/v1/memories/mem_unknown/history/").status_code == 404
        assert api.get("/mem0/no/such/path/").status_code == 404
        assert api.post("/mem0/v1/ping/").status_code == 405
    routes = routes_counted(scrape(mnemo))
    assert {
        ("GET", "/mem0/v1/ping/", "200"),
        ("GET", "/mem0/v1/memories/{memory_id}/", "404"),
        ("GET", "/mem0/v1/memories/{memory_id}/history/", "404"),
        ("GET", "unmatched", "404"),
        ("POST", "/mem0/v1/ping/", "405"),
    } <= routes
    assert not {route for _, route, _ in routes if route == "/mem0" or route.startswith("/v1/ping")}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.addFilter(RequestIdFilter())
        self.lines: list[dict[str, Any]] = []
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


def test_logs_follow_the_request_id_into_the_worker_without_message_text(
    mnemo: MnemoThread, upstream: ScriptedUpstream
) -> None:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        raw = sync_client(mnemo, new_user("noa")).chat.completions.with_raw_response.create(
            model="gpt-test", messages=user_message("My secret garden is in Porto")
        )
        request_id = raw.headers["x-mnemo-request-id"]
        wait_until(lambda: any(line.get("request_id") == request_id for line in handler.lines))
        drain(mnemo)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    worker_lines = [line for line in handler.lines if line["logger"].startswith("workers")]
    assert any(line.get("request_id") == request_id for line in worker_lines)
    assert not any("Porto" in json.dumps(line) for line in handler.lines)


def test_a_responses_call_is_a_chat_for_the_latency_histograms(mnemo: MnemoThread) -> None:
    before = scrape(mnemo)
    with httpx.Client(base_url=mnemo.url, timeout=10) as api:
        responses = api.post("/v1/responses", json={"model": "gpt-test", "input": "hello"})
        assert responses.status_code == 200, responses.text
    after = scrape(mnemo)
    assert moved(before, after, "mnemo_chat_duration_seconds_count", stream="false") == 1
    assert moved(before, after, "mnemo_chat_time_to_first_token_seconds_count", stream="false") == 1


# --- tests that need settings of their own (kept last: each starts a Mnemo) ---------------


def test_a_request_refused_for_its_key_is_labelled_by_the_route_it_asked_for(gateways: Gateways) -> None:
    mnemo = gateways.get(auth={"admin_keys": ["admin-key-0123456789abc"]})
    with httpx.Client(base_url=mnemo.url, timeout=10) as anonymous:
        assert anonymous.get("/v1/memories/mem_unknown").status_code == 401
        assert anonymous.get("/mem0/v1/memories/mem_unknown/").status_code == 401
        assert anonymous.get("/v1/no/such/path").status_code == 401
    routes = routes_counted(scrape(mnemo))
    assert {
        ("GET", "/v1/memories/{memory_id}", "401"),
        ("GET", "/mem0/v1/memories/{memory_id}/", "401"),
    } <= routes


def test_the_vector_cache_gauges_follow_a_heavy_user_in_and_out(gateways: Gateways, upstream: ScriptedUpstream) -> None:
    # The embedded store, caching the vectors of users with 3 memories or more.
    mnemo, heavy = gateways.get(memory=EAGER_MEMORY, store_options={"vector_cache_min_memories": 3}), new_user("heavy")
    with httpx.Client(base_url=mnemo.url, timeout=30) as api:
        before = scrape(mnemo)
        assert before[("mnemo_vector_cache_users", frozenset())] == 0  # present (the embedded store), and empty
        assert before[("mnemo_vector_cache_bytes", frozenset())] == 0
        facts = ["I live in Austin", "I have a greyhound", "I play the violin"]
        assert api.post("/v1/memories", json={"user_id": heavy, "facts": facts}).status_code == 201
        sync_client(mnemo, heavy).chat.completions.create(model="gpt-test", messages=user_message("Any pets?"))
        wait_until(lambda: value(scrape(mnemo), "mnemo_vector_cache_users") == 1)
        assert value(scrape(mnemo), "mnemo_vector_cache_bytes") >= 3 * 384 * 4
        assert api.delete(f"/v1/users/{heavy}").status_code == 200
        assert value(scrape(mnemo), "mnemo_vector_cache_users") == 0
