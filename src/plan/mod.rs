//! The plan: every cell of every spec turned into its stages (synth → index → train → eval), each keyed by the
//! SHA-256 of a canonical JSON of what determines its outputs, and shared between cells whose keys are equal.
//!
//! What a stage key is computed from ([`KeyInputs`]):
//! - the key schema ([`KEY_SCHEMA`], bumped when the meaning of any input changes) and the stage kind;
//! - the stage's own configuration, exactly the fields its kind reads ([`keys`]): a synth stage its generator
//!   parameters, an index stage the dataset format, a train stage the model (head settings only where the head
//!   reads them, the pretrained checkpoint by its SHA-256) and the training settings, an eval stage the
//!   evaluation settings;
//! - the keys of the stages it consumes, so a change upstream reaches every stage downstream;
//! - the dataset's `datasets.lock` digest, for stages that read dataset files;
//! - the code fingerprint (build.rs): the sources that compute stage outputs, the locked versions of every
//!   dependency, the compiler, the target and the cargo features;
//! - the spec's optional `version` salt.
//!
//! Deliberately not in it: where a stage runs (`train.device`: the same computation on another device is the same
//! stage, and the manifest records which device produced the entry) and its decoding threads (`train.workers`,
//! which change no output bit: results do not depend on thread counts); the host and the time; the path of the
//! pretrained checkpoint (its content is in). A `cuda` build has its own fingerprint (features).

use crate::data::lock::expand_env;
use crate::data::{Format, LockError, LockFile};
use crate::digest::{canonical_json, sha256_bytes, sha256_file};
use crate::spec::{Cell, Spec, SpecError};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Bump when the meaning of a key's inputs changes: every key changes with it.
pub const KEY_SCHEMA: u32 = 2;

pub mod keys;

pub use keys::{EvalKey, StageConfig, TrainKey};

/// The fingerprints build.rs computes: `CODE` (in every stage key) and `PROGRAM` (all of mgat's sources, which
/// reports are rendered by).
pub mod fingerprints {
    include!(concat!(env!("OUT_DIR"), "/fingerprints.rs"));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Synth,
    Index,
    Train,
    Eval,
}

impl StageKind {
    pub const ALL: [StageKind; 4] = [
        StageKind::Synth,
        StageKind::Index,
        StageKind::Train,
        StageKind::Eval,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StageKind::Synth => "synth",
            StageKind::Index => "index",
            StageKind::Train => "train",
            StageKind::Eval => "eval",
        }
    }

    /// Whether a killed run of this kind continues from what it left in its partial directory.
    pub fn resumes(self) -> bool {
        self == StageKind::Train
    }

    /// The code fingerprint in this kind's keys: one for every kind, computed by build.rs from the sources that
    /// compute stage outputs, the locked dependency versions, the compiler, the target and the features.
    pub fn fingerprint(self) -> &'static str {
        fingerprints::CODE
    }
}

/// Everything a stage key is computed from. Stored in the manifest so that `mgat explain` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub schema: u32,
    pub kind: StageKind,
    /// Only the configuration fields this kind reads.
    pub config: StageConfig,
    /// Keys of the stages this one consumes, by kind.
    pub upstream: BTreeMap<StageKind, String>,
    pub lock_digest: Option<String>,
    pub fingerprint: String,
    pub version: Option<String>,
}

impl KeyInputs {
    /// Inputs of a stage of `kind` with no configuration, for tests of what stores them.
    #[cfg(test)]
    pub fn for_tests(kind: StageKind) -> Self {
        Self {
            schema: KEY_SCHEMA,
            kind,
            config: StageConfig::Index {
                format: Format::Synth,
            },
            upstream: BTreeMap::new(),
            lock_digest: None,
            fingerprint: kind.fingerprint().into(),
            version: None,
        }
    }

