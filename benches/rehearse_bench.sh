#!/usr/bin/env bash
# Benchmark: the paper's grid rehearsed at full data size (`mgat rehearse experiments/paper-*.yaml`): a ResNet-18 of
# width 8 at 64×32 for three iterations per cell, on official-size synthetic stand-ins of Market-1501,
# DukeMTMC-reID and CUHK03-NP (detected), every query scored against the full gallery. What the pipeline itself
# costs at that size, in three timed phases of one fresh rehearsal folder:
#   1. data: stand-ins generated, locked and indexed (`--until index`);
#   2. the rest: every train and eval stage, the reports and paper.md;
#   3. again, with everything cached: verifying the datasets against the lock, planning, checking the reports.
# Then per dataset, from the stage manifests: index seconds, train images/s (the sampler, loader and the toy model
# on the CPU) and eval seconds per cell (features of query + gallery and scoring); and the whole run's peak RSS.
# Usage: benches/rehearse_bench.sh             the three paper specs (BENCH_JOBS stages at once, default 2)
#        benches/rehearse_bench.sh --smoke     CUHK03-NP only: one training, evaluated plain and re-ranked (CI)
. "$(dirname "$0")/lib.sh"
bench_build
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
timed() { /usr/bin/time -f '%e %M' -o "$work/time" "$@" && read -r s kb < "$work/time"; }
jobs=(-j "${BENCH_JOBS:-2}")
specs=("$repo"/experiments/paper-ablation.yaml "$repo"/experiments/paper-gamma.yaml "$repo"/experiments/paper-of-weight.yaml)
only=()
if [ "$smoke" = 1 ]; then
  specs=("$repo/experiments/paper-ablation.yaml")
  only=(--only 'head=none,of_weight=0,name=cuhk03-np-detected,*,seed=1')
fi
out=$work/rehearsal
cd "$repo"
timed "$mgat" -q rehearse "${specs[@]}" --out "$out" "${jobs[@]}" "${only[@]}" --until index > "$work/data.txt" \
  || bench_fail "the data phase of the rehearsal failed"
data_s=$(positive "data seconds" "$s"); data_kb=$(positive "data peak RSS" "$kb")
timed "$mgat" -q rehearse "${specs[@]}" --out "$out" "${jobs[@]}" "${only[@]}" > "$work/run.txt" \
  || bench_fail "the rehearsal failed: $(tail -5 "$work/run.txt")"
run_s=$(positive "run seconds" "$s"); run_kb=$(positive "run peak RSS" "$kb")
timed "$mgat" -q rehearse "${specs[@]}" --out "$out" "${jobs[@]}" "${only[@]}" > "$work/again.txt" \
  || bench_fail "the cached rehearsal failed"
again_s=$(positive "cached seconds" "$s")
grep -q 'stages: 0 ran' "$work/again.txt" || bench_fail "the second rehearsal ran stages: $(grep stages: "$work/again.txt")"
[ -s "$out/reports/paper.md" ] || bench_fail "no paper.md in the rehearsal's reports"
needs=$(grep '^the real run:' "$work/run.txt") || bench_fail "the rehearsal did not say what the real run needs"
# Per dataset and kind, from the manifests: stages, mean seconds, and train images/s (the manifest's summary).
python3 - "$out" > "$work/stages.txt" <<'PY' || bench_fail "cannot read the rehearsal's manifests"
import json, pathlib, sys, re
out = pathlib.Path(sys.argv[1])
names = {}
lock = (out / "datasets.lock").read_text()
for name, digest in re.findall(r"^  ([\w.-]+):\n(?:    .*\n)*?    digest: (sha256:[0-9a-f]+)", lock, re.M):
    names[digest] = name
rows = {}
for path in sorted(out.glob("cache/*/*/manifest.json")):
    m = json.loads(path.read_text())
    dataset = names.get(m["inputs"].get("lock_digest"), "?")
    key = (dataset, m["kind"])
    r = rows.setdefault(key, {"n": 0, "s": 0.0, "ips": []})
    r["n"] += 1
    r["s"] += m["duration_s"]
    if m["kind"] == "train":
        r["ips"].append(m["summary"]["train"]["images_per_s"])
if not rows:
    sys.exit("no manifests")
for (dataset, kind), r in sorted(rows.items()):
    extra = f", {sum(r['ips']) / len(r['ips']):.0f} images/s" if r["ips"] else ""
    print(f"{dataset} {kind}: {r['n']} stages, {r['s'] / r['n']:.2f} s each{extra}")
PY
[ -s "$work/stages.txt" ] || bench_fail "no stage figures"
echo "rehearsal of ${specs[*]##*/}${only:+ (${only[*]})}:"
echo "  data (stand-ins generated, locked, indexed): $data_s s, peak RSS $data_kb KiB"
echo "  stages, reports and paper.md: $run_s s, peak RSS $run_kb KiB"
echo "  again, all cached: $again_s s"
sed 's/^/  /' "$work/stages.txt"
echo "  $needs"
