#!/usr/bin/env python3
"""Mechanical check of the public retrieval dev set (tests/devset/qa.jsonl).

Usage:
    python tests/devset/check_devset.py [--corpus DIR] [--qa FILE] [--translations FILE] [--verbose]
    python tests/devset/check_devset.py --dump FILE.html      # print the blocks of one file

DIR defaults to .corpus/devset (relative to the repository root), as written by
tests/devset/fetch_corpus.sh.  Only the Python standard library is used.

What is checked (exit status 1 on any problem):
  * every line is a JSON object with the right fields and types; ids are unique;
    id prefix and "lang" agree (en-* -> en, zh-* -> zh, x-* -> zh-en, y-* -> en-zh,
    none-* -> en|zh);
  * answerable questions have 1-3 evidence strings of 15-80 characters, no
    leading/trailing whitespace, and 1-4 answer_keywords; unanswerable ones have
    "evidence": [] and "answerable": false;
  * every evidence string occurs (whitespace-collapsed) in the text of at least one
    block element (p, li, td, th, dt, dd, pre, h1-h6, caption, ...) of the file named
    in "source", and occurs nowhere in a file of the other language for the
    cross-lingual "x-*" (zh question, en evidence) and "y-*" (en question, zh evidence)
    questions;
  * no question repeats an evidence string verbatim or 60% or more of its words;
  * "no shared literal term" for x-012 and later and for every y-*: no token of the
    question matching [A-Za-z0-9_][A-Za-z0-9_.+-]* (2+ characters, trailing "." and "-"
    dropped; the parts of a dotted or hyphenated token count too) occurs,
    case-insensitively and as a whole word, in the context of the evidence (see
    term_context): such questions can be connected to their evidence by meaning only;
  * "paraphrase": true (Chinese questions in everyday words): no CJK character bigram
    of the question (two adjacent Han characters) occurs in any of its evidence
    strings or in the innermost block holding one (for a table cell: its whole row),
    and no Latin/digit term of the question (as above) occurs there either;
  * every question has exactly one line in translations.jsonl (FILE next to qa.jsonl
    by default), in the other language, and that file names no other id;
  * minimum group sizes (MIN_GROUP, MIN_PARAPHRASE, MIN_TOTAL);
  * the corpus holds exactly the files listed in FILES below.

It also reports, for each evidence string, in how many innermost blocks of the
whole corpus it occurs (ideally 1), and whether it lies inside one text node
(i.e. does not cross inline markup such as <code> or <a>).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

EN_TUTORIAL = [
    "appendix", "appetite", "classes", "controlflow", "datastructures", "errors",
    "floatingpoint", "index", "inputoutput", "interactive", "interpreter",
    "introduction", "modules", "stdlib", "stdlib2", "venv", "whatnow",
]
EN_LIBRARY = [
    "collections", "csv", "functools", "glob", "hashlib", "json", "logging",
    "os.path", "pathlib", "random", "re", "secrets", "shutil", "subprocess",
    "tempfile", "timeit", "venv",
]
ZH_CHAPTERS = [f"ch{i:02d}" for i in range(1, 13)]

FILES = (
    [f"en/tutorial/{n}.html" for n in EN_TUTORIAL]
    + [f"en/library/{n}.html" for n in EN_LIBRARY]
    + [f"zh/{n}.zh-cn.html" for n in ZH_CHAPTERS]
)

BLOCK_TAGS = {
    "p", "li", "td", "th", "dt", "dd", "pre", "h1", "h2", "h3", "h4", "h5", "h6",
    "caption", "blockquote", "div", "section", "table", "tr", "ul", "ol", "dl",
    "title", "figcaption", "address",
}
SKIP_TAGS = {"script", "style", "head"}
VOID_TAGS = {
    "br", "img", "hr", "meta", "link", "input", "col", "area", "base", "embed",
    "source", "track", "wbr", "param",
}
WS = re.compile(r"\s+")
MAX_OVERLAP = 0.6  # share of an evidence string's words (CJK bigrams) the question may repeat
PREFIX_LANG = {"en": {"en"}, "zh": {"zh"}, "x": {"zh-en"}, "y": {"en-zh"}, "none": {"en", "zh"}}
SOURCE_DIR = {"en": "en/", "zh": "zh/", "x": "en/", "y": "zh/"}
TERM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
CONTEXT_MAX = 1500  # enclosing blocks up to this many characters count as the evidence's context
NO_SHARED_TERMS_FROM = {"x": 12, "y": 1}  # ids from which the no-shared-literal-term rule applies
MIN_GROUP = {"en": 25, "zh": 55, "x": 45, "y": 10, "none": 8}
MIN_PARAPHRASE = 20  # questions with "paraphrase": true
MIN_TOTAL = 160
CJK_RUN = re.compile(r"[\u4e00-\u9fff]+")
CJK_GAP = re.compile(r"(?<=[\u4e00-\u9fff])\s+(?=[\u4e00-\u9fff])")


def collapse(s: str) -> str:
    return WS.sub(" ", s).strip()


class Block:
    __slots__ = ("tag", "parent", "parts", "children", "kids", "text", "runs")

    def __init__(self, tag: str, parent: Block | None):
        self.tag = tag
        self.parent = parent
        self.parts: list[str] = []
        self.children = 0
        self.kids: list[Block] = []
        self.text = ""
        self.runs: list[str] = []


class BlockParser(HTMLParser):
    """Collects the visible text of every block element (nested blocks included)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[Block] = []
        self.blocks: list[Block] = []
        self.skip = 0
        self.open_tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            return
        if tag in SKIP_TAGS:
            self.skip += 1
        self.open_tags.append(tag)
        if tag in BLOCK_TAGS:
            parent = self.stack[-1] if self.stack else None
            b = Block(tag, parent)
            if parent is not None:
                parent.children += 1
                parent.kids.append(b)
            self.stack.append(b)
            self.blocks.append(b)
        for b in self.stack:  # inline boundary: start a new run
            b.runs.append("")

    def handle_startendtag(self, tag, attrs):
        # <a id="x"/> and friends: no content
        for b in self.stack:
            b.runs.append("")

    def handle_endtag(self, tag):
        if tag in VOID_TAGS or tag not in self.open_tags:
            return
        while self.open_tags:
            t = self.open_tags.pop()
            if t in SKIP_TAGS:
                self.skip -= 1
            if t in BLOCK_TAGS and self.stack:
                self.stack.pop()
            if t == tag:
                break
        for b in self.stack:
            b.runs.append("")

    def handle_data(self, data):
        if self.skip:
            return
        for b in self.stack:
            b.parts.append(data)
            if b.runs:
                b.runs[-1] += data
            else:
                b.runs.append(data)


