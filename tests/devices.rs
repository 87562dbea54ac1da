//! End-to-end test of the `--devices` pool, with CPU slots standing in for GPUs: no two stages ever hold one slot at
//! once, the whole pool is used, the manifest records the device and slot, and bad pools are refused.

mod common;

use common::{Project, TOY_BASE, TOY_DATA};

#[derive(Debug)]
struct Held {
    kind: String,
    slot: Option<u64>,
    device: String,
    started: String,
    finished: String,
}

fn held(p: &Project) -> Vec<Held> {
    let mut out = Vec::new();
    for kind in ["synth", "index", "train", "eval"] {
        for key in p.entries(kind) {
            let text =
                std::fs::read_to_string(p.cache_dir().join(kind).join(key).join("manifest.json"))
                    .unwrap();
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            out.push(Held {
                kind: kind.into(),
                slot: m["device_slot"].as_u64(),
                device: m["device"].as_str().unwrap().into(),
                // RFC 3339 with milliseconds in UTC: ordered as strings.
                started: m["started"].as_str().unwrap().into(),
                finished: m["finished"].as_str().unwrap().into(),
            });
        }
    }
    out
}

fn overlap(a: &Held, b: &Held) -> bool {
    a.started < b.finished && b.started < a.finished
}

#[test]
fn train_and_eval_stages_hold_one_slot_each_and_use_the_whole_pool() {
    let p = Project::new("devices");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{TOY_BASE}grid:\n  model.head: [none, gat, mgat]\nseeds: [1, 2]\n"),
    );
    p.mgat(&[
        "run",
        "experiments/t.yaml",
        "--devices",
        "cpu,cpu",
        "-j",
        "1",
        "-q",
    ])
    .success();
    let stages = held(&p);
    let on_pool: Vec<&Held> = stages.iter().filter(|h| h.slot.is_some()).collect();
    assert_eq!(
        on_pool.len(),
        12,
        "6 train and 6 eval stages on the pool: {stages:?}"
    );
    assert!(
        stages.iter().all(
            |h| h.slot.is_some() == (h.kind == "train" || h.kind == "eval") && h.device == "cpu"
        ),
        "{stages:?}"
    );
    for (i, a) in on_pool.iter().enumerate() {
        for b in &on_pool[i + 1..] {
            assert!(
                !(a.slot == b.slot && overlap(a, b)),
                "two stages held one slot at once: {a:?} {b:?}"
            );
        }
    }
    // Both slots were used, and at some moment both were held (the stages held at each start): the pool was fully
    // used, and never more than it.
    assert!(on_pool.iter().any(|h| h.slot == Some(0)) && on_pool.iter().any(|h| h.slot == Some(1)));
    let most_at_once = on_pool
        .iter()
        .map(|a| {
            on_pool
                .iter()
                .filter(|b| b.started <= a.started && a.started < b.finished)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most_at_once, 2, "{on_pool:?}");
}

#[test]
fn bad_pools_are_refused_before_anything_runs() {
    let p = Project::new("devices-bad");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{TOY_BASE}seeds: [1]\n"),
    );
    for (devices, needle) in [
        ("gpu0", "`gpu0` is not a device"),
        ("cpu,cuda:x", "`cuda:x`"),
    ] {
        let run = p.mgat(&["run", "experiments/t.yaml", "--devices", devices]);
        assert_eq!(run.code(), 2, "{}", run.stderr());
        assert!(run.stderr().contains(needle), "{}", run.stderr());
    }
    if !cfg!(feature = "cuda") {
        let run = p.mgat(&["run", "experiments/t.yaml", "--devices", "cuda:0"]);
        assert_eq!(run.code(), 2);
        assert!(run.stderr().contains("without CUDA"), "{}", run.stderr());
    }
    assert!(p.entries("synth").is_empty());
    // A cell that names a GPU the pool lacks fails as bad input (exit 2), naming both.
    p.write(
        "experiments/g.yaml",
        &format!(
            "name: g\n{}seeds: [1]\n",
            TOY_BASE.replace("workers: 2}", "workers: 2, device: cuda:3}")
        ),
    );
    let run = p.mgat(&["run", "experiments/g.yaml", "--devices", "cpu"]);
    assert_eq!(run.code(), 2, "{}{}", run.stdout(), run.stderr());
    let text = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        text.contains("train.device cuda:3 is not in --devices cpu"),
        "{text}"
    );
}
