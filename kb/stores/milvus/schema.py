"""The Milvus collections kb keeps, and how values are written into their rows.

One registry collection per database (kb_registry: key -> JSON value) and four collections per KB build
(<prefix><build>_chunks, _docs, _texts, _meta), plus one per other embedder of a KB's ensemble
(_side_<tag>), created here with their indexes; `check_chunks` refuses a chunks collection of another
format and `check_sides` a build without its ensemble's collections. The row helpers (`literal` for lists
in filters, `pk` for primary keys, `cut` for VARCHAR limits, `bm25_text` for the BM25 field) are shared by
the store's reads and writes. The meaning of the rows (versions, commits, centrings) is the store's
(rows.py, writes.py, sides.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterable
from typing import Any

from kb.errors import IndexFormatError, StorageError
from kb.stores.milvus.client import first_line, import_pymilvus, load
from kb.text.lang import LANGUAGES

REGISTRY = "kb_registry"
BATCH = 1000  # rows per insert/upsert/query call
TEXT_PART = 16_000  # characters per stored part of a document's text (at most 48 KB of UTF-8)
VARCHAR_MAX = 65_535
_ANALYZER = {"tokenizer": {"type": "jieba", "mode": "exact"}}  # kb's terms are jieba-segmented already
_BM25 = {"bm25_k1": 1.2, "bm25_b": 0.75}  # SQLite FTS5's bm25() constants, so that both stores rank alike
_WORDS = re.compile(r"\w+")
_ASCII_WORD = re.compile(r"^[a-z]+$")
_stemmers = threading.local()

CHUNK_OUT = ["chunk_id", "doc_id", "version", "ordinal", "text", "section", "page", "char_start", "char_end"]
DOC_LIST = ["doc_id", "path", "title", "file_type", "content_hash", "size", "mtime", "ingested_at", "version", "chunks",
            "parts"] + [f"n_{lang}" for lang in LANGUAGES]  # a document row without its vector sums
DOC_FIELDS = {"doc_id", "path", "title", "file_type", "content_hash", "size", "version", "chunks", "parts", "mtime",
              "ingested_at", "side_sums"} | {f"{k}_{lang}" for k in ("n", "sum") for lang in LANGUAGES}
SIDE_FIELDS = ["pk", "chunk_id", "doc_id", "version", "lang", "centring", "norm", "vector"]  # a side collection's row


def create_collection(client, name: str, schema, indexes: list[tuple]) -> None:
    """A collection with (field, index type, metric[, index params]) indexes, loaded, strongly consistent."""
    params = client.prepare_index_params()
    for field, kind, metric, *extra in indexes:
        params.add_index(field_name=field, index_type=kind, metric_type=metric, params=extra[0] if extra else {})
    client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")


def ensure_registry(client, where: str) -> None:
    """The registry collection, created if new, loaded; IndexFormatError if a collection of that name is not kb's."""
    pymilvus = import_pymilvus()
    if client.has_collection(REGISTRY):
        fields = {f["name"] for f in client.describe_collection(REGISTRY)["fields"]}
        if not {"key", "value"} <= fields:
            raise IndexFormatError(
                f"the collection {REGISTRY} in {where} is not kb's (fields {sorted(fields)}); point "
                "store.uri or store.db_name at a database of kb's own")
        load(client, REGISTRY)
        return
    create_collection(client, REGISTRY, _key_value(pymilvus), [("_v", "FLAT", "L2")])


