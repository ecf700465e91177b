"""The store suite: every test runs against both stores, the local one (SQLite + FAISS; with tantivy as its
keyword engine, the default, and with FTS5 alone) and Milvus (Milvus Lite, the same client a Milvus server or cluster uses). Ingest, re-ingest, replacement, prune, remove, filters, each
search mode, neighbours, manifest checks, SIGKILL during ingest, and two writers behave the same on both."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from kb import KnowledgeBase
from kb.config import Settings
from kb.errors import EmbedderMismatchError, IndexFormatError, KBError, LockedError, StorageError
from kb.stores import catalog

pytest.importorskip("pymilvus")
BACKENDS = ["local", "tantivy", "milvus"]


@pytest.fixture(params=BACKENDS)
def store_settings(request, settings, tmp_path, monkeypatch):
    """Settings of one store; for Milvus a Milvus Lite file of this test's own (freed afterwards)."""
    if request.param == "local":  # SQLite FTS5 alone (store.keyword_engine fts5)
        monkeypatch.setenv("KB_STORE__KEYWORD_ENGINE", "fts5")
        yield Settings(home=settings.home, store={"keyword_engine": "fts5"})
        return
    if request.param == "tantivy":  # the default
        monkeypatch.setenv("KB_STORE__KEYWORD_ENGINE", "tantivy")
        yield Settings(home=settings.home, store={"keyword_engine": "tantivy"})
        return
    uri = str(tmp_path / "kb.db")
    monkeypatch.setenv("KB_STORE__BACKEND", "milvus")
    monkeypatch.setenv("KB_STORE__URI", uri)
    yield Settings(home=settings.home, store={"backend": "milvus", "uri": uri})
    from kb.stores.milvus import disconnect

    disconnect(uri)


