"""`kb doctor`'s checks of $KB_HOME and each knowledge base in it (kb/doctor/__init__.py has the levels).

A KB is read, never changed: its manifest as JSON, meta.sqlite through a read-only connection (no schema
set-up, no lock), the FAISS file by the digest kb recorded for it (kb.stores.local.saved_index_state) and, when
that matches, by FAISS itself, and the tantivy keyword index by the generation it is tagged with
(kb.stores.local.keywords.index_state). The embedder is not loaded, and the write lock is looked up in /proc/locks
(elsewhere: tried without waiting and let go at once). It leaves out the documents' files on disk.
"""

from __future__ import annotations

import json
import os
import shlex
import sqlite3
from pathlib import Path
from typing import NamedTuple

from kb.config import Settings
from kb.doctor.findings import LEVELS, Finding, Level
from kb.doctor.models import TorchInfo, embedder_finding
from kb.errors import IndexFormatError, KBError
from kb.knowledge_base import KnowledgeBase
from kb.stores import catalog
from kb.stores import manifest as manifests
from kb.stores.dense import read_index
from kb.stores.local import saved_index_state
from kb.stores.local.keywords import fts5_kept, index_state
from kb.stores.local.schema import DENSE_LOG, read_only_uri
from kb.stores.manifest import read as read_manifest

SECTION = "knowledge bases"


class Problem(NamedTuple):
    """One thing wrong with a KB: how bad, what (a sentence), which check found it, and the fix."""

    level: Level
    summary: str
    check: str  # embedder, chunking, index, keywords, lock
    fix: str


def kb_findings(settings: Settings, t: TorchInfo) -> list[Finding]:
    """$KB_HOME, then one finding per knowledge base in it (or in Milvus, with store.backend: milvus)."""
    if settings.store.backend == "milvus":
        return milvus_findings(settings)
    home = settings.home_dir
    names = KnowledgeBase.names(settings)
    if not home.is_dir():
        text = f"{home} does not exist yet; `kb ingest PATH` creates it with a KB named '{settings.kb}'"
    elif not names:
        text = f"{home} holds no knowledge base yet; `kb ingest PATH --kb NAME` makes one"
    else:
        text = f"{home}: {len(names)} knowledge base{'s' if len(names) > 1 else ''}"
    out = [Finding(SECTION, "KB_HOME", "ok", text, facts={"home": str(home), "kbs": names})]
    return out + [kb_health(name, home / "kbs" / name, settings, t) for name in names]


def kb_health(name: str, folder: Path, settings: Settings, t: TorchInfo) -> Finding:
    """One knowledge base: counts, embedder, vector index and write lock, with a fix for each problem."""
    label = f"kb {name}"
    facts: dict = {"kb": name, "path": str(folder)}
    try:
        manifest = read_manifest(folder)
        stats = _read_db(folder, settings.store.keyword_engine)
    except (IndexFormatError, sqlite3.DatabaseError) as e:
        fix = f"move {folder} away and run `kb ingest PATH --kb {name}` (kb cannot open or rebuild it as it is)"
        return Finding(SECTION, label, "error", f"unreadable: {e}", fix=fix, facts=facts)
    built = manifest["embedder"]
    data = stats.pop("digest")
    docs = shlex.quote(stats.pop("folder") or "PATH")
    index = _index_problem(name, stats, data, built["dim"], docs)
    if index and stats["index"] in ("saved", "behind"):
        stats["index"] = "unreadable"
    facts.update(stats, embedder=built["model"], dim=built["dim"], embedders=manifests.models(manifest))
    problems = [p for p in (
        _embedder_problem(name, built, docs, settings, t),
        _chunking_problem(name, manifest["chunking"], docs, settings),
        index,
        _keywords_problem(name, stats, docs),
        _lock_problem(name, folder),
    ) if p]
    own, want = manifests.models(manifest), settings.embedding.models
    summary = f"{stats['documents']} documents, {stats['chunks']} chunks, embedder{'s' * (len(own) > 1)} {' + '.join(own)}"
    if own != want and not any(p.check == "embedder" for p in problems):
        summary += (f" (its own; the settings' {' + '.join(want)} appl{'y' if len(want) > 1 else 'ies'} after "
                    f"`kb ingest {docs} --kb {name} --rebuild`)")
    if not index:
        summary += "; vector index saved and verified" + (" (a few changes since, added on open)"
                                                          if stats["index"] == "behind" else "")
    if stats["keywords"] == "current":
        summary += ", keyword index up to date"
    level = max((p.level for p in problems), key=LEVELS.index, default="ok")
    facts["problems"] = [p._asdict() for p in problems]
    text = "; ".join([summary] + [p.summary for p in problems])
    return Finding(SECTION, label, level, text, fix="; ".join(p.fix for p in problems), facts=facts)


