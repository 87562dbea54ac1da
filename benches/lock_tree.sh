#!/usr/bin/env bash
# Benchmark: `mgat data lock` on a generated tree of ~32,000 small JPEGs (~150 MB) against
# `find … | xargs sha256sum`, cold (no stat cache; page cache as the generator left it) and warm (stat cache).
# Usage: benches/lock_tree.sh [path/to/mgat]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mgat=${1:-$repo/target/release/mgat}
[ -x "$mgat" ] || (cd "$repo" && cargo build --release -q)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$mgat" -q data synth --out tree --seed 11 --ids 1940 --cameras 6 --images-per-camera 4 --height 128 --width 64 \
  --junk 500 --distractors 500 >/dev/null
echo "tree: $(find tree -type f | wc -l) files, $(du -sm --apparent-size tree | cut -f1) MB"
secs() { local s=$(date +%s%N); "$@" >/dev/null; awk "BEGIN{printf \"%.2f\", ($(date +%s%N) - $s)/1e9}"; }
drop_caches() { sync; echo 3 2>/dev/null >/proc/sys/vm/drop_caches && echo "(page cache dropped)" || echo "(page cache not droppable here: warm page cache)"; }
echo "cold $(drop_caches)"
echo "  find | xargs sha256sum:      $(secs bash -c 'find tree -type f -print0 | xargs -0 sha256sum') s"
drop_caches >/dev/null
echo "  mgat data lock (no stat cache): $(secs "$mgat" -q data lock bench --format market1501 --root tree) s"
echo "warm"
echo "  find | xargs sha256sum:      $(secs bash -c 'find tree -type f -print0 | xargs -0 sha256sum') s"
echo "  mgat data lock (stat cache):  $(secs "$mgat" -q data lock bench --format market1501 --root tree) s"
echo "  mgat data verify (stat cache): $(secs "$mgat" -q data verify bench) s"
