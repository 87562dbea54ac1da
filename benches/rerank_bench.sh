#!/usr/bin/env bash
# Benchmark: k-reciprocal re-ranking at Market-1501 scale (3368 query × 15913 gallery × 2048-d float32 features):
# `mgat metrics --qf --gf --rerank` (streamed: neighbour lists, sparse V, no (query+gallery)² matrix) beside, in the
# same run, torchreid's `re_ranking` on the three squared euclidean matrices its engine passes, with both peak RSS
# figures, the speed ratio and the agreement of the re-ranked scores. Goals: mgat ≤ 0.5 GB peak and ≥ 20× faster.
# Then MSMT17's size (11659 × 82161 × 2048): mgat (goal ≤ 4 GB peak) and the same reference, given this machine's
# memory as its address-space limit, which it cannot run within (it says what it failed to allocate).
# Usage: benches/rerank_bench.sh PYTHON   (an interpreter with numpy; torchreid's sdist is downloaded into a
#        temporary folder, not installed, and only its numpy-only rerank.py is imported)
#        benches/rerank_bench.sh --smoke   300 × 1200 × 64 features, no anchor (CI)
. "$(dirname "$0")/lib.sh"
bench_build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timed() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" && read -r s kb < "$work/time"; }
if [ "$smoke" = 1 ]; then
  smoke_features "$work/case"
  timed "$mgat" metrics --dir "$work/case" --qf "$work/case/qf.npy" --gf "$work/case/gf.npy" --rerank --json \
    > "$work/out.json" || bench_fail "mgat metrics --rerank failed"
  mAP=$(jq -e '.mAP' "$work/out.json") || bench_fail "mgat metrics --rerank --json has no mAP"
  echo "mgat metrics --rerank on 300 × 1200 × 64 (smoke: no anchor): $s s, peak RSS $(positive "peak RSS" "$kb") KiB, mAP $(positive mAP "$mAP")"
  exit 0
fi
py=${1:?usage: benches/rerank_bench.sh PYTHON-with-numpy}
"$py" -m pip download -q --no-deps --no-binary :all: torchreid==0.2.5 -d "$work/sdist"
tar -xzf "$work/sdist"/torchreid-0.2.5.tar.gz -C "$work/sdist"
rerank_py=$work/sdist/torchreid-0.2.5/torchreid/reid/utils/rerank.py
"$py" "$repo/benches/rerank_case.py" write "$work/case"
args=(metrics --dir "$work/case" --qf "$work/case/qf.npy" --gf "$work/case/gf.npy" --rerank --json)
timed "$mgat" "${args[@]}" > "$work/mgat.json" || bench_fail "mgat metrics --rerank failed"
mgat_s=$(positive "mgat seconds" "$s"); mgat_kb=$(positive "mgat peak RSS" "$kb")
timed "$py" "$repo/benches/rerank_case.py" reference "$work/case" "$rerank_py" "$work/case/distmat.npy" > "$work/ref.txt" \
  || bench_fail "torchreid's re_ranking failed (it needs about 12 GB at this size)"
ref_s=$(positive "reference seconds" "$s"); ref_kb=$(positive "reference peak RSS" "$kb")
cp "$work/case/distmat.npy" "$work/reranked.npy"
"$mgat" metrics --dir "$work/case" --json > "$work/ref.json" || bench_fail "scoring torchreid's re-ranked distances failed"
compare_scores "$work/mgat.json" "$work/ref.json" "torchreid's re-ranked distances"
echo "mgat metrics --qf --gf --rerank (read + re-rank + score): ${mgat_s} s, peak RSS $((mgat_kb / 1024)) MB (goal ≤ 512)"
echo "torchreid re_ranking (matrices in, re-ranked matrix out): ${ref_s} s, peak RSS $((ref_kb / 1024)) MB"
awk -v m="$mgat_s" -v r="$ref_s" 'BEGIN{printf "speed-up: %.1f× (goal ≥ 20×)\n", r / m}'

msmt=$work/msmt
"$py" "$repo/benches/rerank_case.py" write "$msmt" 11659 82161 2048
timed "$mgat" metrics --dir "$msmt" --qf "$msmt/qf.npy" --gf "$msmt/gf.npy" --rerank --json > "$work/msmt.json" \
  || bench_fail "mgat metrics --rerank failed at MSMT17's size"
msmt_s=$(positive "mgat seconds at MSMT17's size" "$s"); msmt_kb=$(positive "mgat peak RSS at MSMT17's size" "$kb")
msmt_map=$(positive "mAP at MSMT17's size" "$(jq -e '.mAP' "$work/msmt.json")")
echo "MSMT17 size, mgat metrics --rerank: ${msmt_s} s, peak RSS $((msmt_kb / 1024)) MB (goal ≤ 4096), mAP $msmt_map"
mem_kb=$(awk '/^MemTotal:/ { print $2 }' /proc/meminfo)
set +e
(ulimit -v "$mem_kb"; exec "$py" "$repo/benches/rerank_case.py" reference "$msmt" "$rerank_py" "$msmt/distmat.npy") \
  > "$work/msmt-ref.txt" 2>&1
status=$?
set -e
case $status in
  0) echo "MSMT17 size, torchreid re_ranking: ran, $(grep REFERENCE_S "$work/msmt-ref.txt")" ;;
  3) echo "MSMT17 size, torchreid re_ranking within this machine's $((mem_kb / 1048576)) GB: cannot run: $(sed -n 's/^REFERENCE_FAILED=//p' "$work/msmt-ref.txt")" ;;
  *) bench_fail "the reference at MSMT17's size exited $status: $(tail -3 "$work/msmt-ref.txt")" ;;
esac