def _folder(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir(exist_ok=True)
    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor cools with heavy water.\n")
    (folder / "b.txt").write_text("Bravo team repaints the bridge every spring.\n")
    (folder / "sub").mkdir(exist_ok=True)
    (folder / "sub" / "c.md").write_text("# Charlie\n\nCharlie keeps the spare keys in the blue cabinet.\n")
    (folder / "规定.md").write_text("# 差旅\n\n员工出差时，一线城市的住宿标准为每晚六百元。\n")
    return folder


def _state(base):
    """Documents (path, hash, chunk count) and every chunk id: what a KB holds, store aside."""
    docs = base.documents()
    ids = sorted(int(i) for i in base._store.chunk_ids_of([d.doc_id for d in docs]))
    return sorted((d.path, d.content_hash, d.chunks) for d in docs), ids


def _served_by_tantivy(base) -> bool:
    """With keyword_engine tantivy, whether its index is up to date (so searches use it, not FTS5)."""
    store = base._store
    return getattr(store, "keyword_engine", "") != "tantivy" or store._keywords.current(store._db)


def _rows_in_milvus(base) -> int:
    """Every chunk row in the Milvus collection, committed or not (orphans and duplicates would show here)."""
    store = base._store
    return store.client.query(store.chunks, filter="", output_fields=["count(*)"])[0]["count(*)"]


def test_ingest_reingest_replace_prune_remove(store_settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("s", settings=store_settings)
    first = base.ingest(folder)
    assert first.count("added") == 4 and first.chunks_added >= 4
    before = _state(base)
    again = base.ingest(folder)
    assert again.chunks_added == 0 and not again.changed and _state(base) == before

    (folder / "a.md").write_text("# Alpha\n\nThe alpha reactor now cools with molten salt.\n")
    report = base.ingest(folder)
    assert report.count("updated") == 1 and report.chunks_removed >= 1
    assert "molten salt" in base.search("reactor cooling", k=1)[0].text
    assert all("heavy water" not in h.text for h in base.search("heavy water", k=5, mode="bm25"))
    assert len(base.documents()) == 4

    (folder / "sub" / "c.md").unlink()
    kept = base.ingest(folder)
    assert kept.missing == [str(folder / "sub" / "c.md")] and len(base.documents()) == 4
    pruned = base.ingest(folder, prune=True)
    assert pruned.count("removed") == 1 and len(base.documents()) == 3
    assert all("Charlie" not in h.text for h in base.search("spare keys cabinet", k=5))

    removed = base.remove(folder / "b.txt")
    assert [d.path for d in removed] == [str(folder / "b.txt")]
    assert sorted(d.path.rsplit("/", 1)[1] for d in base.documents()) == ["a.md", "规定.md"]
    assert base.stats()["chunks"] == sum(d.chunks for d in base.documents())
    assert [base.document(d.doc_id) for d in base.documents()] == base.documents()  # one document by its id
    assert base.document(removed[0].doc_id) is None
    assert _served_by_tantivy(base)
    if store_settings.store.backend == "milvus":
        assert _rows_in_milvus(base) == base.stats()["chunks"]  # old versions and removed documents are gone


def test_search_modes_filters_and_languages(store_settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("s", settings=store_settings)
    base.ingest(folder)
    for mode in ("hybrid", "dense", "bm25"):
        hits = base.search("Who repaints the bridge?", k=3, mode=mode)
        assert hits[0].path.endswith("b.txt"), mode
        assert 0 <= hits[0].score <= 1
    assert base.search("住宿标准", k=1, mode="bm25")[0].path.endswith("规定.md")
    assert base.search("出差住宿每晚多少钱", k=1)[0].path.endswith("规定.md")
    assert base.languages() == {"en": 3, "zh": 1}

    only_md = base.search("bridge reactor keys", k=10, file_types=["md"])
    assert only_md and all(h.path.endswith(".md") for h in only_md)
    under_sub = base.search("bridge reactor keys", k=10, paths=[str(folder / "sub")])
    assert [h.path for h in under_sub] == [str(folder / "sub" / "c.md")]
    doc_b = next(d.doc_id for d in base.documents() if d.path.endswith("b.txt"))
    assert {h.doc_id for h in base.search("reactor keys", k=10, doc_ids=[doc_b])} == {doc_b}
    assert base.search("bridge", k=10, paths=["*.pdf"]) == []
    assert _served_by_tantivy(base)


def test_neighbours_and_spans(store_settings, tmp_path):
    folder = tmp_path / "long"
    folder.mkdir()
    paras = [f"Step {i}: the {w} valve is opened slowly and its gauge is read twice." for i, w in
             enumerate(["red", "blue", "green", "yellow", "white", "black", "orange", "purple"])]
    (folder / "manual.md").write_text("# Valves\n\n" + "\n\n".join(paras) + "\n")
    tight = store_settings.model_copy(update={"chunking": store_settings.chunking.model_copy(
        update={"max_tokens": 24, "overlap_tokens": 0})})
    base = KnowledgeBase.open("n", settings=tight)
    base.ingest(folder)
    doc = base.documents()[0]
    assert doc.chunks >= 4
    chunks = base.chunks(doc.doc_id)
    assert [c.text for c in chunks] == [base.span_text(doc.doc_id, c.char_start, c.char_end) for c in chunks]
    wide = tight.model_copy(update={"retrieval": tight.retrieval.model_copy(update={"neighbors": 1})})
    expanded = KnowledgeBase.open("n", settings=wide).search("green valve", k=1, mode="bm25")[0]
    plain = base.search("green valve", k=1, mode="bm25")[0]
    assert "green" in plain.text and len(expanded.text) > len(plain.text) and plain.text in expanded.text


def _set_manifest(settings, name, change):
    """Edit a KB's stored manifest the way a newer kb or a damaged store would leave it."""
    place = catalog(settings)
    if settings.store.backend == "local":
        path = place.folder(name) / "manifest.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
    else:
        entry = place._get(f"kb:{name}")
        change(entry["manifest"])
        place._put(f"kb:{name}", entry)


def test_manifest_is_checked_on_open(store_settings, tmp_path):
    base = KnowledgeBase.open("m", settings=store_settings)
    base.ingest(_folder(tmp_path))
    other = store_settings.model_copy(update={"embedding": store_settings.embedding.model_copy(
        update={"model": "BAAI/bge-small-zh-v1.5"})})
    other.embedding.model_fields_set.add("model")
    with pytest.raises(EmbedderMismatchError, match="--rebuild"):
        KnowledgeBase.open("m", settings=other).search("bridge")
    _set_manifest(store_settings, "m", lambda m: m.update(version=99))
    with pytest.raises(IndexFormatError, match="version 99"):
        KnowledgeBase.open("m", settings=store_settings)


def test_rebuild_swaps_in_a_fresh_index(store_settings, tmp_path):
    folder = _folder(tmp_path)
    base = KnowledgeBase.open("r", settings=store_settings)
    base.ingest(folder)
    before = _state(base)
    stamp = base.catalog.stamp("r")
    report = base.ingest(folder, rebuild=True)
    assert report.count("added") == 4 and _state(base) == before and base.catalog.stamp("r") != stamp
    reader = KnowledgeBase.open("r", settings=store_settings)
    assert reader.search("bridge", k=1)[0].path.endswith("b.txt")


def test_second_writer_is_refused_clearly(store_settings, tmp_path):
    base = KnowledgeBase.open("w", settings=store_settings)
    base.ingest(_folder(tmp_path))
    with base.catalog.writer("w", 0):  # as another writer would hold it
        with pytest.raises(LockedError, match="being written"):
            base.ingest(tmp_path / "docs")
        with pytest.raises(LockedError):
            base.remove(tmp_path / "docs" / "b.txt")
    assert base.ingest(tmp_path / "docs").chunks_added == 0  # given back on exit


TOPICS = ["harbor", "orchard", "glacier", "violin", "compiler", "bakery", "railway", "comet"]


def _corpus(folder):
    folder.mkdir()
    for i, topic in enumerate(TOPICS * 2):
        paras = [f"Paragraph {j} about the {topic} number {i}: " + " ".join(
            f"{topic}{k} detail sentence {k} for document {i}." for k in range(10)) for j in range(5)]
        (folder / f"doc{i:02d}-{topic}.md").write_text(f"# {topic.title()} {i}\n\n" + "\n\n".join(paras))
    return folder


def _env(settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_STORE__")}
    env.update(KB_HOME=str(settings.home), KB_CONFIG=str(settings.home / "none.yaml"),
               KB_STORE__BACKEND=settings.store.backend, KB_STORE__URI=settings.store.uri,
               KB_STORE__KEYWORD_ENGINE=settings.store.keyword_engine)
    return env


def _ingest(settings, folder, kb="crash", wait=0):
    return [sys.executable, "-m", "kb.cli", "ingest", str(folder), "--kb", kb, "--quiet", "--wait", str(wait)]


@pytest.mark.parametrize("delays", [(2.5, 4.0, 6.0)])
def test_sigkill_during_ingest_then_rerun_equals_clean_ingest(store_settings, tmp_path, delays):
    folder = _corpus(tmp_path / "corpus")
    env = _env(store_settings)
    if store_settings.store.backend == "milvus":
        from kb.stores.milvus import disconnect

        disconnect(store_settings.store.uri)  # the killed processes open the Milvus Lite file themselves
    for delay in delays:
        proc = subprocess.Popen(_ingest(store_settings, folder), env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(_ingest(store_settings, folder), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    clean = subprocess.run(_ingest(store_settings, folder, kb="clean"), env=env, capture_output=True, text=True,
                           timeout=600)
    assert clean.returncode == 0, clean.stderr
    crashed = KnowledgeBase.open("crash", settings=store_settings, create=False)
    fresh = KnowledgeBase.open("clean", settings=store_settings, create=False)
    assert _state(crashed) == _state(fresh) and len(_state(crashed)[0]) == len(TOPICS) * 2
    if store_settings.store.backend == "milvus":
        assert _rows_in_milvus(crashed) == len(_state(crashed)[1])  # no orphan or duplicate chunk rows
    assert crashed.search("glacier3 detail", k=1)[0].path.endswith("glacier.md")
    assert _served_by_tantivy(crashed)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_writer_processes_on_one_milvus(settings, tmp_path):
    """Two `kb ingest` processes on one Milvus (Milvus Lite's own server, as several machines would share a
    Milvus): without --wait the second is refused by the lease; with --wait both finish, one after the other."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(tmp_path / "m.db"),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        uri = f"http://127.0.0.1:{port}"
        shared = Settings(home=settings.home, store={"backend": "milvus", "uri": uri})
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        folder = _corpus(tmp_path / "corpus")
        env = _env(shared)
        first = subprocess.Popen(_ingest(shared, folder, kb="shared", wait=120), env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        place = catalog(shared)
        while place._get("lease:shared") is None and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        refused = subprocess.run(_ingest(shared, folder, kb="shared"), env=env, capture_output=True, text=True,
                                 timeout=300)
        waited = subprocess.run(_ingest(shared, folder, kb="shared", wait=300), env=env, capture_output=True,
                                text=True, timeout=600)
        assert first.wait(600) == 0, first.stderr.read()
        assert refused.returncode == 2 and "is being written by process" in refused.stderr, refused.stderr
        assert waited.returncode == 0, waited.stderr
        base = KnowledgeBase.open("shared", settings=shared, create=False)
        assert len(base.documents()) == len(TOPICS) * 2
        assert _rows_in_milvus(base) == base.stats()["chunks"]
    finally:
        server.kill()
        server.wait()
        from kb.stores.milvus import disconnect

        disconnect(f"http://127.0.0.1:{port}")


def test_milvus_errors_name_the_setting(settings, tmp_path):
    from kb.stores.milvus import REGISTRY, connect, disconnect

    def open_with(**store):
        return KnowledgeBase.open("e", settings=Settings(home=settings.home, store={"backend": "milvus", **store}))

    with pytest.raises(StorageError, match=r"cannot reach Milvus at http://127.0.0.1:9 \(store.uri\)"):
        open_with(uri="http://127.0.0.1:9")
    with pytest.raises(KBError, match="store.uri"):
        open_with(uri=str(tmp_path / "not-a-db-file"))

    held = tmp_path / "held.db"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pymilvus import MilvusClient; "
                               f"MilvusClient({str(held)!r}).list_collections(); print('ok', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        with pytest.raises(StorageError, match="is open in another process.*milvus-lite server"):
            open_with(uri=str(held))
    finally:
        holder.kill()
        holder.wait()

    foreign = str(tmp_path / "foreign.db")
    client = connect(foreign)
    client.create_collection(REGISTRY, dimension=4)  # someone else's collection of that name
    try:
        with pytest.raises(IndexFormatError, match="not kb's"):
            open_with(uri=foreign)
    finally:
        disconnect(foreign)


def test_migrate_round_trip_keeps_the_kb(settings, tmp_path):
    from kb.stores.migrate import migrate, target_settings
    from kb.stores.milvus import disconnect

    folder = _folder(tmp_path)
    local = KnowledgeBase.open("mig", settings=settings)
    local.ingest(folder)
    before = _state(local)
    queries = ["Who repaints the bridge?", "reactor cooling", "住宿标准", "spare keys"]
    top = {q: [h.chunk_id for h in local.search(q, k=3, mode="dense")] for q in queries}
    uri = str(tmp_path / "m.db")
    to_milvus = target_settings(settings, uri)
    report = migrate("mig", settings, to_milvus)
    assert report.documents == 4 and report.chunks == before[1].__len__()
    assert report.checks["dense_top1_same"] == 1.0 and report.checks["max_vector_difference"] < 1e-5
    assert _state(local) == before  # the source is untouched
    remote = KnowledgeBase.open("mig", settings=to_milvus, create=False)
    assert _state(remote) == before
    assert {q: [h.chunk_id for h in remote.search(q, k=3, mode="dense")] for q in queries} == top
    with pytest.raises(KBError, match="--replace"):
        migrate("mig", to_milvus, settings)
    back = migrate("mig", to_milvus, settings, replace=True)
    assert back.checks["dense_top1_same"] == 1.0
    again = KnowledgeBase.open("mig", settings=settings, create=False)
    assert _state(again) == before
    assert {q: [h.chunk_id for h in again.search(q, k=3, mode="dense")] for q in queries} == top
    disconnect(uri)


def test_cli_milvus_ingest_ask_and_migrate(settings, tmp_path):
    """The commands a user types: ingest and ask on Milvus Lite; migrate a local KB there and search it."""
    samples = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "samples"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KB_STORE__")}
    env.update(KB_HOME=str(settings.home), KB_CONFIG=str(tmp_path / "none.yaml"))
    milvus = {**env, "KB_STORE__BACKEND": "milvus", "KB_STORE__URI": "./kb.db"}

    def kb(*args, environ=env):
        done = subprocess.run([sys.executable, "-m", "kb.cli", *args], env=environ, cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert f"{len(list(samples.iterdir()))} added" in kb("ingest", str(samples), environ=milvus)
    answer = kb("ask", "How do remote staff connect to the office network?", environ=milvus)
    assert "WireGuard" in answer and "network-setup.md" in answer

    kb("ingest", str(samples), "--kb", "handbook")
    moved = kb("migrate", "--kb", "handbook", "--to", "./m.db")
    assert "verified" in moved and "dense top hit the same 100%" in moved
    query = "How long are VPN keys valid?"
    local_hits = kb("search", query, "--kb", "handbook", "--json")
    there = {**env, "KB_STORE__BACKEND": "milvus", "KB_STORE__URI": "./m.db"}
    milvus_hits = kb("search", query, "--kb", "handbook", "--json", environ=there)
    assert [h["chunk_id"] for h in json.loads(local_hits)][:3] == [h["chunk_id"] for h in json.loads(milvus_hits)][:3]
    assert (tmp_path / "m.db").is_dir() and (tmp_path / "kb.db").is_dir()


def test_doctor_reads_a_milvus_store(settings, tmp_path):
    from kb.doctor.kbs import milvus_findings
    from kb.stores.milvus import disconnect

    uri = str(tmp_path / "d.db")
    there = Settings(home=settings.home, store={"backend": "milvus", "uri": uri})
    KnowledgeBase.open("notes", settings=there).ingest(_folder(tmp_path))
    findings = milvus_findings(there)
    assert findings[0].level == "ok" and f"Milvus {uri}: 1 knowledge base" in findings[0].summary
    assert findings[1].name == "kb notes" and "4 documents" in findings[1].summary
    disconnect(uri)
    broken = milvus_findings(Settings(home=settings.home, store={"backend": "milvus", "uri": "http://127.0.0.1:9"}))
    assert broken[0].level == "error" and "store.uri" in broken[0].summary


def test_bm25_text_splits_and_stems_like_fts5():
    from kb.stores.milvus import bm25_text

    assert bm25_text("connecting apt-get 数据库 keys") == "connect apt get 数据库 kei"
