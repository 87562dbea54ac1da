//! End-to-end tests of the train and eval stages: learning on synthetic data, kill-and-resume to identical
//! weights, and the eval stage's outputs.

mod common;

use common::{Project, TOY_DATA};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn spec(epochs: u32) -> String {
    format!(
        "name: t\nbase:\n  dataset: {{name: toy}}\n  model: {{backbone: resnet18, width: 8, bnneck: true, head: none}}\n  train: {{height: 64, width: 32, batch_size: 16, instances: 4, epochs: {epochs}, warmup_epochs: 1, lr: 0.003, schedule: cosine, lr_steps: [], pad: 4, random_erasing: 0.0, workers: 2}}\ngrid:\n  model.head: [none, mgat]\nseeds: [1]\n"
    )
}

fn entry_file(p: &Project, cache: &str, kind: &str, file: &str) -> PathBuf {
    let dir = p.path(cache).join(kind);
    let key = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| !n.starts_with('.'))
        .unwrap();
    dir.join(key).join(file)
}

#[test]
fn training_lowers_the_id_loss_and_lifts_accuracy_well_above_chance() {
    let p = Project::new("learn");
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &spec(6));
    p.mgat(&["run", "experiments/t.yaml", "--only", "head=none,*", "-q"])
        .success();
    let log =
        std::fs::read_to_string(entry_file(&p, ".mgat/cache", "train", "train_log.csv")).unwrap();
    let header: Vec<&str> = log.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (id_loss, accuracy, share) = (
        column("id_loss"),
        column("accuracy"),
        column("same_identity_attention"),
    );
    let rows: Vec<Vec<&str>> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), 6, "{log}");
    let value = |row: &[&str], i: usize| -> f64 { row[i].parse().unwrap() };
    let (first, last) = (&rows[0], &rows[5]);
    assert!(
        value(last, id_loss) < value(first, id_loss) - 0.3,
        "id loss {} → {}\n{log}",
        value(first, id_loss),
        value(last, id_loss)
    );
    let chance = 1.0 / 12.0; // 12 training identities
    assert!(
        value(last, accuracy) > 3.0 * chance,
        "train accuracy {} vs chance {chance:.3}\n{log}",
        value(last, accuracy)
    );
    // The baseline has no attention to measure, and its X′ is its G: the head keeps every direction.
    assert!(rows.iter().all(|r| r[share].is_empty()), "{log}");
    let cosine = column("graph_cosine");
    assert!(rows.iter().all(|r| r[cosine] == "1.000000"), "{log}");

    let metrics: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(entry_file(&p, ".mgat/cache", "eval", "metrics.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        metrics["num_query"].as_u64().unwrap() as usize,
        metrics["num_valid_query"].as_u64().unwrap() as usize
    );
    let rank1 = metrics["cmc"]["1"].as_f64().unwrap();
    let cmc = std::fs::read_to_string(entry_file(&p, ".mgat/cache", "eval", "cmc.csv")).unwrap();
    assert!(cmc.starts_with("rank,cmc\n1,"), "{cmc}");
    // Chance: a random ranking puts a true match first with probability matches / valid gallery, per query.
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(entry_file(&p, ".mgat/cache", "index", "index.json")).unwrap(),
    )
    .unwrap();
    let (query, gallery) = (
        index["query"].as_array().unwrap(),
        index["gallery"].as_array().unwrap(),
    );
    let odds: Vec<f64> = query
        .iter()
        .filter_map(|q| {
            let valid: Vec<_> = gallery
                .iter()
                .filter(|g| !(g["pid"] == q["pid"] && g["camid"] == q["camid"]))
                .collect();
            let matches = valid.iter().filter(|g| g["pid"] == q["pid"]).count();
            (matches > 0).then(|| matches as f64 / valid.len() as f64)
        })
        .collect();
    let chance = odds.iter().sum::<f64>() / odds.len() as f64;
    assert!(
        rank1 > 3.0 * chance,
        "rank-1 {rank1} is not well above chance {chance:.3}"
    );
}