def parse_blocks(path: Path) -> list[Block]:
    p = BlockParser()
    p.feed(path.read_text(encoding="utf-8", errors="replace"))
    p.close()
    for b in p.blocks:
        b.text = collapse("".join(b.parts))
        b.runs = [collapse(r) for r in b.runs if r.strip()]
        b.parts = []
    return p.blocks


def innermost_hits(blocks: list[Block], needle: str) -> list[Block]:
    """Blocks whose text contains needle while none of their child blocks does."""
    hits = [b for b in blocks if needle in b.text]
    parents_with_hit_child = {id(b.parent) for b in hits if b.parent is not None}
    return [b for b in hits if id(b) not in parents_with_hit_child]


def term_context(block: Block) -> list[str]:
    """Texts a question with the no-shared-literal-term rule must share no term with.

    The innermost block holding the evidence, every enclosing block of at most
    CONTEXT_MAX characters (a table row, a list item, a short section), and the <dt>
    entries (a Sphinx signature such as "collections.defaultdict(...)") that head any
    enclosing <dd>.
    """
    texts = [block.text]
    b: Block | None = block
    while b is not None:
        if b is not block and len(b.text) <= CONTEXT_MAX:
            texts.append(b.text)
        if b.tag == "dd" and b.parent is not None:
            sibs = b.parent.kids
            i = next(k for k, s in enumerate(sibs) if s is b)
            while i > 0 and sibs[i - 1].tag == "dt":
                i -= 1
                texts.append(sibs[i].text)
        b = b.parent
    return texts


def question_terms(q: str) -> set[str]:
    """Latin-script/digit tokens of 2+ characters (trailing '.'/'-' dropped), lower-cased,
    and the 2+ character parts of dotted or hyphenated ones ("os.path" -> os, path)."""
    out = set()
    for t in TERM.findall(q):
        t = t.rstrip(".-")
        for part in [t, *re.split(r"[.+-]+", t)]:
            if len(part) >= 2:
                out.add(part.lower())
    return out


def shared_terms(q: str, texts: list[str]) -> set[str]:
    """Question tokens that occur as a whole word (case-insensitively) in any of texts."""
    found = set()
    for t in question_terms(q):
        pat = re.compile(r"(?<![A-Za-z0-9_])" + re.escape(t) + r"(?![A-Za-z0-9_])", re.I)
        if any(pat.search(x) for x in texts):
            found.add(t)
    return found