def _read_db(folder: Path, keyword_engine: str) -> dict:
    """Counts, the documents' common folder and the index files' states, through a read-only connection."""
    path = folder / "meta.sqlite"
    if not path.is_file():
        return {"documents": 0, "chunks": 0, "folder": "", "index": "missing", "index_file": "", "digest": None,
                "keywords": ""}
    db = sqlite3.connect(read_only_uri(path), uri=True)
    try:
        paths = [r[0] for r in db.execute("SELECT path FROM documents")]
        chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        state, index_file, digest = saved_index_state(db, folder)
        rebuilds = db.execute("SELECT value FROM meta WHERE key=?", (DENSE_LOG,)).fetchone()
        keywords = _keyword_state(db, folder) if keyword_engine == "tantivy" else ""
    finally:
        db.close()
    common = os.path.commonpath(paths) if paths else ""
    if len(paths) == 1:
        common = str(Path(common).parent)
    return {"documents": len(paths), "chunks": chunks, "folder": common, "index": state,
            "index_file": str(index_file), "digest": digest, "keywords": keywords,
            # the dense indexes' last full builds and why (kb/stores/local/index.py): the first build, a kind
            # change at retrieval.hnsw_threshold, tombstones, a centring refitted after its languages drifted
            "index_rebuilds": json.loads(rebuilds[0])[-3:] if rebuilds else []}


def _keyword_state(db: sqlite3.Connection, folder: Path) -> str:
    """index_state, with ' fts5' added where the KB still keeps FTS5's rows (searches fall back to them)."""
    try:
        state = index_state(db, folder)
    except ImportError:
        return "no tantivy"
    return f"{state} fts5" if state != "current" and fts5_kept(db) else state


def _keywords_problem(name: str, stats: dict, docs: str) -> Problem | None:
    """The tantivy keyword index (store.keyword_engine tantivy) missing or behind until the next ingest builds it
    from meta.sqlite: searches use SQLite FTS5 (the same results, slower on a large KB) where the KB still keeps
    it, else leave the documents changed since (all of them, when missing) to dense search."""
    state, fts5 = stats["keywords"].removesuffix(" fts5"), stats["keywords"].endswith(" fts5")
    if state in ("", "current") or not stats["chunks"]:
        return None
    if state == "no tantivy":
        return Problem("error", "the tantivy package is missing: the KB cannot be opened with "
                "store.keyword_engine tantivy", "keywords", "pip install 'tantivy>=0.27,<0.28' (a dependency of kb), "
                "or set store.keyword_engine: fts5")
    why = ("is missing (built with store.keyword_engine fts5 or by an older kb, or a first build was stopped)"
           if state == "missing" else "is behind the KB's last commit (a stopped ingest, or writes with fts5)")
    meanwhile = ("keyword searches use SQLite FTS5, slower on a large KB," if fts5 else
                 "keyword search is off" if state == "missing" else
                 "keyword searches leave out the documents changed since (dense search still finds them)")
    return Problem("warn", f"keyword index keywords.tantivy/ {why}: {meanwhile} until the next `kb ingest` "
            f"builds it ({stats['chunks']:,} chunks)", "keywords",
            f"kb ingest {docs} --kb {name} (re-embeds nothing, builds the keyword index)")


def _embedder_problem(name: str, built: dict, docs: str, settings: Settings, t: TorchInfo) -> Problem | None:
    """The rule KnowledgeBase.embedder() applies (kb.stores.manifest.embedder_mismatch): the KB keeps the model
    it was built with, and only a model or prefix named explicitly in the settings that differs is an error."""
    want = settings.embedding
    mine = manifests.pinned(built)
    differ = [f"embedding.{f} {getattr(want, f)!r}" for f in manifests.embedder_mismatch(built, want)]
    if differ:
        return Problem("error", f"searches fail: the settings' {', '.join(differ)} do not match the index "
                f"(built with {built['model']!r})", "embedder",
                f"kb ingest {docs} --kb {name} --rebuild (re-embeds with the configured model), or remove "
                "embedding.model from the settings to keep the KB's own")
    if built["model"] == want.model:
        return None  # the embedder line above covers it
    own = embedder_finding(want.model_copy(update=mine), settings.models_dir, t)
    if own.level == "error":
        return Problem("error", f"its embedder cannot be loaded here ({own.summary})", "embedder",
                f"{own.fix}, or kb ingest {docs} --kb {name} --rebuild to move it to {want.model}")
    return None


