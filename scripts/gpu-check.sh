#!/usr/bin/env bash
# The GPU check, in two halves that fit the lent GPU machine (no Rust, no network, at most 64 MiB carried):
#
#   scripts/gpu-check.sh pack DIR   here: builds the CUDA binary (scripts/build-cuda.sh), strips and xz-compresses it
#                                   into DIR with this script, benches/lib.sh (figures read by column name) and the
#                                   PyTorch twin of the training step (≤ 60 MiB)
#   scripts/gpu-check.sh run DIR    there: finds the CUDA libraries under /opt/torch/.venv (or $TORCH_VENV), makes its
#                                   own synthetic data with the binary, and prints, within about 8 minutes:
#     (a) one ResNet-50 training step (forward + backward, 16 images at 256×128) on the GPU against the same step in
#         f64 on the CPU from the same weights and batch: loss and per-tensor gradient norms (fp32 and bf16);
#     (b) a short ResNet-50 train stage at 256×128, batch 64 = 16×4: images/s and peak GPU memory, fp32 and bf16;
#     (c) benches/train_speed_torch.py on the same card, fp32 and AMP bf16, and mgat's ratio to it.
set -euo pipefail

pack() {
  local out=$1 repo
  repo=$(cd "$(dirname "$0")/.." && pwd)
  mkdir -p "$out"
  bash "$repo/scripts/build-cuda.sh" "$repo/target/cuda-dist"
  strip -o "$out/mgat" "$repo/target/cuda-dist/mgat"
  xz -9e -T0 -f "$out/mgat"
  cp "$repo/scripts/gpu-check.sh" "$repo/benches/lib.sh" "$repo/benches/train_speed_torch.py" "$out/"
  du -b "$out"/* | awk '{ total += $1; print } END { printf "bundle: %.1f MiB\n", total / 1048576 }'
  local total
  total=$(du -cb "$out" | tail -1 | cut -f1)
  [ "$total" -le $((60 * 1048576)) ] || { echo "error: bundle over 60 MiB" >&2; exit 1; }
}

run() {
  local dir venv py site
  dir=$(cd "$1" && pwd)
  # csv_last and positive: figures read by their column's name, failing loudly when absent.
  . "$dir/lib.sh"
  venv=${TORCH_VENV:-/opt/torch/.venv}
  py=$venv/bin/python
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  local libs=$dir
  for d in "$site"/nvidia/*/lib; do libs=$libs:$d; done
  export LD_LIBRARY_PATH=$libs:${LD_LIBRARY_PATH:-}
  local work
  work=$(mktemp -d)
  trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
  local mgat=$work/mgat
  if command -v xz >/dev/null; then
    xz -dc "$dir/mgat.xz" > "$mgat"
  else
    "$py" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
      "$dir/mgat.xz" "$mgat"
  fi
  chmod +x "$mgat"
  # The bundle carries no CUDA library (libcurand alone is 133 MB): the driver's libcuda and the venv's nvidia-*
  # wheels (cuBLAS, cuDNN, cudart, cuRAND) must provide them all, or nothing below can run.
  local missing
  missing=$(ldd "$mgat" | awk '/not found/ { print $1 }')
  [ -z "$missing" ] || { echo "error: libraries not found for the CUDA binary: $missing (searched $libs)" >&2; exit 1; }
  cd "$work"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  echo "$(nproc) CPU cores; $("$py" -c 'import torch; print("torch", torch.__version__)')"

  echo "== (a) one ResNet-50 training step on the GPU against f64 on the CPU"
  for precision in fp32 bf16; do
    "$mgat" device check --device cuda --backbone resnet50 --ids 4 --instances 4 --precision "$precision" || true
  done

  echo "== (b) ResNet-50 train stage, 256×128, batch 64"
  "$mgat" -q data lock r50 --format synth --seed 5 --ids 160 --cameras 6 --height 256 --width 128 >/dev/null
  local ours=()
  for precision in fp32 bf16; do
    cat > "$precision.yaml" <<SPEC
name: gpu-check-$precision
base:
  dataset: {name: r50}
  model: {backbone: resnet50, width: 64, bnneck: true, head: mgat}
  train: {device: cuda, precision: $precision, height: 256, width: 128, batch_size: 64, instances: 4, epochs: 2,
          iters_per_epoch: 25, warmup_epochs: 0, schedule: constant, lr: 0.00035, workers: 8}
SPEC
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "mem-$precision.log" &
    local poll=$!
    local base
    base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
    "$mgat" -q run "$precision.yaml" --until train
    kill "$poll" 2>/dev/null || true
    local rate peak
    rate=$(positive "images_per_s" "$(csv_last .mgat/cache/train/*/train_log.csv images_per_s)")
    peak=$(sort -n "mem-$precision.log" | tail -1)
    echo "mgat $precision: $rate images/s (epoch 2), peak GPU memory $(( (peak - base) )) MiB above the idle $base MiB"
    ours+=("$rate")
    rm -rf .mgat/cache/train .mgat/cache/eval
  done

  echo "== (c) PyTorch on the same card"
  local fp32 amp
  fp32=$("$py" "$dir/train_speed_torch.py" 50 64 256 128 16 4 25 --device cuda)
  amp=$("$py" "$dir/train_speed_torch.py" 50 64 256 128 16 4 25 --device cuda --amp)
  awk -v a="${ours[0]}" -v b="$fp32" -v c="${ours[1]}" -v d="$amp" 'BEGIN {
    printf "fp32: mgat %s, PyTorch %s images/s: %.2f×\n", a, b, a / b
    printf "bf16: mgat %s, PyTorch AMP %s images/s: %.2f×\n", c, d, c / d }'
}

case "${1:-}" in
  pack) pack "${2:?usage: scripts/gpu-check.sh pack DIR}" ;;
  run) run "${2:?usage: scripts/gpu-check.sh run DIR}" ;;
  *) echo "usage: scripts/gpu-check.sh pack DIR | run DIR" >&2; exit 2 ;;
esac
