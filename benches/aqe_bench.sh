#!/usr/bin/env bash
# Benchmark: α-query expansion at Market-1501 scale (3368 query × 15913 gallery × 2048-d float32 features, k 5,
# α 3): `mgat metrics --qf --gf --metric cosine --qe` (read, expand in 64 MB blocks of similarity rows, score)
# beside, in the same run, fast-reid's own `aqe` and cosine distances (PyTorch, the whole (query+gallery)²
# similarity matrix), with both peak RSS figures, the speed ratio and the agreement of their metrics.
# Usage: benches/aqe_bench.sh PYTHON FASTREID   (an interpreter with torch and numpy; a fast-reid checkout, of which
#        only fastreid/evaluation/query_expansion.py is imported)
#        benches/aqe_bench.sh --smoke            300 × 1200 × 64 features, no anchor (CI)
. "$(dirname "$0")/lib.sh"
bench_build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timed() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" && read -r s kb < "$work/time"; }
if [ "$smoke" = 1 ]; then
  smoke_features "$work/case"
  timed "$mgat" metrics --dir "$work/case" --qf "$work/case/qf.npy" --gf "$work/case/gf.npy" --metric cosine --qe --json \
    > "$work/out.json" || bench_fail "mgat metrics --qe failed"
  mAP=$(jq -e '.mAP' "$work/out.json") || bench_fail "mgat metrics --qe --json has no mAP"
  echo "mgat metrics --qe on 300 × 1200 × 64 (smoke: no anchor): $s s, peak RSS $(positive "peak RSS" "$kb") KiB, mAP $(positive mAP "$mAP")"
  exit 0
fi
py=${1:?usage: benches/aqe_bench.sh PYTHON-with-torch FASTREID-checkout}
fastreid=${2:?usage: benches/aqe_bench.sh PYTHON-with-torch FASTREID-checkout}
"$py" "$repo/benches/rerank_case.py" write "$work/case"
args=(metrics --dir "$work/case" --qf "$work/case/qf.npy" --gf "$work/case/gf.npy" --metric cosine --qe --json)
timed "$mgat" "${args[@]}" > "$work/mgat.json" || bench_fail "mgat metrics --qe failed"
mgat_s=$(positive "mgat seconds" "$s"); mgat_kb=$(positive "mgat peak RSS" "$kb")
timed "$py" "$repo/benches/aqe_case.py" "$work/case" "$fastreid" "$work/case/distmat.npy" > "$work/ref.txt" \
  || bench_fail "fast-reid's aqe failed"
ref_s=$(positive "reference seconds" "$s"); ref_kb=$(positive "reference peak RSS" "$kb")
"$mgat" metrics --dir "$work/case" --json > "$work/ref.json" || bench_fail "scoring fast-reid's distances failed"
compare_scores "$work/mgat.json" "$work/ref.json" "fast-reid's distances"
echo "mgat metrics --qf --gf --metric cosine --qe (read + expand + score): ${mgat_s} s, peak RSS $((mgat_kb / 1024)) MB"
echo "fast-reid aqe + cosine distances (features in, distance matrix out): ${ref_s} s, peak RSS $((ref_kb / 1024)) MB"
awk -v m="$mgat_s" -v r="$ref_s" 'BEGIN{printf "speed-up: %.1f×\n", r / m}'