def _key_value(pymilvus):
    """The schema of the registry and of a KB's meta collection: key -> value (JSON or text)."""
    schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("key", pymilvus.DataType.VARCHAR, max_length=512, is_primary=True)
    schema.add_field("value", pymilvus.DataType.VARCHAR, max_length=VARCHAR_MAX)
    schema.add_field("_v", pymilvus.DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
    return schema


def create_collections(client, prefix: str, dim: int, ensemble: dict[str, int] | None = None) -> None:
    """The four collections of one KB build: <prefix>_chunks, _docs, _texts and _meta; and for each other embedder
    of its ensemble (model -> dim) a side collection, with the documents' rows holding its running sums."""
    pymilvus = import_pymilvus()
    ensemble = ensemble or {}
    # each model's per-language sums, base64 float32 in JSON (side_sums), must fit one VARCHAR
    if sum(ensemble.values()) * len(LANGUAGES) * 6 + 200 * len(ensemble) > VARCHAR_MAX:
        raise StorageError(f"the ensemble {sorted(ensemble)} has too many dimensions in all for the Milvus store "
                           "(about 5000 at most); configure fewer embedding.models, or use store.backend=local")
    DataType, Function, FunctionType = pymilvus.DataType, pymilvus.Function, pymilvus.FunctionType
    schema = pymilvus.MilvusClient.create_schema

    chunks = schema(auto_id=False, enable_dynamic_field=False)
    chunks.add_field("pk", DataType.INT64, is_primary=True)
    chunks.add_field("chunk_id", DataType.INT64)
    chunks.add_field("doc_id", DataType.VARCHAR, max_length=64)
    chunks.add_field("version", DataType.INT64)
    chunks.add_field("ordinal", DataType.INT64)
    chunks.add_field("text", DataType.VARCHAR, max_length=VARCHAR_MAX)
    chunks.add_field("section", DataType.VARCHAR, max_length=4096)
    chunks.add_field("page", DataType.INT64, nullable=True)
    chunks.add_field("char_start", DataType.INT64)
    chunks.add_field("char_end", DataType.INT64)
    chunks.add_field("lang", DataType.VARCHAR, max_length=8)
    chunks.add_field("centring", DataType.INT64)
    chunks.add_field("norm", DataType.FLOAT)
    chunks.add_field("terms", DataType.VARCHAR, max_length=VARCHAR_MAX)  # kb's, as given (export, migrate)
    chunks.add_field("bm25_text", DataType.VARCHAR, max_length=VARCHAR_MAX, enable_analyzer=True,
                     analyzer_params=_ANALYZER)
    chunks.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    chunks.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    chunks.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["bm25_text"],
                                 output_field_names=["sparse"]))
    create_collection(client, prefix + "_chunks", chunks, [("vector", "AUTOINDEX", "IP"),
                                                           ("sparse", "SPARSE_INVERTED_INDEX", "BM25", _BM25)])

    docs = schema(auto_id=False, enable_dynamic_field=False)
    docs.add_field("doc_id", DataType.VARCHAR, max_length=64, is_primary=True)
    for field, size in (("path", 4096), ("title", 2048), ("file_type", 32), ("content_hash", 128)):
        docs.add_field(field, DataType.VARCHAR, max_length=size)
    for field in ("size", "version", "chunks", "parts"):
        docs.add_field(field, DataType.INT64)
    docs.add_field("mtime", DataType.DOUBLE)
    docs.add_field("ingested_at", DataType.DOUBLE)
    for lang in LANGUAGES:
        docs.add_field(f"n_{lang}", DataType.INT64)
        docs.add_field(f"sum_{lang}", DataType.FLOAT_VECTOR, dim=dim)
    if ensemble:  # not a vector field per model and language: Milvus allows few vector fields per collection
        docs.add_field("side_sums", DataType.VARCHAR, max_length=VARCHAR_MAX)
    create_collection(client, prefix + "_docs", docs, [(f"sum_{lang}", "FLAT", "IP") for lang in LANGUAGES])

    texts = schema(auto_id=False, enable_dynamic_field=False)
    texts.add_field("pk", DataType.INT64, is_primary=True)
    texts.add_field("doc_id", DataType.VARCHAR, max_length=64)
    texts.add_field("version", DataType.INT64)
    texts.add_field("part", DataType.INT64)
    texts.add_field("text", DataType.VARCHAR, max_length=VARCHAR_MAX)
    texts.add_field("_v", DataType.FLOAT_VECTOR, dim=2)
    create_collection(client, prefix + "_texts", texts, [("_v", "FLAT", "L2")])

    create_collection(client, prefix + "_meta", _key_value(pymilvus), [("_v", "FLAT", "L2")])

    for model, side_dim in ensemble.items():
        side = schema(auto_id=False, enable_dynamic_field=False)
        side.add_field("pk", DataType.INT64, is_primary=True)
        side.add_field("chunk_id", DataType.INT64)
        side.add_field("doc_id", DataType.VARCHAR, max_length=64)
        side.add_field("version", DataType.INT64)
        side.add_field("lang", DataType.VARCHAR, max_length=8)
        side.add_field("centring", DataType.INT64)
        side.add_field("norm", DataType.FLOAT)
        side.add_field("vector", DataType.FLOAT_VECTOR, dim=side_dim)
        create_collection(client, side_collection(prefix, model), side, [("vector", "AUTOINDEX", "IP")])


