"""The Milvus store: knowledge bases in Milvus, shared by every machine and `kb serve` replica pointed at it.

store.uri names the Milvus: a path ending in .db runs Milvus Lite inside this process (the `milvus-lite`
package; one process per file), http://host:19530 a Milvus standalone server or cluster. Everything a KB
is lives there, so a second machine sees the same KB:

    kb_registry                  key -> value: "kb:<name>" -> {build, manifest}; "lease:<name>" -> the writer
    kb_<name>_<hash>_<build>_chunks   one row per chunk version: kb's chunk id, document id and version,
                                 text, place, language, the centred vector (+ its norm before centring),
                                 kb's keyword terms, and Milvus's BM25 sparse vector made from them (split
                                 and Porter-stemmed as SQLite FTS5 does for the local store)
    ..._docs                     one row per document: path, content hash, size, mtime, its current version,
                                 and the sum of its chunks' raw vectors per language (for centring)
    ..._texts                    each document's full text in parts (for neighbour expansion and citations)
    ..._meta                     generation, the embedder's language prior, centrings, pending writes
    ..._side_<tag>               a KB built with an ensemble: one per other embedder, one row per chunk version it
                                 embedded (none for chunks it skipped), centred on its own language means

Commits. Milvus has no transactions, so a document is written as a new *version* beside the old one: its
chunks and text parts first, then its document row, whose upsert is the commit point (readers only see
chunks whose version is the one their document row names), then the old version is deleted (the ensemble's
side rows are versioned with the chunks). A "pending" row in meta, written before and deleted after, lets the
next writer delete whatever a killed one left.

Centring (kb/stores/centring.py). Stored vectors are already moved into the KB's language-centred space with the
centring recorded under the id in each row, and keep their norm, so the raw vector is exactly
`vector * norm + mean`. `finish()` refits the centring from the documents' running sums and rewrites the
vectors only when a mean moved by more than RECENTRE_AT (the first ingest, or a KB that grew a lot).

Writers. Each KB has a lease in the registry, renewed by a background thread; a second writer gets
LockedError naming the holder. A lease whose holder died is free when it expires, or at once on the holder's
own machine (its process id is gone). Milvus has no compare-and-set, so the lease is written, then read back
after LEASE_SETTLE seconds: of two writers that raced, only the one whose write stands goes on.

The parts: client.py (store.uri, the client, Milvus's errors as kb's), schema.py (the collections and the
row helpers), catalog.py (MilvusCatalog: the registry, builds, the writer Lease), rows.py, centring.py,
sides.py, writes.py and store.py (MilvusStore, in layers: the rows and meta, centring upkeep, the ensemble's
side collections, commits, reads and search). This package gives their public names in one place.
"""

from __future__ import annotations

from kb.stores.milvus.catalog import LEASE_SETTLE, Lease, MilvusCatalog, collection_prefix
from kb.stores.milvus.centring import RECENTRE_AT, REFIT_FROM
from kb.stores.milvus.client import connect, disconnect, load, resolve_uri
from kb.stores.milvus.schema import BATCH, REGISTRY, TEXT_PART, VARCHAR_MAX, bm25_text, create_collections
from kb.stores.milvus.store import EXTRA, MilvusStore

__all__ = ["BATCH", "EXTRA", "LEASE_SETTLE", "RECENTRE_AT", "REFIT_FROM", "REGISTRY", "TEXT_PART", "VARCHAR_MAX",
           "Lease", "MilvusCatalog", "MilvusStore", "bm25_text", "collection_prefix", "connect", "create_collections",
           "disconnect", "load", "resolve_uri"]