#[test]
fn a_killed_training_resumes_to_the_same_weights_as_an_uninterrupted_run() {
    let p = Project::new("resume");
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &spec(5));
    let args = ["run", "experiments/t.yaml", "--only", "head=mgat,*", "-q"];
    let mut child = p.command(&args).spawn().unwrap();
    let partial = p.cache_dir().join("train/.partial");
    let deadline = Instant::now() + Duration::from_secs(120);
    let checkpointed = loop {
        let found = std::fs::read_dir(&partial)
            .ok()
            .and_then(|mut d| d.next())
            .is_some_and(|e| e.unwrap().path().join("checkpoint.json").exists());
        if found || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300)); // into the next epoch
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(checkpointed, "no epoch checkpoint appeared");
    assert!(
        p.entries("train").is_empty(),
        "the killed training must not look complete"
    );

    let resumed = p.mgat(&args[..args.len() - 1]); // without -q, to see the resume message
    resumed.success();
    assert!(
        resumed.stderr().contains("resuming training after epoch"),
        "{}",
        resumed.stderr()
    );
    let fresh = p.mgat(&[
        "run",
        "experiments/t.yaml",
        "--only",
        "head=mgat,*",
        "-q",
        "--cache",
        "fresh",
    ]);
    fresh.success();
    let a = std::fs::read(entry_file(&p, ".mgat/cache", "train", "model.safetensors")).unwrap();
    let b = std::fs::read(entry_file(&p, "fresh", "train", "model.safetensors")).unwrap();
    assert!(a == b, "resumed and uninterrupted weights differ");
    let files: Vec<String> = std::fs::read_dir(entry_file(&p, ".mgat/cache", "train", ""))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .all(|f| !f.starts_with("ckpt-") && !f.starts_with("checkpoint")),
        "checkpoints are not outputs: {files:?}"
    );
    p.mgat(&["cache", "verify"]).success();
}

#[test]
fn a_missing_or_mismatched_pretrained_checkpoint_is_bad_input() {
    let p = Project::new("pretrained");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &spec(2).replace("head: none}", "head: none, pretrained: nope.safetensors}"),
    );
    // Missing: refused while planning, before any stage runs.
    let run = p.mgat(&["run", "experiments/t.yaml", "--only", "head=none,*"]);
    assert_eq!(run.code(), 2, "{}", run.stdout());
    assert!(
        run.stderr().contains("model.pretrained `nope.safetensors`"),
        "{}",
        run.stderr()
    );
    assert!(p.entries("synth").is_empty());
    // Present but not a checkpoint: the train stage fails as bad input.
    p.write("nope.safetensors", "not a safetensors file");
    let run = p.mgat(&["run", "experiments/t.yaml", "--only", "head=none,*"]);
    assert_eq!(run.code(), 2, "{}", run.stdout());
    assert!(
        run.stdout().contains("nope.safetensors"),
        "{}",
        run.stdout()
    );
}

/// Runs a spec's baseline cells up to their train stages.
fn train_baseline(p: &Project, spec: &str) {
    p.mgat(&[
        "run",
        spec,
        "--only",
        "head=none,*",
        "--until",
        "train",
        "-q",
    ])
    .success();
}

