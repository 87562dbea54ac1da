#!/usr/bin/env bash
# Checks that stage keys move only when a result can. On a tiny cached grid (synth → index → train → eval, two
# cells), each edit below is followed by a release rebuild and a run, and the stages that ran are counted:
#   1. a comment, a doc comment and a #[cfg(test)] module in a file of train's fingerprint, and a statement in
#      orchestration code (src/): `mgat plan --json` shows every stage cached;
#   2. a new pub fn in a file of eval's fingerprint and not train's: only the eval stages run;
#   3. the same in a file of train's and not eval's: train re-runs, its weights come out byte-identical, eval stays
#      cached (early cutoff);
#   4. a new pub fn in the synthetic generator: synth re-runs, produces identical files, nothing downstream runs.
# The files to edit are found through `mgat fingerprint --json`. Edits are made in place and undone on exit (the
# script refuses to start if those files have uncommitted changes), and the binary is rebuilt from the restored
# sources at the end. Needs cargo and jq. About 5 minutes on 2 cores after a release build.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mgat=$repo/target/release/mgat
work=$(mktemp -d)
edited=()

restore() {
  cd "$repo"
  for f in "${edited[@]}"; do cp "$work/backup/$f" "$repo/$f"; done
  if [ ${#edited[@]} -gt 0 ]; then cargo build --release -q; fi
  rm -rf "$work"
}
trap restore EXIT

fail() { echo "key-cutoff: FAIL: $*" >&2; exit 1; }
build() { cargo build --release -q; }

# Appends $2 to file $1, keeping a backup to restore.
append() {
  local f=$1
  git diff --quiet -- "$f" || fail "$f has uncommitted changes; commit or stash them first"
  if [ ! -e "$work/backup/$f" ]; then
    mkdir -p "$work/backup/$(dirname "$f")"
    cp "$f" "$work/backup/$f"
    edited+=("$f")
  fi
  printf '%s\n' "$2" >> "$f"
}

undo() { for f in "${edited[@]}"; do cp "$work/backup/$f" "$repo/$f"; done; }

build
files_of() { "$mgat" fingerprint --json | jq -r --arg k "$1" '.[$k].files[]'; }
only_in() { comm -23 <(files_of "$1" | sort) <(files_of "$2" | sort) | grep -v '/lib.rs$' | head -1; }
train_file=$(files_of train | grep '^crates/train/' | grep -v '/lib.rs$' | head -1)
eval_only=$(only_in eval train)
train_only=$(only_in train eval)
synth_only=$(only_in synth index)
[ -n "$train_file" ] && [ -n "$eval_only" ] && [ -n "$train_only" ] && [ -n "$synth_only" ] ||
  fail "mgat fingerprint --json lists no file to edit for one of the checks"
echo "editing: $train_file (comments), $eval_only (eval only), $train_only (train only), $synth_only (synth only)"

project=$work/project
mkdir -p "$project/experiments"
cd "$project"
"$mgat" -q data lock toy --format synth --seed 21 --ids 24 --cameras 3 --images-per-camera 4 --height 64 \
  --width 32 --junk 4 --distractors 6 > /dev/null
cat > experiments/tiny.yaml <<'EOF'
name: tiny
base:
  dataset: {name: toy}
  model: {backbone: resnet18, width: 8, bnneck: true, head: none}
  train: {height: 64, width: 32, batch_size: 16, instances: 4, epochs: 1, warmup_epochs: 0, lr: 0.003, schedule: constant, lr_steps: [], pad: 4, random_erasing: 0.0, workers: 2}
grid:
  model.head: [none, mgat]
seeds: [1]
EOF

# Runs the grid; prints how many stages of each kind ran, as `synth=N index=N train=N eval=N`.
run_counts() {
  local log
  log=$("$mgat" run experiments/tiny.yaml 2>&1) || { echo "$log" >&2; fail "mgat run failed"; }
  for kind in synth index train eval; do
    printf '%s=%s ' "$kind" "$(grep -c "ran $kind " <<< "$log" || true)"
  done
}
uncached() { "$mgat" plan experiments/tiny.yaml --json | jq '[.cells[].stages[] | select(.cached | not)] | length'; }
weights() { sha256sum "$project"/.mgat/cache/train/*/model.safetensors | awk '{print $1}' | sort | tr '\n' ' '; }
expect() { [ "$1" = "$2" ] || fail "$3: expected [$2], got [$1]"; echo "ok: $3"; }

expect "$(run_counts)" "synth=1 index=1 train=2 eval=2 " "a fresh grid computes every stage"
before=$(weights)

cd "$repo"
append "$train_file" $'// a comment\n/// a doc comment\n#[cfg(test)]\nmod key_cutoff_probe {\n    #[test]\n    fn probe() {}\n}'
append src/cli/run_cmd.rs $'#[allow(dead_code)]\nfn key_cutoff_probe() -> usize {\n    let statement = 1;\n    statement\n}'
build
cd "$project"
expect "$(uncached)" 0 "comments, docs, a test module in train's code and orchestration code: every stage cached"
cd "$repo"; undo

append "$eval_only" $'pub fn key_cutoff_probe() -> usize {\n    1\n}'
build
cd "$project"
expect "$(run_counts)" "synth=0 index=0 train=0 eval=2 " "a new pub fn in eval's code: only eval runs"
cd "$repo"; undo

append "$train_only" $'pub fn key_cutoff_probe() -> usize {\n    1\n}'
build
cd "$project"
expect "$(run_counts)" "synth=0 index=0 train=2 eval=0 " "a new pub fn in train's code: train runs, eval stays cached"
expect "$(weights | wc -w) $(weights | tr ' ' '\n' | sort -u | grep -c .)" "4 2" \
  "the retrained weights are byte-identical to the first run's (4 entries, 2 distinct files)"
[ "$(weights | tr ' ' '\n' | sort -u | tr '\n' ' ')" = "$before" ] || fail "the retrained weights differ from the first run's"
cd "$repo"; undo

append "$synth_only" $'pub fn key_cutoff_probe() -> usize {\n    1\n}'
build
cd "$project"
expect "$(run_counts)" "synth=1 index=0 train=0 eval=0 " "a new pub fn in the generator: synth runs, nothing downstream"
echo "key-cutoff: all checks passed"