def _chunking_problem(name: str, built: dict, docs: str, settings: Settings) -> Problem | None:
    want = settings.chunking.model_dump()
    if built == want:
        return None
    return Problem("warn", f"ingesting into it fails: chunking settings {want} differ from those it was built with "
            f"{built}", "chunking", f"kb ingest {docs} --kb {name} --rebuild, or set chunking back to {built}")


def _index_problem(name: str, stats: dict, digest: str | None, dim: int, docs: str) -> Problem | None:
    """The FAISS file: saved as kb wrote it and readable, else rebuilt from meta.sqlite at every open."""
    if not stats["chunks"]:
        return Problem("warn", "empty: no documents yet", "index", f"kb ingest PATH --kb {name}")
    path = Path(stats["index_file"])
    rebuilt = (f"kb rebuilds the index from meta.sqlite each time the KB is opened ({stats['chunks']} chunks) "
               "until a good file is saved")
    if stats["index"] in ("saved", "behind"):  # behind: a few changes since, added by each reader on open
        try:
            index = read_index(path, digest)
        except IndexFormatError:
            index = None
        # an HNSW index also holds removed chunks (tombstones) until it is rebuilt
        if index is not None and index.d == dim and (stats["index"] == "behind" or index.ntotal >= stats["chunks"]):
            return None
    if stats["index"] == "missing":
        return Problem("warn", f"vector index file {path.name} is missing or out of date: {rebuilt}", "index",
                f"kb ingest {docs} --kb {name} (re-embeds nothing, saves the index)")
    return Problem("warn", f"vector index file {path.name} is damaged (not the file kb wrote): {rebuilt}", "index",
            f"kb ingest {docs} --kb {name} (re-embeds nothing, saves the index again)")


def _lock_problem(name: str, folder: Path) -> Problem | None:
    # The lock file is the one kb.stores.local.LocalCatalog.writer takes: <kbs>/<name>.lock.
    holder = lock_holder(folder.with_name(folder.name + ".lock"))
    if holder is None:
        return None
    who = f"process {holder}" if holder else "another process"
    return Problem("warn", f"being written by {who} right now (ingest, remove or rebuild): other writers fail or wait; "
            "searching works", "lock", f"wait for {who} to finish, or pass --wait SECONDS to queue behind it")


def lock_holder(path: Path) -> int | None:
    """The pid holding the flock on `path` (0 when held by an unknown process), or None when it is free.

    Linux lists flocks in /proc/locks, which reads a lock without taking it; elsewhere the lock is tried
    without waiting and let go at once."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return _probe(path)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    for line in lines:
        parts = line.split()  # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2146412 0 EOF"; waiters have "->"
        if len(parts) > 5 and parts[1] == "FLOCK" and parts[5] == where:
            return int(parts[4]) if parts[4].isdigit() else 0
    return None


def _probe(path: Path) -> int | None:
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return 0
    lock.release()
    return None


def milvus_findings(settings: Settings) -> list[Finding]:
    """The Milvus at store.uri (reached or not) and each KB in it: manifest, counts, embedder. The writer lease
    is read, not taken."""
    try:
        place = catalog(settings)
        names = place.names()
    except KBError as e:
        return [Finding(SECTION, "store", "error", str(e), fix="fix store.uri / store.token / store.db_name",
                        facts={"backend": "milvus", "uri": settings.store.uri})]
    out = [Finding(SECTION, "store", "ok", f"{place.where}: {len(names)} knowledge base{'s' * (len(names) != 1)}",
                   facts={"backend": "milvus", "where": place.where, "kbs": names})]
    for name in names:
        try:
            with KnowledgeBase.open(name, settings=settings, create=False) as base:
                stats = base.stats()
                lease = place._get(f"lease:{name}")
        except KBError as e:
            out.append(Finding(SECTION, f"kb {name}", "error", f"unreadable: {e}",
                               fix=f"kb ingest PATH --kb {name} --rebuild", facts={"kb": name}))
            continue
        text = f"{stats['documents']} documents, {stats['chunks']} chunks, embedder {stats['embedder']}"
        if lease:
            text += f"; being written by process {lease.get('pid')} on {lease.get('host')}"
        out.append(Finding(SECTION, f"kb {name}", "ok", text, facts={"kb": name, **stats}))
    return out
