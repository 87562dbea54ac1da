#!/usr/bin/env bash
# Benchmark: training images/s of mgat (candle, CPU) for the quickstart model (ResNet-18 width 8, 64×32,
# batch 32 = 8×4, MGAT head, BN-neck) and for the paper's ResNet-50 at 256×128, batch 64 = 16×4, each next to
# PyTorch CPU running the same architecture, losses and optimiser on random images of the same shape
# (benches/train_speed_torch.py). mgat's figure is the second epoch of a real train stage (JPEG decoding on worker
# threads included); PyTorch's excludes data loading.
# Usage: benches/train_speed.sh [python-with-torch]   (PyTorch is skipped when no python with torch is given)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mgat=$repo/target/release/mgat
[ -x "$mgat" ] || (cd "$repo" && cargo build --release -q)
py=${1:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

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
  "$mgat" -q run "$name.yaml" --until train >/dev/null
  local ours
  ours=$(tail -1 .mgat/cache/train/*/train_log.csv | cut -d, -f8)
  rm -rf .mgat/cache/train .mgat/cache/eval
  local theirs="not run"
  if [ -n "$py" ]; then
    local depth=${backbone#resnet}
    theirs=$("$py" "$repo/benches/train_speed_torch.py" "$depth" "$width" "$h" "$w" "$p" "$k" "$iters")
  fi
  echo "$name: mgat $ours images/s, PyTorch $theirs images/s"
}

bench quickstart resnet18 8 64 32 8 4 16
bench resnet50 resnet50 64 256 128 16 4 3