def side_collection(prefix: str, model: str) -> str:
    """The collection of one other embedder's vectors in a build: named by a hash of the model's name (Milvus
    names allow letters, digits and '_' only)."""
    return f"{prefix}_side_{side_tag(model)}"


def side_tag(model: str) -> str:
    return hashlib.blake2b(model.encode(), digest_size=4).hexdigest()


def check_chunks(client, collection: str, where: str) -> None:
    """IndexFormatError naming the KB and the fix unless `collection` is a chunks collection in kb's format."""
    try:
        fields = {f["name"] for f in client.describe_collection(collection)["fields"]}
    except Exception as e:
        raise IndexFormatError(f"{where}: collection {collection} cannot be read ({first_line(e)}); "
                               "rebuild the KB with `kb ingest PATH --rebuild`") from e
    missing = {"chunk_id", "doc_id", "version", "vector", "sparse", "terms", "bm25_text", "norm", "centring"} - fields
    if missing:
        raise IndexFormatError(f"{where}: collection {collection} is not in kb's format (no {sorted(missing)}); "
                               "rebuild the KB with `kb ingest PATH --rebuild`")


def check_sides(client, docs: str, sides: dict[str, str], where: str) -> None:
    """IndexFormatError naming the KB and the fix unless the build holds a collection for each embedder of the
    manifest's ensemble (model -> collection) and documents' rows with their sums."""
    missing = [model for model, collection in sides.items() if not client.has_collection(collection)]
    if sides and not missing and "side_sums" not in {f["name"] for f in client.describe_collection(docs)["fields"]}:
        missing = sorted(sides)
    if missing:
        raise IndexFormatError(f"{where} holds no vectors of embedding model(s) {missing}, which its manifest lists; "
                               "rebuild the KB with `kb ingest PATH --rebuild`")


def literal(values: Iterable[Any]) -> str:
    """A Milvus list literal: ["a", "b"] or [1, 2]."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) if isinstance(v, str) else str(int(v))
                           for v in values) + "]"


def pk(*parts: Any) -> int:
    """A row's primary key: 63 bits of a hash of its parts (chunk id and version; doc id, version and part)."""
    digest = hashlib.blake2b(":".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


def bm25_text(terms: str) -> str:
    """kb's keyword terms as the local store's FTS5 index sees them: split at punctuation (unicode61) and English
    words Porter-stemmed (snowball's original Porter algorithm, as FTS5's porter tokenizer), so that both stores
    rank by the same terms. Milvus's BM25 function reads this text."""
    stemmer = getattr(_stemmers, "porter", None)
    if stemmer is None:
        import snowballstemmer  # optional: the `milvus` extra

        stemmer = _stemmers.porter = snowballstemmer.stemmer("porter")  # not thread-safe: one per thread
    words = _WORDS.findall(terms)
    return " ".join(stemmer.stemWord(w) if _ASCII_WORD.match(w) else w for w in words)


def cut(text: str, limit: int = VARCHAR_MAX) -> str:
    """Text that fits a VARCHAR of `limit` bytes."""
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", "ignore")
