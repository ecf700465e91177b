#!/usr/bin/env bash
# Fetch the Debian Reference in English and Chinese (HTML chapters + PDF) for the ingest benchmark.
#
#   tests/bench/fetch_debian_reference.sh [TARGET]     # TARGET defaults to .corpus/debian-reference
#
# Uses `apt-get download` (Debian's package registry) and `dpkg -x`; idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TARGET="${1:-$REPO/.corpus/debian-reference}"
DEB_DIR="${DEB_DIR:-$REPO/.corpus/debs}"
if [[ -s "$TARGET/debian-reference.zh-cn.pdf" && -s "$TARGET/ch01.en.html" ]]; then
  echo "corpus already in $TARGET"; exit 0
fi
mkdir -p "$DEB_DIR" "$TARGET"
for pkg in debian-reference-en debian-reference-zh-cn; do
  if ! ls "$DEB_DIR/${pkg}"_*_all.deb >/dev/null 2>&1; then
    (cd "$DEB_DIR" && apt-get download "$pkg") || { apt-get update -qq && (cd "$DEB_DIR" && apt-get download "$pkg"); }
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for deb in "$DEB_DIR"/debian-reference-en_*_all.deb "$DEB_DIR"/debian-reference-zh-cn_*_all.deb; do
  dpkg -x "$deb" "$tmp"
done
cp "$tmp"/usr/share/debian-reference/*.en.html "$tmp"/usr/share/debian-reference/*.zh-cn.html \
   "$tmp"/usr/share/debian-reference/debian-reference.en.pdf "$tmp"/usr/share/debian-reference/debian-reference.zh-cn.pdf \
   "$TARGET"/
echo "Debian Reference (en + zh-cn, HTML + PDF) in $TARGET: $(ls "$TARGET" | wc -l) files"
