//! Generated malformed inputs (proptest): specs, lock files and .npy arrays made by mutating valid ones (cutting,
//! inserting tricky text or bytes, duplicating lines, changing header numbers). Every one must be accepted or
//! refused with an error; none may panic. The lock and spec cases go through the same parsers `mgat` uses; a sample
//! also goes through the binary, which must exit 0 or 2, never die of a signal.

mod common;

use mgat::data::LockFile;
use mgat::spec::Spec;
use mgat_eval::array::{load_ids, load_matrix};
use proptest::prelude::*;
use std::path::Path;

const SPEC: &str = "\
name: t
version: 2
base:
  dataset: {name: toy}
  model: {backbone: resnet18, width: 8, bnneck: true, head: mgat, gamma: 1.0}
  train: {height: 64, width: 32, batch_size: 16, instances: 4, epochs: 2, warmup_epochs: 0, lr_steps: [1]}
  eval: {metric: cosine, max_rank: 10}
grid:
  model.head: [none, gat, mgat]
  model.gamma: [0.5, 2]
zip: []
exclude: [{model.head: none, model.gamma: 2}]
include: [{model.head: mgat, model.squared_distance: true}]
seeds: [1, 2]
report: {rows: [model.head, model.squared_distance], columns: [model.gamma], metrics: [rank1, mAP]}
";

const LOCK: &str = "\
datasets:
  toy:
    format: synth
    synth: {seed: 1, ids: 8, cameras: 2, images_per_camera: 2, height: 64, width: 32, junk: 0, distractors: 0, quality: 90}
    files: 12
    bytes: 3456
    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
  real:
    format: market1501
    root: ${MARKET_ROOT_FOR_NOTHING}/x
    files: 1
    bytes: 2
    digest: sha256:1111111111111111111111111111111111111111111111111111111111111111
";

/// Text people and tools put where it does not belong.
const TRICKY: &[&str] = &[
    "",
    "-1",
    "0",
    "1e400",
    "NaN",
    ".inf",
    "~",
    "null",
    "[",
    "]",
    "{",
    "}",
    ":",
    "- ",
    "&a ",
    "*a",
    "!!binary ",
    "\u{feff}",
    "\t",
    "\"",
    "'",
    "#",
    "\n  ",
    "99999999999999999999999",
    "[1, [2, [3]]]",
    "{a: {b: {c: 1}}}",
    "model.head",
    "seed",
    "grid:",
    "base:",
    "\u{0}",
    "é",
    "🦀",
];

/// A mutation of `text`: cut a range, insert tricky text, duplicate a line, or swap two lines.
fn mutate(text: &str, kind: u8, a: usize, b: usize, trick: usize) -> String {
    let chars: Vec<char> = text.chars().collect();
    let (a, b) = (a % (chars.len() + 1), b % (chars.len() + 1));
    let (lo, hi) = (a.min(b), a.max(b));
    let lines: Vec<&str> = text.lines().collect();
    match kind % 4 {
        0 => chars[..lo].iter().chain(&chars[hi..]).collect(),
        1 => {
            chars[..lo].iter().collect::<String>()
                + TRICKY[trick % TRICKY.len()]
                + &chars[lo..].iter().collect::<String>()
        }
        2 => {
            let mut l = lines.clone();
            let i = a % l.len();
            l.insert(i, lines[i]);
            l.join("\n")
        }
        _ => {
            let mut l = lines.clone();
            l.swap(a % lines.len(), b % lines.len());
            l.join("\n")
        }
    }
}

fn npy(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(payload);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_mutated_spec_is_parsed_or_refused(kind in any::<u8>(), a in any::<usize>(), b in any::<usize>(), t in any::<usize>()) {
        let text = mutate(SPEC, kind, a, b, t);
        let _ = Spec::parse(Path::new("t.yaml"), &text, &[]);
    }

    #[test]
    fn a_mutated_lock_is_loaded_or_refused(kind in any::<u8>(), a in any::<usize>(), b in any::<usize>(), t in any::<usize>()) {
        let dir = std::env::temp_dir().join(format!("mgat-malformed-lock-{}-{a}-{b}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("datasets.lock");
        std::fs::write(&path, mutate(LOCK, kind, a, b, t)).unwrap();
        if let Ok(lock) = LockFile::load(&path, &dir.join("lists")) {
            for name in lock.names().map(str::to_string).collect::<Vec<_>>() {
                let _ = lock.entry(&name).map(|_| lock.root(&name));
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_mutated_npy_is_read_or_refused(
        descr in prop::sample::select(vec!["<f4", ">f8", "<i8", "|u1", "<f2", "<c8", "<f", "f4", "<f99"]),
        rows in prop::sample::select(vec!["3", "0", "-1", "4000000000000", "18446744073709551615", "x", ""]),
        cols in prop::sample::select(vec!["2", "0", "1", "99999999999", ""]),
        payload in prop::collection::vec(any::<u8>(), 0..64),
        cut in any::<usize>(),
    ) {
        let dir = std::env::temp_dir().join(format!("mgat-malformed-npy-{}-{cut}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut bytes = npy(descr, &format!("({rows}, {cols})"), &payload);
        bytes.truncate(bytes.len() - cut % (bytes.len() / 4 + 1));
        let path = dir.join("a.npy");
        std::fs::write(&path, &bytes).unwrap();
        let _ = load_matrix(&path);
        let _ = load_ids(&path);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A sample of mutated specs through the binary: exit 0 (planned) or 2 (refused), never a crash.
#[test]
fn the_binary_plans_or_refuses_mutated_specs_without_crashing() {
    let p = common::Project::new("malformed");
    p.write("datasets.lock", LOCK);
    p.write("experiments/s.yaml", SPEC);
    p.mgat(&["plan", "experiments/s.yaml"]).success();
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..40usize {
        let text = mutate(
            SPEC,
            i as u8,
            i.wrapping_mul(7919),
            i.wrapping_mul(104729),
            i,
        );
        p.write("experiments/s.yaml", &text);
        let out = p.mgat(&["plan", "experiments/s.yaml"]);
        assert!(
            matches!(out.code(), 0 | 2),
            "exit {} on:\n{text}\n{}",
            out.code(),
            out.stderr()
        );
        *codes.entry(out.code()).or_insert(0) += 1;
    }
    eprintln!("mutated specs through `mgat plan`: exit codes {codes:?}");
}
