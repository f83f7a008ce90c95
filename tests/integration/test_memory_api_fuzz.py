"""Bad input never makes a 500: hypothesis throws arbitrary query strings, JSON bodies, ids and
headers at every memory, request-lookup and mem0 endpoint of a running Mnemo (with keys, so
the access layer is fuzzed too) and asserts every answer is below 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnemo.config import Settings
from tests.support.servers import MnemoThread

KEY = "fuzz-tenant-key-0123456789"
ADMIN = "fuzz-admin-key-0123456789"
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["user_id", "agent_id", "session_id", "run_id", "facts", "messages", "infer", "metadata", "query"]
FIELDS += ["limit", "threshold", "text", "reason", "filters", "top_k", "page", "page_size"]
# Mostly a real user, so fuzzed values get past the first check and reach the store and the embedder.
users = st.fixed_dictionaries({}, optional={"user_id": st.sampled_from(["u", "alice", "a" * 129, "x/y"])})
objects = st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)
bodies = st.builds(lambda user, rest: {**rest, **user}, users, objects) | json_values
PARAMS = ["user_id", "agent_id", "session_id", "run_id", "limit", "offset", "as_of", "created_after"]
PARAMS += ["created_before", "include_invalidated", "hard", "metadata.k", "metadata.", "page", "page_size"]
params = st.builds(
    lambda user, rest: {**rest, **user},
    users,
    st.dictionaries(st.sampled_from(PARAMS), st.text(max_size=30), max_size=5),
)
ids = st.text(max_size=40).map(lambda text: quote(text, safe="")).filter(lambda text: text not in ("", ".", ".."))
header_text = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=30)  # what HTTP allows
keys = st.sampled_from([{"X-Mnemo-Api-Key": KEY}, {"Authorization": f"Token {KEY}"}, {"X-Mnemo-Api-Key": ADMIN}])
keys |= st.builds(lambda k, t: {"X-Mnemo-Api-Key": k, "X-Mnemo-Tenant": t}, st.just(ADMIN), header_text)
keys |= st.builds(lambda v: {"Authorization": v}, header_text)

BODY_ROUTES = [
    ("POST", "/v1/memories"),
    ("POST", "/v1/memories/search"),
    ("PATCH", "/v1/memories/{id}"),
    ("POST", "/mem0/v3/memories/add/"),
    ("POST", "/mem0/v3/memories/"),
    ("POST", "/mem0/v3/memories/search/"),
    ("PUT", "/mem0/v1/memories/{id}/"),
]
QUERY_ROUTES = [
    ("GET", "/v1/memories"),
    ("GET", "/v1/events"),
    ("GET", "/v1/memories/{id}"),
    ("DELETE", "/v1/memories/{id}"),
    ("GET", "/v1/memories/{id}/history"),
    ("GET", "/v1/users/{id}/export"),
    ("DELETE", "/v1/users/{id}"),
    ("GET", "/v1/requests/{id}"),
    ("GET", "/mem0/v1/memories/{id}/"),
    ("DELETE", "/mem0/v1/memories/{id}/"),
    ("DELETE", "/mem0/v1/memories/"),
    ("GET", "/mem0/v1/memories/{id}/history/"),
]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    from tests.conftest import REDIS_URL

    data = tmp_path_factory.mktemp("fuzz")
    auth = {"admin_keys": [ADMIN], "tenants": [{"id": "fuzz", "keys": [KEY]}]}
    raw: dict[str, Any] = {"data_dir": str(data), "redis": {"url": REDIS_URL, "queue_name": "mnemo:test:fuzz"}}
    mnemo = MnemoThread(Settings.model_validate({**raw, "auth": auth, "extraction": {"mode": "raw"}}), worker=False)
    mnemo.start()
    with httpx.Client(base_url=mnemo.url, timeout=30) as client:
        seeded = client.post("/v1/memories", json={"user_id": "u", "facts": ["seed"]}, headers={"X-Mnemo-Api-Key": KEY})
        assert seeded.status_code == 201
        yield client
    mnemo.stop()


def assert_no_5xx(send: Callable[[], httpx.Response]) -> None:
    response = send()
    assert response.status_code < 500, (response.request.method, response.request.url, response.text)


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), memory_id=ids, body=bodies, headers=keys)
def test_fuzzed_bodies_never_make_a_5xx(
    api: httpx.Client, route: tuple[str, str], memory_id: str, body: Any, headers: dict[str, str]
) -> None:
    method, path = route
    assert_no_5xx(lambda: api.request(method, path.replace("{id}", memory_id), json=body, headers=headers))


@FUZZ
@given(route=st.sampled_from(QUERY_ROUTES), memory_id=ids, query=params, headers=keys)
def test_fuzzed_query_strings_and_ids_never_make_a_5xx(
    api: httpx.Client, route: tuple[str, str], memory_id: str, query: dict[str, str], headers: dict[str, str]
) -> None:
    method, path = route
    assert_no_5xx(lambda: api.request(method, path.replace("{id}", memory_id), params=query, headers=headers))


@FUZZ
@given(route=st.sampled_from(BODY_ROUTES), raw=st.binary(max_size=200))
def test_bodies_that_are_not_json_objects_never_make_a_5xx(
    api: httpx.Client, route: tuple[str, str], raw: bytes
) -> None:
    method, path = route
    headers = {"X-Mnemo-Api-Key": KEY, "content-type": "application/json"}
    assert_no_5xx(lambda: api.request(method, path.replace("{id}", "mem_x"), content=raw, headers=headers))
