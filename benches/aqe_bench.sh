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
  python3 - "$work/case" <<'PY' || bench_fail "cannot write the smoke case"
import struct, sys, random, pathlib
out = pathlib.Path(sys.argv[1]); out.mkdir()
random.seed(0)
def npy(name, rows, cols, values, kind):
    header = "{'descr': '<%s', 'fortran_order': False, 'shape': (%s), }" % (kind, f"{rows}, {cols}" if cols else f"{rows},")
    header += " " * ((64 - (10 + len(header) + 1) % 64) % 64) + "\n"
    with open(out / f"{name}.npy", "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack(f"<{len(values)}{'f' if kind == 'f4' else 'q'}", *values))
for side, n in (("q", 300), ("g", 1200)):
    pids = [random.randrange(100) for _ in range(n)]
    npy(f"{side}f", n, 64, [p % 7 + random.gauss(0, 1) for p in pids for _ in range(64)], "f4")
    npy(f"{side}_pids", n, 0, pids, "i8")
    npy(f"{side}_camids", n, 0, [random.randrange(6) for _ in range(n)], "i8")
PY
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
for m in mAP; do
  a=$(jq -e ".$m" "$work/mgat.json") || bench_fail "no $m from mgat"
  b=$(jq -e ".$m" "$work/ref.json") || bench_fail "no $m from the reference"
  echo "$m: mgat $a, fast-reid's distances $b"
done
a=$(jq -e '.cmc."1"' "$work/mgat.json") || bench_fail "no rank-1 from mgat"
b=$(jq -e '.cmc."1"' "$work/ref.json") || bench_fail "no rank-1 from the reference"
echo "rank-1: mgat $a, fast-reid's distances $b"
echo "mgat metrics --qf --gf --metric cosine --qe (read + expand + score): ${mgat_s} s, peak RSS $((mgat_kb / 1024)) MB"
echo "fast-reid aqe + cosine distances (features in, distance matrix out): ${ref_s} s, peak RSS $((ref_kb / 1024)) MB"
awk -v m="$mgat_s" -v r="$ref_s" 'BEGIN{printf "speed-up: %.1f×\n", r / m}'
