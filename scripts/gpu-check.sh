#!/usr/bin/env bash
# On a GPU machine: a short real training of ResNet-50 at 256×128, batch 64 = 16×4, on synthetic data, then the
# CPU-vs-GPU difference of one forward pass on the same weights. Prints images/s and the difference.
# Usage: scripts/gpu-check.sh DIST_DIR   (the folder scripts/build-cuda.sh wrote: mgat + libcurand.so.10)
# cuBLAS and cudart are taken from the machine (e.g. PyTorch's nvidia-* packages); their folders are added to
# LD_LIBRARY_PATH when found under a Python site-packages.
set -euo pipefail
dist=$(cd "${1:?usage: scripts/gpu-check.sh DIST_DIR}" && pwd)
libs=$dist
for d in $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)/nvidia/*/lib $(python3 -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' 2>/dev/null)/nvidia/cu13/lib; do
  [ -d "$d" ] && libs=$libs:$d
done
export LD_LIBRARY_PATH=$libs:${LD_LIBRARY_PATH:-}
mgat=$dist/mgat
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
"$mgat" -q data lock r50 --format synth --seed 5 --ids 80 --cameras 6 --height 256 --width 128
for device in cuda cpu; do
  iters=$([ "$device" = cuda ] && echo 20 || echo 2)
  cat > "$device.yaml" <<SPEC
name: gpu-check-$device
base:
  dataset: {name: r50}
  model: {backbone: resnet50, width: 64, bnneck: true, head: mgat}
  train: {device: $device, height: 256, width: 128, batch_size: 64, instances: 4, epochs: 2, iters_per_epoch: $iters,
          warmup_epochs: 0, schedule: constant, lr: 0.00035, workers: 8}
  eval: {batch_size: 256}
SPEC
  start=$(date +%s)
  "$mgat" run "$device.yaml" --until train
  echo "$device: $(tail -1 .mgat/cache/train/*/train_log.csv | cut -d, -f8) images/s (epoch 2), $(( $(date +%s) - start )) s in all"
  mv .mgat/cache/train ".mgat/train-$device"
done
# The CUDA-trained weights evaluated on each device (device is in no stage key, so the train entry is reused):
# the difference of the metrics over the whole test set bounds the forward-pass difference.
for device in cuda cpu; do
  sed "s/device: cuda/device: $device/" cuda.yaml > "cmp-$device.yaml"
  rm -rf .mgat/cache/train .mgat/cache/eval && cp -r .mgat/train-cuda .mgat/cache/train
  "$mgat" -q run "cmp-$device.yaml"
  cp .mgat/cache/eval/*/metrics.json "metrics-$device.json"
done
python3 - <<'PY'
import json
a, b = (json.load(open(f"metrics-{d}.json")) for d in ("cuda", "cpu"))
print("eval of the CUDA-trained weights: mAP cuda %.6f cpu %.6f (|diff| %.2e), rank-1 cuda %.6f cpu %.6f"
      % (a["mAP"], b["mAP"], abs(a["mAP"] - b["mAP"]), a["cmc"]["1"], b["cmc"]["1"]))
PY
