#!/usr/bin/env bash
# Benchmark: `mgat data lock` on a full-size synthetic Market-1501 tree (its official split sizes: 36,036 JPEGs of
# 128×64, junk included, ~190 MB) against
# `find … | xargs -P2 sha256sum` (both cores, as mgat uses), cold (no stat cache; page cache dropped where allowed)
# and warm (stat cache; the median of 5 runs of each, this machine being shared), with the ratios.
# Usage: benches/lock_tree.sh [path/to/mgat]
#        benches/lock_tree.sh --smoke   a small tree (what CI runs)
. "$(dirname "$0")/lib.sh"
if [ -n "${1:-}" ]; then mgat=$1; else bench_build; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
size=(--official-size) lock_flags=()
[ "$smoke" = 1 ] && size=(--ids 40) lock_flags=(--allow-nonstandard)
"$mgat" -q data synth --out tree --layout market1501 "${size[@]}" --seed 11 --cameras 6 --height 128 --width 64 \
  >/dev/null
echo "tree: $(find tree -type f | wc -l) files, $(du -sm --apparent-size tree | cut -f1) MB"
secs() { local s=$(date +%s%N); "$@" >/dev/null || bench_fail "$* failed"; awk "BEGIN{printf \"%.3f\", ($(date +%s%N) - $s)/1e9}"; }
median5() { for _ in 1 2 3 4 5; do secs "$@"; echo; done | sort -n | sed -n 3p; }
drop_caches() { sync; echo 3 2>/dev/null >/proc/sys/vm/drop_caches && echo "(page cache dropped)" || echo "(page cache not droppable here: warm page cache)"; }
anchor() { find tree -type f -print0 | xargs -0 -n 500 -P2 sha256sum; }
export -f anchor
ratio() { awk "BEGIN{printf \"%.2f\", $(positive "$3" "$1") / $(positive "$4" "$2")}"; }
echo "cold $(drop_caches)"
xargs_cold=$(secs bash -c anchor)
drop_caches >/dev/null
lock_cold=$(secs "$mgat" -q data lock bench --format market1501 --root tree "${lock_flags[@]}")
echo "  find | xargs -P2 sha256sum:      ${xargs_cold} s"
echo "  mgat data lock (no stat cache):  ${lock_cold} s   ($(ratio "$lock_cold" "$xargs_cold" "cold lock s" "cold xargs s")× xargs)"
echo "warm (median of 5)"
xargs_warm=$(median5 bash -c anchor)
lock_warm=$(median5 "$mgat" -q data lock bench --format market1501 --root tree "${lock_flags[@]}")
verify_warm=$(median5 "$mgat" -q data verify bench)
echo "  find | xargs -P2 sha256sum:      ${xargs_warm} s"
echo "  mgat data lock (stat cache):     ${lock_warm} s   ($(ratio "$lock_warm" "$xargs_warm" "warm lock s" "warm xargs s")× xargs)"
echo "  mgat data verify (stat cache):   ${verify_warm} s   ($(ratio "$verify_warm" "$xargs_warm" "warm verify s" "warm xargs s")× xargs)"