    pub fn key(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        sha256_bytes(canonical_json(&value).as_bytes())
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub kind: StageKind,
    pub key: String,
    pub inputs: KeyInputs,
    /// Indices (into [`Plan::stages`]) of the stages this one consumes.
    pub deps: Vec<usize>,
    /// The `datasets.lock` entry this stage's data comes from.
    pub dataset: String,
    /// Indices (into [`Plan::cells`]) of the cells that use this stage.
    pub cells: Vec<usize>,
}

impl Stage {
    /// A short label: kind, first 12 hex digits of the key.
    pub fn label(&self) -> String {
        format!("{} {}", self.kind.name(), &self.key[..12])
    }
}

#[derive(Debug, Clone)]
pub struct PlannedCell {
    /// Index into the specs the plan was made from.
    pub spec: usize,
    pub cell: Cell,
    /// Indices into [`Plan::stages`], upstream first.
    pub stages: Vec<usize>,
}

/// Stages in dependency order (every stage after the ones it consumes), and the cells that use them.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub stages: Vec<Stage>,
    pub cells: Vec<PlannedCell>,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Lock(#[from] LockError),
}

impl Plan {
    /// Plans every cell of `specs` against the datasets pinned in `lock`, for `purpose`.
    pub fn new(specs: &[Spec], lock: &LockFile, purpose: Purpose) -> Result<Plan, PlanError> {
        let mut plan = Plan::default();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut data_keys: Vec<(KeyInputs, String)> = Vec::new();
        let mut weights = WeightDigests {
            mode: purpose,
            known: HashMap::new(),
        };
        for (s, spec) in specs.iter().enumerate() {
            for cell in &spec.cells {
                let stages =
                    plan.stages_for(spec, cell, lock, &mut by_key, &mut data_keys, &mut weights)?;
                let c = plan.cells.len();
                for &i in &stages {
                    plan.stages[i].cells.push(c);
                }
                plan.cells.push(PlannedCell {
                    spec: s,
                    cell: cell.clone(),
                    stages,
                });
            }
        }
        Ok(plan)
    }

    fn stages_for(
        &mut self,
        spec: &Spec,
        cell: &Cell,
        lock: &LockFile,
        by_key: &mut HashMap<String, usize>,
        data_keys: &mut Vec<(KeyInputs, String)>,
        weights: &mut WeightDigests,
    ) -> Result<Vec<usize>, PlanError> {
        let dataset = &cell.config.dataset.name;
        let pretrained = match &cell.config.model.pretrained {
            Some(value) => Some(weights.digest(lock, value).map_err(|message| {
                spec.error_at(
                    &["base", "model", "pretrained"],
                    format!("model.pretrained `{value}` (cell {}): {message}", cell.name),
                )
            })?),
            None => None,
        };
        let train = StageConfig::Train(TrainKey::of(&cell.config, pretrained));
        // Point at where the cell got its dataset: a grid axis, or the base.
        let from_grid = cell.axes.iter().any(|(path, _)| path == "dataset.name");
        let at: &[&str] = if from_grid {
            &["grid", "dataset.name"]
        } else {
            &["base", "dataset", "name"]
        };
        let entry = lock
            .entry(dataset)
            .map_err(|e| spec.error_at(at, e.to_string()))?;
        if matches!(weights.mode, Purpose::Compute { .. })
            && let Some(root) = lock.root(dataset)?
            && !root.is_dir()
        {
            let message = format!(
                "dataset `{dataset}`: its root {} is not a folder on this machine",
                root.display()
            );
            return Err(spec.error_at(at, message).into());
        }
        let digest = Some(entry.digest.clone());
        let mut chain: Vec<usize> = Vec::new();
        let mut add = |kind: StageKind,
                       config: StageConfig,
                       deps: Vec<usize>,
                       lock_digest: Option<String>,
                       stages: &mut Vec<Stage>| {
            let upstream = deps
                .iter()
                .map(|&d| (stages[d].kind, stages[d].key.clone()))
                .collect();
            let inputs = KeyInputs {
                schema: KEY_SCHEMA,
                kind,
                config,
                upstream,
                lock_digest,
                fingerprint: kind.fingerprint().to_string(),
                version: spec.version.clone(),
            };
            // Every cell on a dataset shares its data stages: their key is computed once.
            let shared = matches!(kind, StageKind::Synth | StageKind::Index);
            let key = match data_keys
                .iter()
                .find(|(known, _)| shared && *known == inputs)
            {
                Some((_, key)) => key.clone(),
                None => {
                    let key = inputs.key();
                    if shared {
                        data_keys.push((inputs.clone(), key.clone()));
                    }
                    key
                }
            };
            let i = *by_key.entry(key.clone()).or_insert_with(|| {
                stages.push(Stage {
                    kind,
                    key,
                    inputs,
                    deps,
                    dataset: dataset.clone(),
                    cells: Vec::new(),
                });
                stages.len() - 1
            });
            chain.push(i);
            i
        };
        let synth = match (&entry.format, &entry.synth) {
            (Format::Synth, Some(params)) => Some(add(
                StageKind::Synth,
                StageConfig::Synth(params.clone()),
                vec![],
                None,
                &mut self.stages,
            )),
            _ => None,
        };
        let index = add(
            StageKind::Index,
            StageConfig::Index {
                format: entry.format,
            },
            synth.into_iter().collect(),
            digest.clone(),
            &mut self.stages,
        );
        // Train and eval read the dataset's files too, so a synthetic dataset's entry is one of their inputs.
        let train = add(
            StageKind::Train,
            train,
            [index].into_iter().chain(synth).collect(),
            digest.clone(),
            &mut self.stages,
        );
        add(
            StageKind::Eval,
            StageConfig::Eval(EvalKey {
                eval: cell.config.eval.clone(),
            }),
            [train, index].into_iter().chain(synth).collect(),
            digest,
            &mut self.stages,
        );
        Ok(chain)
    }