#[test]
fn a_torchvision_pth_and_its_safetensors_twin_train_to_identical_weights() {
    let p = Project::new("pth");
    p.lock_synth("toy", TOY_DATA);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/weights");
    for ext in ["pth", "safetensors"] {
        let name = format!("resnet18-w4.{ext}");
        std::fs::copy(fixtures.join(&name), p.path(&name)).unwrap();
        let one_epoch = spec(1)
            .replace("warmup_epochs: 1", "warmup_epochs: 0")
            .replace("width: 8", "width: 4")
            .replace("head: none}", &format!("head: none, pretrained: {name}}}"));
        p.write(&format!("experiments/{ext}.yaml"), &one_epoch);
        train_baseline(&p, &format!("experiments/{ext}.yaml"));
    }
    let random = spec(1)
        .replace("warmup_epochs: 1", "warmup_epochs: 0")
        .replace("width: 8", "width: 4");
    p.write("experiments/random.yaml", &random);
    train_baseline(&p, "experiments/random.yaml");
    let models: Vec<Vec<u8>> = p
        .entries("train")
        .iter()
        .map(|key| {
            std::fs::read(
                p.cache_dir()
                    .join("train")
                    .join(key)
                    .join("model.safetensors"),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(
        models.len(),
        3,
        "one train stage per checkpoint and one from random weights"
    );
    // Two of the three are byte-identical (the .pth and its twin); the random start differs from both.
    let same = |i: usize, j: usize| models[i] == models[j];
    let pairs = [same(0, 1), same(0, 2), same(1, 2)];
    assert_eq!(pairs.iter().filter(|&&s| s).count(), 1, "{pairs:?}");
    // The inspector reads the .pth and names the backbone it fits.
    let out = p.mgat(&["weights", "inspect", "resnet18-w4.pth", "--brief"]);
    out.success();
    assert!(
        out.stdout()
            .contains("resnet18 with width 4 (all 100 backbone tensors match)"),
        "{}",
        out.stdout()
    );
    // convert writes safetensors that train identically too (same tensors), and refuses to overwrite.
    p.mgat(&[
        "weights",
        "convert",
        "resnet18-w4.pth",
        "converted.safetensors",
    ])
    .success();
    let again = p.mgat(&[
        "weights",
        "convert",
        "resnet18-w4.pth",
        "converted.safetensors",
    ]);
    assert_eq!(again.code(), 2, "{}", again.stderr());
}

#[test]
fn a_pretrained_file_for_another_backbone_says_which_backbone_it_fits() {
    let p = Project::new("pth-misfit");
    p.lock_synth("toy", TOY_DATA);
    let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/weights");
    std::fs::copy(fixtures.join("resnet18-w4.pth"), p.path("w.pth")).unwrap();
    p.write(
        "experiments/t.yaml",
        &spec(2).replace("head: none}", "head: none, pretrained: w.pth}"),
    );
    let run = p.mgat(&[
        "run",
        "experiments/t.yaml",
        "--only",
        "head=none,*",
        "--until",
        "train",
    ]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    let text = format!("{}{}", run.stdout(), run.stderr());
    assert!(
        text.contains("w.pth") && text.contains("the file looks like resnet18 with width 4"),
        "{text}"
    );
}

#[test]
fn device_check_compares_a_training_step_with_f64_and_refuses_bad_arguments() {
    let p = Project::new("device-check");
    let small = [
        "device",
        "check",
        "--device",
        "cpu",
        "--backbone",
        "resnet18",
        "--channels",
        "8",
        "--height",
        "64",
        "--width",
        "32",
    ];
    let out = p.mgat(&small);
    out.success();
    let text = out.stdout();
    assert!(
        text.contains("against cpu f64") && text.contains("within tolerance"),
        "{text}"
    );
    // An impossible tolerance fails the check (exit 1), so the check can fail.
    let mut strict = small.to_vec();
    strict.extend(["--tolerance", "1e-12"]);
    let out = p.mgat(&strict);
    assert_eq!(out.code(), 1, "{}", out.stdout());
    assert!(out.stdout().contains("OUTSIDE tolerance"));
    let mut bf16 = small.to_vec();
    bf16.extend(["--precision", "bf16"]);
    let out = p.mgat(&bf16);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("bf16 needs a CUDA device"),
        "{}",
        out.stderr()
    );
    let mut one = small.to_vec();
    one.extend(["--ids", "1"]);
    assert_eq!(p.mgat(&one).code(), 2);
}