def cjk_bigrams(s: str) -> set[str]:
    """Pairs of adjacent Han characters (punctuation, Latin text and spaces break a pair)."""
    return {run[i:i + 2] for run in CJK_RUN.findall(s) for i in range(len(run) - 1)}


def shared_bigrams(q: str, texts: list[str]) -> set[str]:
    """Han bigrams of q that occur in any of texts (spaces between Han characters ignored)."""
    flat = [CJK_GAP.sub("", t) for t in texts]
    return {bg for bg in cjk_bigrams(q) if any(bg in t for t in flat)}


def paraphrase_context(block: Block) -> list[str]:
    """Texts a "paraphrase" question must share no Chinese word or term with: the innermost
    block holding the evidence and, for a table cell, its whole row (the command and its
    description sit in neighbouring cells)."""
    texts = [block.text]
    cell: Block | None = block
    while cell is not None and cell.tag not in ("td", "th"):
        cell = cell.parent
    row = cell.parent if cell is not None else None
    if row is not None and row.tag == "tr" and len(row.text) <= CONTEXT_MAX:
        texts.append(row.text)
    return texts


def paraphrase_problems(q: str, evidence: str, hits: list[Block]) -> list[str]:
    """What a "paraphrase" question shares with one evidence string and the blocks holding it
    (anywhere in the corpus): Chinese character bigrams, then Latin/digit terms."""
    ctx = [evidence] + [t for b in hits for t in paraphrase_context(b)]
    out = []
    bigrams = shared_bigrams(q, ctx)
    if bigrams:
        out.append(f"paraphrase question shares Chinese word(s) {sorted(bigrams)} with evidence "
                   f"{evidence!r} or its block; say it in other words")
    latin = shared_terms(q, ctx)
    if latin:
        out.append(f"paraphrase question shares term(s) {sorted(latin)} with the block of "
                   f"evidence {evidence!r}")
    return out


def check_translations(path: Path, questions: dict[str, str], problem) -> int:
    """Every question id has exactly one translation, in the other language; returns the count."""
    seen: Counter = Counter()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problem(f"{path.name} line {n}: bad JSON: {e}")
            continue
        tid, text = (row.get("id"), row.get("translation")) if isinstance(row, dict) else (None, None)
        if not isinstance(text, str) or not text.strip():
            problem(f"{path.name} line {n}: needs an id and a non-empty translation")
            continue
        seen[tid] += 1
        if tid not in questions:
            problem(f"{path.name} line {n}: translation of unknown id {tid!r}")
        elif bool(CJK_RUN.search(text)) == bool(CJK_RUN.search(questions[tid])):
            problem(f"{path.name} line {n} ({tid}): translation is in the question's own language")
    for qid in questions:
        if seen[qid] != 1:
            problem(f"{path.name}: {seen[qid]} translations of {qid} (want 1)")
    return sum(seen.values())


