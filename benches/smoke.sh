#!/usr/bin/env bash
# Runs every bench once at a tiny size, without installing its anchor (`--smoke`), and checks that a bench whose
# figure cannot be read fails: what CI runs, so that a parse that breaks fails CI instead of printing a wrong number.
. "$(dirname "$0")/lib.sh"
for bench in train_speed schedule cached_grid lock_tree metrics_bench features_bench rerank_bench rehearse_bench loader_bench remote_bench aqe_bench; do
  echo "== $bench --smoke"
  bash "$repo/benches/$bench.sh" --smoke
done
# The readers fail loudly: a renamed column, a missing file and a non-positive figure each exit non-zero.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf 'epoch,images_per_s\n1,950.5\n' > "$work/log.csv"
[ "$(csv_last "$work/log.csv" images_per_s)" = 950.5 ] || bench_fail "csv_last misread images_per_s"
for broken in "csv_last $work/log.csv feature_norm" "csv_last $work/none.csv images_per_s" "positive rate 0.00" \
  "positive rate x"; do
  if (eval "$broken") >/dev/null 2>&1; then bench_fail "'$broken' should have failed"; fi
done
echo "benches: smoke passed, and an unreadable figure fails"
