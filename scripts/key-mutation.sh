#!/usr/bin/env bash
# Checks that stage keys move whenever a result can: in a throwaway copy of the checkout, one compute-changing
# edit of each class below, each followed by a release build and a check that exactly the right kinds' code
# fingerprints (`mgat fingerprint --json`, which every key of a kind contains) moved. The other side — comments,
# tests and orchestration move nothing — is scripts/key-cutoff.sh.
#
#   runner    a statement in a kind's runner (crates/train/src/stage.rs)              → train
#   literal   a constant in the model crate (crates/model/src/resnet.rs)              → train eval
#   include   the bytes of a file read with include_bytes! by the generator           → synth
#   buildrs   the input of code a build.rs generates for the eval crate                → eval
#   feature   bytemuck's zeroable_atomics switched on in the root manifest (unification) → synth index train eval
#             (bytemuck is in every kind's closure through image)
#   patch     a [patch]ed candle-nn (a local copy) edited                              → train
#   form      tracing declared through [workspace.dependencies] in table form: nothing moves; then a feature set
#             there                                                                    → train
#
# Usage: scripts/key-mutation.sh [--all | --rotate N | CLASS…]. --rotate N runs 2 classes chosen by N (CI passes
# the commit), so successive commits cover every class; the default is --all. The copy's target folder starts as
# hard links to this checkout's target/release (registry crates are reused; the project's crates rebuild, since
# their paths differ). Needs cargo, git and jq. About 1-3 minutes per build on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
classes_all=(runner literal include buildrs feature patch form)
case "${1:---all}" in
  --all) classes=("${classes_all[@]}") ;;
  --rotate)
    n=$(( ${2:?--rotate needs a number} % ${#classes_all[@]} ))
    classes=("${classes_all[$n]}" "${classes_all[$(( (n + 1) % ${#classes_all[@]} ))]}") ;;
  *) classes=("$@") ;;
esac
for c in "${classes[@]}"; do
  [[ " ${classes_all[*]} " == *" $c "* ]] || { echo "key-mutation: unknown class $c (one of: ${classes_all[*]})" >&2; exit 2; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
copy=$work/repo
mkdir -p "$copy/target"
(cd "$repo" && git ls-files -z | tar --null -T - -cf -) | tar -xf - -C "$copy"
[ -d "$repo/target/release" ] && cp -al "$repo/target/release" "$copy/target/release"
export CARGO_TARGET_DIR=$copy/target
cd "$copy"
# Pristine copies of every file an edit touches, to undo it.
mkdir -p "$work/pristine"
for f in Cargo.toml Cargo.lock crates/*/Cargo.toml crates/*/src/lib.rs crates/train/src/stage.rs crates/model/src/resnet.rs; do
  mkdir -p "$work/pristine/$(dirname "$f")"; cp "$f" "$work/pristine/$f"
done
undo() {
  (cd "$work/pristine" && find . -type f) | while read -r f; do cp "$work/pristine/$f" "$copy/$f"; done
  rm -rf crates/synth/src/probe.bin crates/eval/build.rs crates/eval/probe.txt "$work/candle-nn"
}

fail() { echo "key-mutation: FAIL: $*" >&2; exit 1; }
# Builds the copy; prints each kind's fingerprint as `kind=hex …`.
fingerprints() {
  cargo build --release -q --offline 2>"$work/build.log" || { cat "$work/build.log" >&2; fail "the build failed"; }
  ./target/release/mgat fingerprint --json | jq -r 'to_entries | map("\(.key)=\(.value.fingerprint)") | join(" ")'
}
# The kinds whose fingerprint differs between two `fingerprints` outputs, as `kind kind`.
moved() {
  local out=()
  for kind in synth index train eval; do
    [ "$(grep -o "$kind=[0-9a-f]*" <<< "$1")" = "$(grep -o "$kind=[0-9a-f]*" <<< "$2")" ] || out+=("$kind")
  done
  echo "${out[*]:-nothing}"
}
expect() { [ "$2" = "$3" ] || fail "$1: expected [$3] to move, got [$2]"; echo "ok: $1: $2"; }

echo "key-mutation: building the copy"
pristine=$(fingerprints)

for class in "${classes[@]}"; do
  case $class in
    runner)
      printf '\n/// An edit to the runner.\npub fn key_mutation_probe() -> usize {\n    1\n}\n' >> crates/train/src/stage.rs
      expect "a statement in the train runner" "$(moved "$pristine" "$(fingerprints)")" "train" ;;
    literal)
      printf '\npub const KEY_MUTATION_PROBE: f32 = 0.5;\n' >> crates/model/src/resnet.rs
      expect "a constant in the model crate" "$(moved "$pristine" "$(fingerprints)")" "train eval" ;;
    include)
      printf 'one\n' > crates/synth/src/probe.bin
      printf '\npub const KEY_MUTATION_PROBE: &[u8] = include_bytes!("probe.bin");\n' >> crates/synth/src/lib.rs
      before=$(fingerprints)
      printf 'two\n' > crates/synth/src/probe.bin
      expect "the bytes of an include_bytes! file" "$(moved "$before" "$(fingerprints)")" "synth" ;;
    buildrs)
      printf 'one' > crates/eval/probe.txt
      cat > crates/eval/build.rs <<'EOF'
