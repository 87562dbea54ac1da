#!/usr/bin/env bash
# Benchmark: evaluation from features at Market-1501 scale (3368 query × 15913 gallery × 2048 float32): `mgat metrics
# --qf --gf` (distances in blocks, scored as they come) beside, in the same run, the distance gemm alone
# (torch.mm, PyTorch's CPU BLAS on the same 2 cores: the floor) and torchreid's recipe (torch distance matrix, then
# torchreid's eval_market1501 from its PyPI sdist), with the ratios and the metrics' agreement.
# Usage: benches/features_bench.sh PYTHON   (an interpreter with torch and numpy, e.g. a throwaway venv with
#        `pip install torch numpy`; the torchreid sdist is downloaded into a temporary folder, not installed)
#        benches/features_bench.sh --smoke   the reference case's 50 × 300 features in tests/data, no anchor (CI)
. "$(dirname "$0")/lib.sh"
bench_build
if [ "$smoke" = 1 ]; then
  case=$repo/tests/data/reid-cases/m1_basic
  out=$(/usr/bin/time -f '%e %M' -o /dev/stderr "$mgat" metrics --dir "$case" --qf "$case/qf.npy" --gf "$case/gf.npy" \
    --json 2>"${TMPDIR:-/tmp}/features-smoke.$$") || bench_fail "mgat metrics --qf --gf failed"
  read -r s kb < <(tail -1 "${TMPDIR:-/tmp}/features-smoke.$$"); rm -f "${TMPDIR:-/tmp}/features-smoke.$$"
  mAP=$(jq -e '.mAP' <<< "$out") || bench_fail "mgat metrics --json has no mAP"
  echo "mgat metrics --qf --gf on 50 × 300 features (smoke: no anchor): $(awk -v s="$s" 'BEGIN{print s + 0.005}') s, peak RSS $(positive "peak RSS" "$kb") KiB, mAP $(positive mAP "$mAP")"
  exit 0
fi
py=${1:?usage: benches/features_bench.sh PYTHON-with-torch}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$py" -m pip download -q --no-deps --no-binary :all: torchreid==0.2.5 -d "$work/sdist"
tar -xzf "$work/sdist"/torchreid-0.2.5.tar.gz -C "$work/sdist"
rank_py=$work/sdist/torchreid-0.2.5/torchreid/reid/metrics/rank.py
mkdir "$work/case"
"$py" "$repo/benches/features_case.py" "$work/case" "$rank_py"
cat "$work/case"/*.npy >/dev/null   # page cache warm for both
args=(metrics --dir "$work/case" --qf "$work/case/qf.npy" --gf "$work/case/gf.npy" --json)
"$mgat" "${args[@]}" > "$work/mgat.json"
best=""
for _ in 1 2 3; do
  line=$(/usr/bin/time -f '%e %M' "$mgat" "${args[@]}" 2>&1 >/dev/null | tail -1)
  best=$(printf '%s\n%s\n' "$best" "$line" | grep . | sort -n | head -1)
done
mgat_s=${best% *}; mgat_kb=${best#* }
anchors=$("$py" "$repo/benches/features_case.py" "$work/case" "$rank_py" "$work/mgat.json")
echo "$anchors" | grep -v '^GEMM_S='
gemm_s=$(echo "$anchors" | sed -n 's/^GEMM_S=//p')
echo "mgat metrics --qf --gf (read + distances + score, best of 3): ${mgat_s} s, peak RSS $((mgat_kb / 1024)) MB"
awk -v m="$mgat_s" -v g="$gemm_s" 'BEGIN{printf "ratio to the gemm alone: %.2f× (goal ≤ 1.3×)\n", m / g}'
