#!/usr/bin/env bash
# Benchmark: a no-op rerun of a fully cached 100-cell grid (10 γ × 5 OF weights × 2 seeds: 1 synth, 1 index, 100
# train and 100 eval stages, every one really computed first on a tiny model; reports included), beside DVC on a
# pipeline of the same shape measured in the same run: 202 trivial stages with the same dependencies
# (data → index → 100 train → 100 eval), `dvc repro` and `dvc status` once everything is up to date.
# Prints the median of 10 runs of each and the ratios.
#
# Usage: benches/cached_grid.sh [PYTHON]
#   PYTHON: an interpreter with dvc installed; without it, dvc goes into a throwaway venv in target/bench-venv-dvc.
#        benches/cached_grid.sh --smoke   a 4-cell grid, no dvc (what CI runs)
. "$(dirname "$0")/lib.sh"
bench_build
python=${1:+$(realpath -s "$1")}
if [ "$smoke" = 1 ]; then
  :
elif [ -z "$python" ]; then
  venv=$repo/target/bench-venv-dvc
  [ -x "$venv/bin/dvc" ] || { python3 -m venv "$venv" && "$venv/bin/pip" install -q dvc; }
  python=$venv/bin/python
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Median of 10 timed runs of a command, in milliseconds with one decimal (bash's clock: no process per reading).
median_ms() {
  local times=() start end
  for _ in $(seq 10); do
    start=$EPOCHREALTIME
    "$@" >/dev/null 2>&1
    end=$EPOCHREALTIME
    times+=($(( (${end/./} - ${start/./}) )))
  done
  printf '%s\n' "${times[@]}" | sort -n | sed -n 5p | awk '{printf "%.1f", $1 / 1000}'
}

mkdir -p "$work/mgat" && cd "$work/mgat"
"$mgat" -q data lock toy --format synth --seed 1 --ids 16 --cameras 2 --images-per-camera 2 --height 32 \
  --width 16 --junk 2 --distractors 2 >/dev/null
mkdir experiments
cat > experiments/grid100.yaml <<'SPEC'
name: grid100
base:
  dataset: {name: toy}
  model: {backbone: resnet18, width: 4, bnneck: true}
  train: {height: 32, width: 16, batch_size: 8, instances: 2, epochs: 1, iters_per_epoch: 1, warmup_epochs: 0,
          schedule: constant, lr_steps: [], pad: 0, workers: 1}
grid:
  model.gamma: [0.1, 0.2, 0.5, 1, 2, 3, 4, 5, 8, 10]
  model.of_weight: [0, 0.5, 1, 2, 4]
seeds: [1, 2]
SPEC
if [ "$smoke" = 1 ]; then
  sed -i -e 's/model.gamma: .*/model.gamma: [0.5, 1]/' -e 's/model.of_weight: .*/model.of_weight: [1]/' experiments/grid100.yaml
fi
cells=$("$mgat" plan experiments/grid100.yaml | tail -1 | awk '{print $1}')
echo "computing the grid once ($cells cells)..."
"$mgat" -q run -j 2 experiments/grid100.yaml >/dev/null
summary=$("$mgat" run experiments/grid100.yaml | grep '^stages:') || bench_fail "mgat run printed no stages: line"
echo "$summary"
ran=$(awk '{print $2}' <<< "$summary")
[ "$ran" = 0 ] || bench_fail "the rerun computed $ran stages; a cached grid should compute none ($summary)"
# Stat caches record only files older than 2 s (a file written within the same clock tick could change unseen), so
# the steady state of a rerun starts 2 s after the last output was written.
sleep 2.1 && "$mgat" -q run experiments/grid100.yaml >/dev/null
mgat_run=$(positive "mgat run ms" "$(median_ms "$mgat" -q run experiments/grid100.yaml)")
mgat_plan=$(positive "mgat plan ms" "$(median_ms "$mgat" plan experiments/grid100.yaml)")
if [ "$smoke" = 1 ]; then
  echo "no-op rerun of a cached $cells-cell grid (smoke: no dvc), median of 10: mgat run $mgat_run ms, mgat plan $mgat_plan ms"
  exit 0
fi
dvc=$(cd "$(dirname "$python")" && pwd)/dvc

mkdir -p "$work/dvc" && cd "$work/dvc"
"$dvc" init --no-scm -q
{
  echo "stages:"
  echo "  synth: {cmd: echo data > data.txt, outs: [data.txt]}"
  echo "  index: {cmd: cat data.txt > index.txt, deps: [data.txt], outs: [index.txt]}"
  for i in $(seq 100); do
    echo "  train$i: {cmd: echo $i | cat index.txt - > train$i.txt, deps: [index.txt], outs: [train$i.txt]}"
    echo "  eval$i: {cmd: cat train$i.txt > eval$i.txt, deps: [train$i.txt], outs: [eval$i.txt]}"
  done
} > dvc.yaml
"$dvc" repro -q >/dev/null
dvc_repro=$(positive "dvc repro ms" "$(median_ms "$dvc" repro)")
dvc_status=$(positive "dvc status ms" "$(median_ms "$dvc" status)")

ratio() { awk "BEGIN{printf \"%.0f\", $1 / $2}"; }
echo "no-op rerun of a cached $cells-cell grid, median of 10:"
echo "  mgat run (reports included)  ${mgat_run} ms"
echo "  mgat plan                    ${mgat_plan} ms"
echo "  dvc repro                    ${dvc_repro} ms   ($(ratio "$dvc_repro" "$mgat_run")× mgat run)"
echo "  dvc status                   ${dvc_status} ms   ($(ratio "$dvc_status" "$mgat_run")× mgat run)"
