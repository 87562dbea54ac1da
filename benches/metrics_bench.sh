#!/usr/bin/env bash
# Benchmark: `mgat metrics` on a Market-1501-sized case (3368 × 15913 float32), wall time and peak memory, beside
# torchreid's evaluator on the same matrix in the same run: its Python `eval_market1501` from the torchreid sdist on
# PyPI (0.2.5, which ships no Cython source), and its Cython `evaluate_cy` too when a rank_cy.pyx is given.
# Usage: benches/metrics_bench.sh [path/to/torchreid/metrics/rank_cylib/rank_cy.pyx]
# Needs python3; installs numpy and Cython into a throwaway venv and downloads the torchreid sdist (no install, no
# torch: only its metrics/rank.py is loaded). torchreid's code is not part of this repository.
#        benches/metrics_bench.sh --smoke   the 50 × 300 reference case in tests/data, no anchor (what CI runs)
. "$(dirname "$0")/lib.sh"
bench_build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Wall seconds and peak RSS (KiB) of a command, each checked positive: "S KIB".
timed() {
  /usr/bin/time -f '%e %M' -o "$work/timed" "$@" >/dev/null
  read -r s kb < "$work/timed"
  echo "$(positive "wall seconds of $1" "$(awk -v s="$s" 'BEGIN{print s + 0.005}')") $(positive "peak RSS of $1" "$kb")"
}
if [ "$smoke" = 1 ]; then
  read -r s kb <<< "$(timed "$mgat" metrics --dir "$repo/tests/data/reid-cases/m1_basic" --json)"
  rank1=$("$mgat" metrics --dir "$repo/tests/data/reid-cases/m1_basic" --json | jq -e '.cmc."1"') ||
    bench_fail "mgat metrics --json has no cmc.1"
  echo "mgat metrics on the 50 × 300 reference case (smoke: no anchor): $s s, peak RSS $kb KiB, rank-1 $(positive rank-1 "$rank1")"
  exit 0
fi
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q numpy cython setuptools
py=$work/venv/bin/python
mkdir "$work/case"
"$py" "$repo/benches/metrics_case.py" "$work/case"

peak() { /usr/bin/time -f '%e s, peak RSS %M KiB' "$@" 2>&1 >/dev/null | tail -1; }
cat "$work/case/distmat.npy" >/dev/null   # page cache warm for both tools
echo "mgat metrics (read + score):   $(peak "$mgat" metrics --dir "$work/case" --json)"
for _ in 1 2; do echo "mgat metrics (again):          $(peak "$mgat" metrics --dir "$work/case" --json)"; done
"$mgat" metrics --dir "$work/case" --json > "$work/mgat.json"

"$work/venv/bin/pip" download -q --no-deps --no-binary :all: torchreid==0.2.5 -d "$work/sdist"
tar -xzf "$work/sdist"/torchreid-0.2.5.tar.gz -C "$work/sdist"
# torchreid's evaluator on the case: `python RANK_PY` (its eval_market1501) or `cython DIR` (its evaluate_cy).
cat > "$work/torchreid_eval.py" <<'PY'
import importlib.util, json, sys, time
import numpy as np
kind, where, d, ours_path = sys.argv[1:5]
if kind == "cython":
    sys.path.insert(0, where)
    import rank_cy
    evaluate, name = rank_cy.evaluate_cy, "cython evaluate_cy"
else:
    spec = importlib.util.spec_from_file_location("rank", where)
    rank = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rank)
    evaluate, name = rank.eval_market1501, "python eval_market1501"
load = lambda n: np.load(f"{d}/{n}.npy")
dist, qp, gp, qc, gc = (load(n) for n in ["distmat", "q_pids", "g_pids", "q_camids", "g_camids"])
t = time.perf_counter()
cmc, mAP = evaluate(dist, qp, gp, qc, gc, 50)
print(f"torchreid {name} (score only): {time.perf_counter() - t:.2f} s", file=sys.stderr)
ours = json.load(open(ours_path))
print(f"agreement: rank-1 {cmc[0]:.6f} vs {ours['cmc']['1']:.6f}, mAP {mAP:.6f} vs {ours['mAP']:.6f}", file=sys.stderr)
PY
# One run of torchreid's evaluator: its own timing and agreement lines, then wall time and peak memory.
torchreid() {
  /usr/bin/time -f '%e s, peak RSS %M KiB' -o "$work/time.txt" "$py" "$work/torchreid_eval.py" "$@" \
    "$work/case" "$work/mgat.json" 2>&1 | grep -e '^torchreid' -e '^agreement'
  echo "torchreid $1 (load + score): $(cat "$work/time.txt")"
}
torchreid python "$work/sdist/torchreid-0.2.5/torchreid/reid/metrics/rank.py"

if [ $# -ge 1 ]; then
  mkdir "$work/cy" && cp "$1" "$work/cy/rank_cy.pyx"
  (cd "$work/cy" && "$py" -c "
from setuptools import setup, Extension
from Cython.Build import cythonize
import numpy
setup(ext_modules=cythonize([Extension('rank_cy', ['rank_cy.pyx'], include_dirs=[numpy.get_include()])], quiet=True),
      script_args=['build_ext', '--inplace', '-q'])" >/dev/null 2>&1)
  torchreid cython "$work/cy"
fi
