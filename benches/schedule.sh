#!/usr/bin/env bash
# Benchmark: the local executor's two schedules side by side in one run, on the same train stages: one stage at a
# time on every core (`-j 1`) against one stage per core with one thread each (`-j $(nproc)`), for the quickstart's
# model and larger ones. Each size trains 2 × cores seeds of MGAT on a synthetic dataset, once per schedule in
# separate caches, the two interleaved and repeated; wall time is bash's clock around `mgat run --until train`.
# The weights of both schedules must be byte-identical, and each run must report every stage as ran (read from its
# `stages:` line by name), or the bench fails. `SMALL_STEP` in src/exec/schedule.rs is set from what this prints.
# Usage: benches/schedule.sh            (about 6 minutes on 2 cores)
#        benches/schedule.sh --smoke    2 seeds of a tiny model for 2 iterations, once (what CI runs)
. "$(dirname "$0")/lib.sh"
bench_build
cores=$(nproc)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

# Runs SPEC with -j JOBS in cache CACHE; prints the wall seconds after checking that all N stages ran.
timed_run() {
  local spec=$1 jobs=$2 cache=$3 n=$4 start end out ran
  rm -rf "$cache"
  MGAT_CACHE=$cache "$mgat" -q run "$spec" --until index >/dev/null
  start=$(date +%s.%N)
  out=$(MGAT_CACHE=$cache "$mgat" run "$spec" --until train -j "$jobs" 2>&1)
  end=$(date +%s.%N)
  ran=$(sed -n 's/^stages: \([0-9]*\) ran,.*/\1/p' <<<"$out")
  [ "$ran" = "$n" ] || bench_fail "-j $jobs: expected '$n' train stages to run, read '$ran' from: $(tail -3 <<<"$out")"
  positive "-j $jobs wall seconds" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')"
}

weights() { find "$1/train" -name model.safetensors -exec sha256sum {} + | awk '{ print $1 }' | sort; }

bench() { # name backbone width height img_width batch epochs iters seeds rounds
  local name=$1 backbone=$2 width=$3 h=$4 w=$5 batch=$6 epochs=$7 iters=$8 seeds=$9 rounds=${10}
  "$mgat" -q data lock "$name" --format synth --seed 3 --ids 64 --cameras 4 --images-per-camera 4 \
    --height "$h" --width "$w" --junk 0 --distractors 0 >/dev/null
  cat > "$name.yaml" <<SPEC
name: $name
base:
  dataset: {name: $name}
  model: {backbone: $backbone, width: $width, bnneck: true, head: mgat, gamma: 1.0}
  train: {height: $h, width: $w, batch_size: $batch, instances: 4, epochs: $epochs, iters_per_epoch: $iters,
          warmup_epochs: 0, schedule: constant, lr: 0.00035, workers: 2, device: cpu}
seeds: [$(seq -s, 1 "$seeds")]
SPEC
  local one=() each=() r
  for r in $(seq 1 "$rounds"); do
    one+=("$(timed_run "$name.yaml" 1 "$work/one" "$seeds")")
    each+=("$(timed_run "$name.yaml" "$cores" "$work/each" "$seeds")")
  done
  [ "$(weights "$work/one")" = "$(weights "$work/each")" ] || bench_fail "$name: the schedules' weights differ"
  [ "$(weights "$work/one" | wc -l)" = "$seeds" ] || bench_fail "$name: expected $seeds weights"
  local expansion=1
  [ "$backbone" = resnet50 ] && expansion=4
  local step=$((batch * h * w * width * expansion))
  awk -v n="$name" -v s="$step" -v a="${one[*]}" -v b="${each[*]}" 'BEGIN {
    split(a, x, " "); split(b, y, " "); lo = x[1]; hi = y[1]
    for (i in x) if (x[i] < lo) lo = x[i]; for (i in y) if (y[i] < hi) hi = y[i]
    printf "%-16s %11d %14s %14s %7.2f×\n", n, s, a, b, lo / hi }'
}

header() { printf '%-16s %11s %14s %14s %8s\n' model "step size" "-j 1 (s)" "-j $cores (s)" "speed-up"; }
if [ "$smoke" = 1 ]; then
  header
  bench tiny resnet18 8 32 16 16 1 2 2 1
  exit 0
fi
echo "# $cores cores, $(date -u +%FT%TZ), mgat $(git -C "$repo" rev-parse --short HEAD); $((2 * cores)) seeds each; best of 2 per schedule"
header
bench quickstart resnet18 8 64 32 32 2 60 $((2 * cores)) 2
bench quickstart-4x resnet18 8 128 64 32 2 30 $((2 * cores)) 2
bench wide-16x resnet18 16 128 64 64 2 6 $((2 * cores)) 2