fn main() {
    let value = std::fs::read_to_string("probe.txt").unwrap();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("probe.rs");
    std::fs::write(out, format!("pub const KEY_MUTATION_PROBE: &str = {value:?};\n")).unwrap();
    println!("cargo:rerun-if-changed=probe.txt");
}
EOF
      printf '\ninclude!(concat!(env!("OUT_DIR"), "/probe.rs"));\n' >> crates/eval/src/lib.rs
      before=$(fingerprints)
      printf 'two' > crates/eval/probe.txt
      expect "code a build.rs generates" "$(moved "$before" "$(fingerprints)")" "eval" ;;
    feature)
      # bytemuck is in every kind's graph (image's and gemm's); gemm's own x86-v4 is on already in the crates.
      sed -i 's/^\[dependencies\]$/[dependencies]\nbytemuck = { version = "1", features = ["zeroable_atomics"] }/' Cargo.toml
      expect "a dependency feature switched on in the root manifest" "$(moved "$pristine" "$(fingerprints)")" \
        "synth index train eval" ;;
    patch)
      src=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -maxdepth 2 -type d -name 'candle-nn-0.11.1' | head -1)
      [ -n "$src" ] || fail "no candle-nn 0.11.1 source in the registry cache"
      cp -r "$src" "$work/candle-nn"
      printf '\n[patch.crates-io]\ncandle-nn = { path = "%s" }\n' "$work/candle-nn" >> Cargo.toml
      before=$(fingerprints)
      printf '\npub fn key_mutation_probe() -> usize {\n    1\n}\n' >> "$work/candle-nn/src/lib.rs"
      expect "a patched dependency edited" "$(moved "$before" "$(fingerprints)")" "train" ;;
    form)
      sed -i 's/^tracing = "0.1"$//' crates/train/Cargo.toml
      printf '\n[dependencies.tracing]\nworkspace = true\n' >> crates/train/Cargo.toml
      printf '\n[workspace.dependencies]\ntracing = "0.1" # key-mutation\n' >> Cargo.toml
      expect "tracing declared through the workspace in table form" "$(moved "$pristine" "$(fingerprints)")" "nothing"
      sed -i 's/^tracing = "0.1" # key-mutation$/tracing = { version = "0.1", features = ["release_max_level_warn"] }/' \
        Cargo.toml
      expect "a feature set through that form" "$(moved "$pristine" "$(fingerprints)")" "train" ;;
  esac
  undo
done
echo "key-mutation: all checks passed (${classes[*]})"
