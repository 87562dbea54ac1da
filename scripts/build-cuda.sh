#!/usr/bin/env bash
# Builds the CUDA artefact of mgat (`--features cuda`) on a machine without a CUDA toolkit, as DESIGN.md describes:
# the toolkit pieces come from PyPI (nvcc and nvvm pinned to 13.0.88: an unpinned nvvm emits PTX that the 13.0
# ptxas and driver 580 reject), the driver library is a generated link stub, and CUDA_COMPUTE_CAP picks the GPU
# generation (90 for H100/H200; 80 gives PTX that newer GPUs JIT). The binary and libcurand.so.10 (which PyTorch's
# wheels no longer carry) land in one folder; at run time the machine's driver, cuBLAS, cuDNN and cudart are used.
# Usage: scripts/build-cuda.sh [OUT_DIR]      (default target/cuda-dist; about 16 minutes on 2 cores)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/target/cuda-dist}
work=$repo/target/cuda-toolkit
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

echo "== toolkit from PyPI into $work/venv"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q --disable-pip-version-check \
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-crt==13.0.*" \
  "nvidia-cuda-nvrtc==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand==10.4.0.*" \
  "nvidia-cudnn-cu13==9.*"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/nvidia

# The CUDA 13 wheels install into one tree, nvidia/cu13/{bin,include,lib,nvvm}: that tree is the CUDA root (nvcc
# finds its headers and nvvm relative to its own folder). It gets lib64 and unversioned library names for the
# linker, and the driver stub below.
root=$site/cu13
echo "== CUDA_ROOT is $root"
[ -x "$root/bin/nvcc" ] || { echo "error: nvcc not found at $root/bin" >&2; exit 1; }
ln -sfn lib "$root/lib64"
mkdir -p "$root/lib/stubs"
# cuDNN's wheel has a tree of its own; its libraries join the root's for the linker.
for so in "$site"/cudnn/lib/libcudnn*.so.[0-9]*; do
  [ -e "$so" ] && ln -sf "$so" "$root/lib/$(basename "$so")"
done
for so in "$root"/lib/lib*.so.[0-9]*; do
  base=${so%%.so.*}.so; [ -e "$base" ] || ln -s "$(basename "$so")" "$base"
done

echo "== libcuda link stub"
registry=$(dirname "$(cargo metadata --format-version 1 --features cuda --manifest-path "$repo/Cargo.toml" | python3 -c 'import json,sys; print([p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"][0])')")
{
  grep -rhoE 'pub (unsafe )?fn cu[A-Za-z0-9_]+' "$registry/src/driver/sys" 2>/dev/null | sed -E 's/.*fn //'
  gcc -E -I"$root/include" "$root/include/cuda.h" 2>/dev/null | grep -oE '\bcu[A-Z][A-Za-z0-9_]*\s*\(' | sed -E 's/\s*\($//'
} | sort -u | awk '{ print "void " $1 "(void) {}" }' > "$work/libcuda_stub.c"
gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$work/libcuda_stub.c"
ln -sf stubs/libcuda.so "$root/lib/libcuda.so"
echo "   $(wc -l < "$work/libcuda_stub.c") driver entry points"

echo "== cargo build --release --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
start=$(date +%s)
CUDA_ROOT=$root CUDA_HOME=$root CUDA_PATH=$root PATH="$root/bin:$PATH" LIBRARY_PATH="$root/lib:$root/lib/stubs" \
  cargo build --release --features cuda --manifest-path "$repo/Cargo.toml" --target-dir "$repo/target/cuda"
echo "   built in $(( $(date +%s) - start )) s"

mkdir -p "$out"
cp "$repo/target/cuda/release/mgat" "$out/mgat"
cp -L "$(find "$site" -name 'libcurand.so.10*' | head -1)" "$out/libcurand.so.10"
ls -la "$out"
