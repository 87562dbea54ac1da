#!/usr/bin/env bash
# Benchmark: CPU training speed and memory of mgat against PyTorch, side by side in one run, for the quickstart
# model (ResNet-18 width 8, 64×32, batch 32 = 8×4) and the paper's ResNet-50 (256×128, batch 64 = 16×4), both with
# the MGAT head and a BN-neck. mgat's images/s is the second epoch of a real train stage (JPEG decoding on worker
# threads included); PyTorch's (benches/train_speed_torch.py: the same architecture, losses and Adam on random
# images) excludes data loading. Peak RSS is each whole process's, from /usr/bin/time.
# Each side runs twice, alternating (mgat, PyTorch, mgat, PyTorch), and the best of its two runs is compared (both
# are printed): the first large process after the machine has been idle pays for the kernel's memory compaction
# (here up to 20 % of a ResNet-50 run), so a single pass charges whichever side runs first.
# mgat's images/s is the second epoch's images over its `seconds` in train_log.csv (read by column name and checked
# to be positive), to two decimals; `seconds` has two decimals, so the quickstart model runs 256 iterations an epoch
# (about 3 s) for a figure good to 0.3 %.
# Usage: benches/train_speed.sh [PYTHON]   PYTHON has torch; without it, torch is installed from PyPI into a
# throwaway venv under target/ (about 5 GB).
#        benches/train_speed.sh --smoke   the quickstart model for 2 iterations, no PyTorch (what CI runs)
. "$(dirname "$0")/lib.sh"
bench_build
py=${1:-}
if [ "$smoke" = 1 ]; then
  py=""
elif [ -z "$py" ]; then
  venv=$repo/target/bench-venv
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  "$venv/bin/python" -c 'import torch' 2>/dev/null || "$venv/bin/pip" install -q --disable-pip-version-check torch numpy
  py=$venv/bin/python
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

peak_gb() { awk '{ printf "%.2f", $1 / 1048576 }' "$1"; }

# One mgat train stage of spec $1.yaml; prints the second epoch's images/s, leaves the peak RSS in $1.mgat.rss.
mgat_images_per_s() { # name images_per_epoch
  local name=$1 images=$2 logs seconds
  /usr/bin/time -f %M -o "$name.mgat.rss" "$mgat" -q run "$name.yaml" --until train >/dev/null
  logs=(.mgat/cache/train/*/train_log.csv)
  [ ${#logs[@]} = 1 ] || bench_fail "expected one train entry, found ${#logs[@]}"
  seconds=$(positive "$name mgat epoch seconds" "$(csv_last "${logs[0]}" seconds)")
  rm -rf .mgat/cache/train .mgat/cache/eval
  awk -v i="$images" -v s="$seconds" 'BEGIN { printf "%.2f", i / s }'
}

# The largest of its arguments: the better of two speeds, the higher of two peaks.
largest() { printf '%s\n' "$@" | sort -g | tail -1; }

bench() { # name backbone width height img_width p k iters
  local name=$1 backbone=$2 width=$3 h=$4 w=$5 p=$6 k=$7 iters=$8
  "$mgat" -q data lock "$name" --format synth --seed 3 --ids $((4 * p)) --cameras 4 --images-per-camera 4 \
    --height "$h" --width "$w" --junk 0 --distractors 0 >/dev/null
  cat > "$name.yaml" <<SPEC
name: $name
base:
  dataset: {name: $name}
  model: {backbone: $backbone, width: $width, bnneck: true, head: mgat, gamma: 1.0}
  train: {height: $h, width: $w, batch_size: $((p * k)), instances: $k, epochs: 2, iters_per_epoch: $iters,
          warmup_epochs: 0, schedule: constant, lr: 0.00035, workers: 2}
SPEC
  if [ "$smoke" = 1 ]; then
    local ours
    ours=$(positive "$name mgat images/s" "$(mgat_images_per_s "$name" $((iters * p * k)))")
    printf '%-11s %10s %10s (smoke: no PyTorch)\n' "$name" "$ours" "-"
    return
  fi
  local ours=() theirs=() rss_ours=() rss_theirs=()
  for _ in 1 2; do
    ours+=("$(positive "$name mgat images/s" "$(mgat_images_per_s "$name" $((iters * p * k)))")")
    rss_ours+=("$(positive "$name mgat peak RSS" "$(peak_gb "$name.mgat.rss")")")
    theirs+=("$(positive "$name torch images/s" "$(/usr/bin/time -f %M -o "$name.torch.rss" "$py" \
      "$repo/benches/train_speed_torch.py" "${backbone#resnet}" "$width" "$h" "$w" "$p" "$k" "$iters" 2>/dev/null)")")
    rss_theirs+=("$(positive "$name torch peak RSS" "$(peak_gb "$name.torch.rss")")")
  done
  awk -v n="$name" -v a="$(largest "${ours[@]}")" -v b="$(largest "${theirs[@]}")" -v c="$(largest "${rss_ours[@]}")" \
    -v d="$(largest "${rss_theirs[@]}")" -v runs="${ours[*]} | ${theirs[*]}" \
    'BEGIN { printf "%-11s %10s %10s %6.2f× %10s %10s %6.2f×   (%s)\n", n, a, b, a / b, c, d, c / d, runs }'
}

if [ "$smoke" = 1 ]; then
  bench quickstart resnet18 8 64 32 8 4 2
  exit 0
fi
echo "$(nproc) cores, $(date -u +%FT%TZ), mgat $(git -C "$repo" rev-parse --short HEAD), $("$py" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())')"
printf '%-11s %10s %10s %7s %10s %10s %7s   %s\n' model "mgat img/s" "torch" ratio "mgat GB" "torch GB" ratio \
  "(images/s of each run: mgat | torch)"
bench quickstart resnet18 8 64 32 8 4 256
bench resnet50 resnet50 64 256 128 16 4 3
