#!/usr/bin/env bash
# Benchmark: the training loader per core, beside PyTorch's, on the same files in one run. mgat's loader (the P×K
# sampler; reading each file with its SHA-256 checked, JPEG decoding, resizing to 256×128, flip, pad-and-crop,
# random erasing and normalisation; `crates/train/examples/loader_speed.rs`) against a torchvision DataLoader with
# PIL doing the same transforms (`benches/loader_case.py`), on a synthetic Market-1501 tree at its official size:
# one core (mgat: one decoding thread; torch: num_workers 0) and two (two threads; two worker processes), images/s.
# Goal: ≥ 1.5× per core.
# Usage: benches/loader_bench.sh PYTHON     (an interpreter with torch, torchvision and pillow)
#        benches/loader_bench.sh --smoke    a small tree, mgat only (CI)
. "$(dirname "$0")/lib.sh"
bench_build
(cd "$repo" && cargo build --release -q -p mgat-train --example loader_speed)
loader=$repo/target/release/examples/loader_speed
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() { sed -n 's/.*images_per_s=\([0-9.]*\).*/\1/p' <<< "$1"; }
if [ "$smoke" = 1 ]; then
  "$mgat" -q data synth --layout market1501 --seed 3 --ids 40 --out "$work/market" > /dev/null
  out=$("$loader" "$work/market" 1 3) || bench_fail "loader_speed failed: $out"
  echo "mgat loader, 3 batches of 64 on one thread (smoke: no anchor): $(positive "images/s" "$(rate "$out")") images/s"
  exit 0
fi
py=${1:?usage: benches/loader_bench.sh PYTHON-with-torch-torchvision-pillow}
"$mgat" -q data synth --layout market1501 --official-size --seed 3 --out "$work/market" > /dev/null
batches=40
for cores in 1 2; do
  torch_workers=$([ "$cores" = 1 ] && echo 0 || echo 2)
  # Interleaved, best of 2 each, so that the machine's load falls on both alike.
  best_mgat=0 best_torch=0
  for round in 1 2; do
    out=$("$loader" "$work/market" "$cores" "$batches") || bench_fail "loader_speed failed: $out"
    m=$(positive "mgat images/s" "$(rate "$out")")
    out=$("$py" "$repo/benches/loader_case.py" "$work/market" "$torch_workers" "$batches") || bench_fail "loader_case.py failed: $out"
    t=$(positive "torch images/s" "$(rate "$out")")
    best_mgat=$(awk -v a="$best_mgat" -v b="$m" 'BEGIN { print (b > a ? b : a) }')
    best_torch=$(awk -v a="$best_torch" -v b="$t" 'BEGIN { print (b > a ? b : a) }')
  done
  ratio=$(awk -v a="$best_mgat" -v b="$best_torch" 'BEGIN { printf "%.2f", a / b }')
  echo "$cores core(s), $((batches * 64)) images at 256×128: mgat $best_mgat images/s, torchvision DataLoader $best_torch images/s: ${ratio}×"
done