    /// The stage of `kind` that `stage` consumes, if any.
    pub fn input(&self, stage: &Stage, kind: StageKind) -> Option<&Stage> {
        stage
            .deps
            .iter()
            .map(|&d| &self.stages[d])
            .find(|d| d.kind == kind)
    }

    /// Indices of the stages that `cells` need, in dependency order.
    pub fn stages_of(&self, cells: &[usize]) -> Vec<usize> {
        let mut needed = vec![false; self.stages.len()];
        for &c in cells {
            for &s in &self.cells[c].stages {
                needed[s] = true;
            }
        }
        (0..self.stages.len()).filter(|&s| needed[s]).collect()
    }
}

/// Where `model.pretrained` points: `${VAR}`s expanded, relative to the project root (the lock's folder).
pub fn pretrained_path(lock: &LockFile, value: &str) -> Result<PathBuf, String> {
    let expanded =
        expand_env(value).map_err(|var| format!("environment variable {var} is not set"))?;
    let project = lock.path().parent().unwrap_or(Path::new("."));
    Ok(project.join(expanded))
}

/// What a plan is for, which decides how strictly it needs the inputs outside the cache. Pretrained checkpoints
/// are in train keys by their SHA-256 (replacing the file behind the same path trains again); digests are
/// remembered in the `records` folder.
#[derive(Debug, Clone, Copy)]
pub enum Purpose<'a> {
    /// To compute stages: every pretrained checkpoint is read and hashed (and its digest remembered), and every
    /// real dataset's root must exist.
    Compute { records: &'a Path },
    /// To inspect results (plan, explain, report, gc): a checkpoint that is absent counts with the digest
    /// remembered when it was last read, and dataset roots are not needed, so these work from the cache on a
    /// machine without the weights or the data.
    Inspect { records: &'a Path },
}

struct WeightDigests<'a> {
    mode: Purpose<'a>,
    known: HashMap<PathBuf, String>,
}

impl WeightDigests<'_> {
    fn digest(&mut self, lock: &LockFile, value: &str) -> Result<String, String> {
        let path = pretrained_path(lock, value)?;
        if let Some(d) = self.known.get(&path) {
            return Ok(d.clone());
        }
        let (Purpose::Compute { records } | Purpose::Inspect { records }) = self.mode;
        let record = records.join(format!(
            "{}.sha256",
            &sha256_bytes(path.to_string_lossy().as_bytes())[..24]
        ));
        let digest = match (sha256_file(&path), self.mode) {
            (Ok((hex, _)), _) => {
                let digest = format!("sha256:{hex}");
                // Without the record, only a later run without the file loses its key.
                let _ = crate::fsio::write_atomic(&record, format!("{digest}\n").as_bytes());
                digest
            }
            (Err(e), Purpose::Inspect { .. }) => match std::fs::read_to_string(&record) {
                Ok(text) => text.trim().to_string(),
                Err(_) => {
                    return Err(format!(
                        "cannot read {}: {e} (and it was never planned with here)",
                        path.display()
                    ));
                }
            },
            (Err(e), Purpose::Compute { .. }) => {
                return Err(format!("cannot read {}: {e}", path.display()));
            }
        };
        self.known.insert(path, digest.clone());
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const SPEC: &str = "\
name: t
base:
  dataset: {name: toy}
  train: {epochs: 2, lr_steps: [1], warmup_epochs: 0}
grid:
  model.head: [none, gat, mgat]
  model.gamma: [0.5, 2]
seeds: [1, 2]
";

    /// Weights read from their files, digests remembered beside the lock.
    fn read(lock: &LockFile) -> Purpose<'_> {
        Purpose::Compute {
            records: lock.path().parent().unwrap(),
        }
    }

    fn lock() -> (crate::testutil::TempDir, LockFile) {
        let dir = crate::testutil::tempdir();
        let path = dir.join("datasets.lock");
        let text = "datasets:\n  toy:\n    format: synth\n    synth: {seed: 1, ids: 8, cameras: 2, images_per_camera: 2, height: 64, width: 32, junk: 0, distractors: 0, quality: 90}\n    files: 1\n    bytes: 1\n    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
        std::fs::write(&path, text).unwrap();
        let lock = LockFile::load(&path, &dir.join("lists")).unwrap();
        (dir, lock)
    }

    fn plan(text: &str) -> Plan {
        let (_dir, lock) = lock();
        Plan::new(
            &[Spec::parse(Path::new("t.yaml"), text).unwrap()],
            &lock,
            read(&lock),
        )
        .unwrap()
    }

    fn count(plan: &Plan, kind: StageKind) -> usize {
        plan.stages.iter().filter(|s| s.kind == kind).count()
    }

