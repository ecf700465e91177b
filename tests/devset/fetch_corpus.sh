#!/usr/bin/env bash
# Fetch the corpus of the public retrieval dev set (tests/devset/qa.jsonl).
#
#   tests/devset/fetch_corpus.sh [TARGET]        # TARGET defaults to .corpus/devset (repo root)
#
# Downloads the Debian packages python3.11-doc and debian-reference-zh-cn with
# `apt-get download` (into $DEB_DIR, default .corpus/debs; debs already there are
# reused), extracts them with `dpkg -x` into a temporary directory and copies exactly
# the chosen HTML files into TARGET:
#   TARGET/en/tutorial/*.html   17 pages of the Python 3.11 tutorial
#   TARGET/en/library/*.html    17 pages of the Python 3.11 library reference
#   TARGET/zh/ch01..ch12.zh-cn.html   the 12 chapters of the Debian Reference (zh-cn)
# Idempotent: when every file is already in TARGET it does nothing (use --force to redo).
# The dev set was written against python3.11-doc 3.11.2-6+deb12u9 and
# debian-reference-zh-cn 2.100 (Debian 12 "bookworm").
set -euo pipefail

FORCE=0
if [[ "${1:-}" == "--force" ]]; then FORCE=1; shift; fi

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${1:-$REPO/.corpus/devset}"
DEB_DIR="${DEB_DIR:-$REPO/.corpus/debs}"

EN_TUTORIAL="appendix appetite classes controlflow datastructures errors floatingpoint index
  inputoutput interactive interpreter introduction modules stdlib stdlib2 venv whatnow"
EN_LIBRARY="collections csv functools glob hashlib json logging os.path pathlib random re
  secrets shutil subprocess tempfile timeit venv"
ZH_CHAPTERS="ch01 ch02 ch03 ch04 ch05 ch06 ch07 ch08 ch09 ch10 ch11 ch12"

PY_HTML=usr/share/doc/python3.11/html
ZH_HTML=usr/share/debian-reference

# list of "source-in-package target-relative-path"
files() {
  for n in $EN_TUTORIAL; do echo "$PY_HTML/tutorial/$n.html en/tutorial/$n.html"; done
  for n in $EN_LIBRARY; do echo "$PY_HTML/library/$n.html en/library/$n.html"; done
  for n in $ZH_CHAPTERS; do echo "$ZH_HTML/$n.zh-cn.html zh/$n.zh-cn.html"; done
}

if [[ $FORCE == 0 ]]; then
  complete=1
  while read -r _ dst; do
    [[ -s "$TARGET/$dst" ]] || { complete=0; break; }
  done < <(files)
  if [[ $complete == 1 ]]; then
    echo "corpus already complete in $TARGET ($(files | wc -l) files)"
    exit 0
  fi
fi

mkdir -p "$DEB_DIR"
fetch() {  # fetch PACKAGE: reuse a downloaded .deb or apt-get download it
  local pkg=$1 deb
  deb=$(ls "$DEB_DIR"/"${pkg}"_*_all.deb 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -z "$deb" ]]; then
    # apt-get's progress goes to stderr: stdout of this function is the .deb path
    if ! (cd "$DEB_DIR" && apt-get download "$pkg" >&2); then
      echo "apt-get download $pkg failed; running apt-get update and retrying" >&2
      if [[ $(id -u) == 0 ]]; then apt-get update -qq >&2; else sudo apt-get update -qq >&2; fi
      (cd "$DEB_DIR" && apt-get download "$pkg" >&2)
    fi
    deb=$(ls "$DEB_DIR"/"${pkg}"_*_all.deb | sort -V | tail -n 1)
  fi
  echo "$deb"
}

PY_DEB=$(fetch python3.11-doc)
ZH_DEB=$(fetch debian-reference-zh-cn)
echo "using $(basename "$PY_DEB") and $(basename "$ZH_DEB")"
case "$(basename "$PY_DEB")" in python3.11-doc_3.11.2-*) ;; *)
  echo "warning: the dev set was checked against python3.11-doc 3.11.2-6+deb12u9;" \
       "run tests/devset/check_devset.py to see whether the evidence still matches" >&2 ;;
esac

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
dpkg -x "$PY_DEB" "$TMP"
dpkg -x "$ZH_DEB" "$TMP"

n=0
while read -r src dst; do
  mkdir -p "$TARGET/$(dirname "$dst")"
  cp -f "$TMP/$src" "$TARGET/$dst"
  n=$((n + 1))
done < <(files)
echo "copied $n files into $TARGET ($(du -sh "$TARGET" | cut -f1))"