def overlap_terms(s: str) -> set[str]:
    """English words of 4+ letters and Chinese character bigrams: a crude string-overlap measure."""
    words = {t for t in re.findall(r"[a-z0-9_]+", s.lower()) if len(t) >= 4}
    cjk = re.sub(r"[^\u4e00-\u9fff]", "", s)
    return words | {cjk[i:i + 2] for i in range(len(cjk) - 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", default=str(REPO / ".corpus" / "devset"))
    ap.add_argument("--qa", default=str(Path(__file__).with_name("qa.jsonl")))
    ap.add_argument("--translations", help="question translations (default: translations.jsonl next to --qa)")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--dump", metavar="HTML", help="print the innermost blocks of one file and exit")
    args = ap.parse_args()

    if args.dump:
        for b in parse_blocks(Path(args.dump)):
            if b.children == 0 and b.text:
                print(f"[{b.tag}] {b.text}")
        return 0

    corpus = Path(args.corpus)
    problems: list[str] = []

    def problem(msg: str) -> None:
        problems.append(msg)

    # ---- corpus ------------------------------------------------------------
    missing = [f for f in FILES if not (corpus / f).is_file()]
    if missing:
        print(f"corpus {corpus}: {len(missing)} of {len(FILES)} files missing, e.g. {missing[:3]}")
        print("run: tests/devset/fetch_corpus.sh")
        return 1
    present = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*") if p.is_file())
    extra = sorted(set(present) - set(FILES))
    if extra:
        problem(f"corpus has files not in the list: {extra[:5]}")
    blocks = {f: parse_blocks(corpus / f) for f in FILES}
    size = sum((corpus / f).stat().st_size for f in FILES)
    en_size = sum((corpus / f).stat().st_size for f in FILES if f.startswith("en/"))

    # ---- questions -----------------------------------------------------------
    rows = []
    for n, line in enumerate(Path(args.qa).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            problem(f"line {n}: blank line")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            problem(f"line {n}: bad JSON: {e}")
            continue
        if not isinstance(row, dict):
            problem(f"line {n}: not an object")
            continue
        rows.append((n, row))

    ids = Counter(r.get("id") for _, r in rows)
    for i, c in ids.items():
        if c > 1:
            problem(f"duplicate id {i!r} ({c} times)")

    groups: Counter = Counter()
    langs: Counter = Counter()
    per_source: Counter = Counter()
    multi: list[str] = []
    crossing: list[str] = []
    overlaps: list[str] = []
    n_evidence = 0
    n_no_shared = 0
    n_paraphrase = 0
    allowed = {"id", "question", "evidence", "answer_keywords", "lang", "answerable", "source", "paraphrase"}

    for n, r in rows:
        rid = r.get("id")
        where = f"line {n} ({rid})"
        for k in ("id", "question", "evidence", "answer_keywords", "lang", "answerable"):
            if k not in r:
                problem(f"{where}: missing field {k!r}")
        if set(r) - allowed:
            problem(f"{where}: unknown fields {sorted(set(r) - allowed)}")
        if not isinstance(rid, str) or not re.fullmatch(r"(en|zh|x|y|none)-\d{3}", rid or ""):
            problem(f"{where}: id must look like en-001 / zh-001 / x-001 / y-001 / none-001")
            continue
        prefix = rid.split("-")[0]
        groups[prefix] += 1
        lang = r.get("lang")
        langs[lang] += 1
        if lang not in PREFIX_LANG[prefix]:
            problem(f"{where}: lang {lang!r} does not fit prefix {prefix!r}")
        q = r.get("question")
        if not isinstance(q, str) or not q.strip():
            problem(f"{where}: empty question")
            continue
        has_cjk = bool(CJK_RUN.search(q))
        paraphrase = r.get("paraphrase", False)
        if not isinstance(paraphrase, bool):
            problem(f"{where}: paraphrase must be true/false")
            paraphrase = False
        n_paraphrase += paraphrase
        if lang in ("zh", "zh-en") and not has_cjk:
            problem(f"{where}: lang {lang} but the question has no Chinese")
        if lang in ("en", "en-zh") and has_cjk:
            problem(f"{where}: lang {lang} but the question has Chinese")
        ev = r.get("evidence")
        kw = r.get("answer_keywords")
        ans = r.get("answerable")
        if not isinstance(ev, list) or not all(isinstance(e, str) for e in ev):
            problem(f"{where}: evidence must be a list of strings")
            continue
        if not isinstance(kw, list) or not all(isinstance(k, str) and k for k in kw):
            problem(f"{where}: answer_keywords must be a list of non-empty strings")
        if not isinstance(ans, bool):
            problem(f"{where}: answerable must be true/false")
        if prefix == "none":
            if ans is not False or ev:
                problem(f"{where}: none-* must have answerable false and evidence []")
            if r.get("source"):
                problem(f"{where}: none-* must not have a source")
            continue
        if ans is not True:
            problem(f"{where}: answerable must be true")
        if not 1 <= len(ev) <= 3:
            problem(f"{where}: {len(ev)} evidence strings (want 1-3)")
        if isinstance(kw, list) and not 1 <= len(kw) <= 4:
            problem(f"{where}: {len(kw)} answer_keywords (want 1-4)")
        src = r.get("source")
        if src not in blocks:
            problem(f"{where}: source {src!r} is not a corpus file")
            continue
        if not src.startswith(SOURCE_DIR[prefix]):
            problem(f"{where}: source {src} does not fit group {prefix}")
        no_shared = int(rid.split("-")[1]) >= NO_SHARED_TERMS_FROM.get(prefix, 10**9)
        n_no_shared += no_shared
        per_source[src] += 1
        qn = collapse(q).lower()
        for e in ev:
            n_evidence += 1
            if e != e.strip() or not 15 <= len(e) <= 80:
                problem(f"{where}: evidence {e!r} has length {len(e)} or edge whitespace")
            if any(ch in e for ch in "\u00a0\u2026\u201c\u201d\u2018\u2019"):
                problem(f"{where}: evidence {e!r} contains nbsp/ellipsis/smart quotes")
            ec = collapse(e)
            if ec.lower() in qn:
                problem(f"{where}: the question contains the evidence {e!r} verbatim")
            terms = overlap_terms(ec)
            if terms:
                ov = len(terms & overlap_terms(qn)) / len(terms)
                if ov >= MAX_OVERLAP:
                    problem(f"{where}: question repeats {ov:.0%} of the words of evidence {e!r}; paraphrase it")
                elif ov >= 0.3:
                    overlaps.append(f"{rid}: {ov:.0%} of {e!r}")
            hits = innermost_hits(blocks[src], ec)
            if not hits:
                problem(f"{where}: evidence not found in {src}: {e!r}")
                continue
            total = 0
            all_hits: list[Block] = []
            for f, bl in blocks.items():
                h = innermost_hits(bl, ec)
                total += len(h)
                all_hits += h
                if prefix == "x" and h and f.startswith("zh/"):
                    problem(f"{where}: cross-lingual evidence also in Chinese file {f}")
                if prefix == "y" and h and f.startswith("en/"):
                    problem(f"{where}: cross-lingual evidence also in English file {f}")
            if no_shared:
                shared = shared_terms(q, [t for b in hits for t in term_context(b)])
                if shared:
                    problem(f"{where}: question shares literal term(s) {sorted(shared)} with the "
                            f"block of evidence {e!r}; cross-lingual questions must connect by meaning only")
            if paraphrase:
                for msg in paraphrase_problems(q, ec, all_hits):
                    problem(f"{where}: {msg}")
            if total > 1:
                multi.append(f"{rid}: {total} blocks: {e!r}")
            if not any(ec in run for b in hits for run in b.runs):
                crossing.append(f"{rid}: {e!r}")
            if args.verbose:
                print(f"  {rid} {total} block(s) {'' if total == 1 else '!'} {e!r}")

    # ---- summary ----------------------------------------------------------------
    print(f"corpus: {len(FILES)} files, {size / 2**20:.2f} MiB HTML ({en_size / 2**20:.2f} MiB English)")
    print(f"questions: {len(rows)}  by prefix: {dict(sorted(groups.items()))}  by lang: {dict(sorted(langs.items()))}")
    ans = sum(1 for _, r in rows if r.get("answerable") is True)
    print(f"answerable: {ans}  unanswerable: {len(rows) - ans}  evidence strings: {n_evidence}")
    by_dir: dict[str, int] = defaultdict(int)
    for f, c in per_source.items():
        by_dir[f.rsplit("/", 1)[0]] += c
    print(f"source files used: {len(per_source)} of {len(FILES)}  {dict(sorted(by_dir.items()))}")
    if args.verbose:
        for f in FILES:
            print(f"  {per_source.get(f, 0):2d}  {f}")
    print(f"evidence in exactly one block: {n_evidence - len(multi)} / {n_evidence}")
    for m in multi:
        print(f"  in several blocks: {m}")
    print(f"evidence crossing inline markup: {len(crossing)}")
    for m in crossing:
        print(f"  crosses markup: {m}")
    print(f"evidence with 30-{MAX_OVERLAP:.0%} of its words/bigrams in the question: {len(overlaps)}")
    for m in overlaps:
        print(f"  overlap: {m}")
    print(f"questions under the no-shared-literal-term rule (x-012.., y-*): {n_no_shared}")
    print(f"paraphrase questions (no Chinese bigram or term shared with the evidence block): {n_paraphrase}")
    for g, k in MIN_GROUP.items():
        if groups[g] < k:
            problem(f"group {g}: {groups[g]} questions (want >= {k})")
    if n_paraphrase < MIN_PARAPHRASE:
        problem(f"{n_paraphrase} paraphrase questions (want >= {MIN_PARAPHRASE})")
    if len(rows) < MIN_TOTAL:
        problem(f"{len(rows)} questions (want >= {MIN_TOTAL})")
    tr_path = Path(args.translations) if args.translations else Path(args.qa).with_name("translations.jsonl")
    if tr_path.is_file():
        questions = {r["id"]: r["question"] for _, r in rows
                     if isinstance(r.get("id"), str) and isinstance(r.get("question"), str)}
        n_tr = check_translations(tr_path, questions, problem)
        print(f"translations: {n_tr} in {tr_path.name}")
    else:
        problem(f"no translations file {tr_path}")
    for p in problems:
        print("PROBLEM:", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