    #[test]
    fn cells_share_equal_stages() {
        let p = plan(SPEC);
        assert_eq!(p.cells.len(), 12);
        assert_eq!(
            count(&p, StageKind::Synth),
            1,
            "one data stage for the whole sweep"
        );
        assert_eq!(count(&p, StageKind::Index), 1);
        // The baseline reads no γ: its two γ cells share a train stage per seed.
        assert_eq!(count(&p, StageKind::Train), 2 * (1 + 2 + 2));
        assert_eq!(count(&p, StageKind::Eval), 10);
        for (i, s) in p.stages.iter().enumerate() {
            assert!(s.deps.iter().all(|&d| d < i), "dependency order");
        }
    }

    #[test]
    fn keys_are_stable_and_change_only_with_what_a_kind_reads() {
        let a = plan(SPEC);
        let b = plan(SPEC);
        let keys = |p: &Plan| p.stages.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
        let key_of = |p: &Plan, kind| {
            p.stages
                .iter()
                .find(|s| s.kind == kind)
                .unwrap()
                .key
                .clone()
        };

        let eval_only = plan(&SPEC.replace(
            "warmup_epochs: 0}",
            "warmup_epochs: 0}\n  eval: {normalize: true}",
        ));
        assert_eq!(
            key_of(&a, StageKind::Train),
            key_of(&eval_only, StageKind::Train),
            "eval change keeps train"
        );
        assert_ne!(
            key_of(&a, StageKind::Eval),
            key_of(&eval_only, StageKind::Eval)
        );

        let lr = plan(&SPEC.replace("epochs: 2,", "epochs: 2, lr: 0.001,"));
        assert_eq!(
            key_of(&a, StageKind::Index),
            key_of(&lr, StageKind::Index),
            "train change keeps data"
        );
        assert_ne!(key_of(&a, StageKind::Train), key_of(&lr, StageKind::Train));
        assert_ne!(
            key_of(&a, StageKind::Eval),
            key_of(&lr, StageKind::Eval),
            "downstream follows upstream"
        );

        let device = plan(&SPEC.replace("epochs: 2,", "epochs: 2, device: cpu, workers: 1,"));
        assert_eq!(
            keys(&a),
            keys(&device),
            "device and workers are not part of any key"
        );

        let salted = plan(&SPEC.replace("name: t\n", "name: t\nversion: 2\n"));
        assert!(
            keys(&a).iter().all(|k| !keys(&salted).contains(k)),
            "the version salt changes every key"
        );
    }

    #[test]
    fn a_key_is_the_hash_of_its_canonical_inputs() {
        let p = plan(SPEC);
        let synth = &p.stages[0];
        let expected =
            sha256_bytes(canonical_json(&serde_json::to_value(&synth.inputs).unwrap()).as_bytes());
        assert_eq!(synth.key, expected);
        assert_eq!(synth.inputs.fingerprint, fingerprints::CODE);
        assert_eq!(synth.inputs.lock_digest, None);
        assert!(p.stages[1].inputs.lock_digest.is_some());
    }

    #[test]
    fn unknown_dataset_points_at_the_spec() {
        let (_dir, lock) = lock();
        let spec = Spec::parse(
            Path::new("t.yaml"),
            &SPEC.replace("name: toy", "name: nope"),
        )
        .unwrap();
        let err = Plan::new(&[spec], &lock, read(&lock))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.yaml:3:") && err.contains("no dataset `nope`"),
            "{err}"
        );
    }

    #[test]
    fn pretrained_weights_are_in_the_train_key_by_content() {
        let (dir, lock) = lock();
        let text = SPEC.replace(
            "  train: {",
            "  model: {pretrained: w/r.safetensors}\n  train: {",
        );
        let spec = Spec::parse(Path::new("t.yaml"), &text).unwrap();
        let err = Plan::new(std::slice::from_ref(&spec), &lock, read(&lock))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.yaml:")
                && err.contains("model.pretrained `w/r.safetensors`")
                && err.contains("cannot read"),
            "{err}"
        );
        std::fs::create_dir_all(dir.join("w")).unwrap();
        std::fs::write(dir.join("w/r.safetensors"), b"one").unwrap();
        let train_keys = |lock: &LockFile| -> Vec<String> {
            let p = Plan::new(std::slice::from_ref(&spec), lock, read(lock)).unwrap();
            p.stages
                .iter()
                .filter(|s| s.kind == StageKind::Train)
                .map(|s| s.key.clone())
                .collect()
        };
        let first = train_keys(&lock);
        assert_eq!(train_keys(&lock), first, "stable");
        std::fs::write(dir.join("w/r.safetensors"), b"two").unwrap();
        let second = train_keys(&lock);
        assert!(
            first.iter().zip(&second).all(|(a, b)| a != b),
            "new weights, new keys"
        );
    }
}
