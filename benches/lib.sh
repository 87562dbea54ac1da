# Shared by the benches: their setup, reading figures by name, checking them, and the smoke mode.
# Source it first: `. "$(dirname "$0")/lib.sh"`. It sets strict mode, `repo` (the repository), `mgat` (the release
# binary, which `bench_build` makes current) and `smoke`, taking a leading `--smoke` off the caller's arguments.
# Every reader fails loudly (a message naming the file and the figure, and exit 1) instead of printing a wrong
# number: a bench whose parse breaks must not go on as if it measured.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mgat=$repo/target/release/mgat

# Builds the release binary from the checkout (cargo only relinks what changed), so a bench never measures an old
# binary.
bench_build() { (cd "$repo" && cargo build --release -q); }

# The value of column NAME in the last row of CSV file FILE, found by its header.
csv_last() {
  local file=$1 name=$2
  [ -s "$file" ] || bench_fail "$file is missing or empty (looking for column $name)"
  awk -F, -v name="$name" -v file="$file" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == name) col = i
              if (!col) { printf "no column %s in %s (header: %s)\n", name, file, $0 > "/dev/stderr"; exit 2 } }
    NR > 1 { value = $col; rows++ }
    END { if (col && !rows) { printf "%s has no rows\n", file > "/dev/stderr"; exit 2 }
          if (col) print value }' "$file" || bench_fail "cannot read column $name of $file"
}

# Checks that VALUE (the figure NAME) is a positive number; prints it.
positive() {
  local name=$1 value=$2
  awk -v v="$value" 'BEGIN { exit !(v ~ /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/ && v + 0 > 0) }' ||
    bench_fail "$name is '$value', not a positive number"
  printf '%s' "$value"
}

bench_fail() { echo "bench error: $*" >&2; exit 1; }

# Prints mAP and rank-1 from two `mgat metrics --json` outputs side by side: mgat's (MGAT_JSON) and the reference's
# distances scored by mgat (REF_JSON), the latter called LABEL.
compare_scores() {
  local ours=$1 theirs=$2 label=$3 a b
  a=$(jq -e '.mAP' "$ours") || bench_fail "no mAP in $ours"
  b=$(jq -e '.mAP' "$theirs") || bench_fail "no mAP in $theirs"
  echo "mAP: mgat $a, $label $b"
  a=$(jq -e '.cmc."1"' "$ours") || bench_fail "no rank-1 in $ours"
  b=$(jq -e '.cmc."1"' "$theirs") || bench_fail "no rank-1 in $theirs"
  echo "rank-1: mgat $a, $label $b"
}

# Writes the smoke size's query and gallery case into folder DIR: 300 × 1200 64-d float32 features drawn around
# 100 identities, with their ids and cameras, as .npy (python3 alone, no numpy).
smoke_features() {
  python3 - "$1" <<'PY' || bench_fail "cannot write the smoke case"
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
}

# BENCH_SMOKE=1 (or --smoke as the first argument, shifted off here): a tiny size, no anchor installed, to check in
# CI that the bench still runs and reads what it prints.
smoke=${BENCH_SMOKE:-0}
if [ "${1:-}" = --smoke ]; then smoke=1 && shift; fi
