//! The plan: every cell of every spec turned into its stages (synth → index → train → eval), each keyed by the
//! SHA-256 of a canonical JSON of what determines its outputs, and shared between cells whose keys are equal.
//!
//! What a stage key is computed from ([`KeyInputs`]):
//!
//! | input | synth | index | train | eval |
//! |---|---|---|---|---|
//! | key schema ([`KEY_SCHEMA`]) and kind | ✓ | ✓ | ✓ | ✓ |
//! | the configuration fields the kind reads ([`keys`]) | generator parameters | dataset format | model, training settings | eval settings, the model it rebuilds, input size |
//! | the dataset's `datasets.lock` digest | | ✓ | ✓ | ✓ |
//! | the digest of each upstream output it consumes | | | `index.json` | `index.json`, `model.safetensors` |
//! | its kind's code fingerprint ([`StageKind::code`]) | `mgat-synth` closure | `mgat-data` closure | `mgat-train` closure | `mgat-eval` closure |
//! | the CPU's floating-point class ([`StageKind::numerics`]) | | | ✓ | ✓ |
//! | the spec's `version` salt | ✓ | ✓ | ✓ | ✓ |
//!
//! Upstream outputs are in by content, not by their stage's key (early cutoff, as Bazel and DVC do): an upstream stage
//! that re-runs and produces the same bytes leaves everything downstream cached. So a downstream key is known only
//! once the entries it consumes exist: [`Plan::new`] gives every stage an `id` (its inputs with upstream ids in
//! place of digests, which names it within a plan), [`Plan::resolve`] fills in the keys the cache can already
//! answer, and the executors resolve the rest as the stages they consume complete. A synthetic dataset reaches its
//! consumers through the lock digest, which its files are checked against.
//!
//! Deliberately not in it: where a stage runs (`train.device`: the same computation on another device is the same
//! stage, and the manifest records which device produced the entry) and its decoding threads (`train.workers`,
//! which change no output bit: results do not depend on thread counts); the host and the time; the path of the
//! pretrained checkpoint (its content is in). A `cuda` build has its own fingerprints (features).

use crate::data::lock::expand_env;
use crate::data::{LockError, LockFile};
use crate::spec::{Cell, Spec, SpecError};
use mgat_util::digest::{canonical_json, sha256_bytes, sha256_file};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Bump when the meaning of a key's inputs changes: every key changes with it.
pub const KEY_SCHEMA: u32 = 4;

pub mod keys;
pub mod reasons;
pub mod stage_key;

pub use crate::stages::StageConfig;
pub use keys::{EvalKey, TrainKey};
pub use stage_key::{StageKey, short};

/// Each stage kind's code fingerprint and `REPORT`'s (the code reports are rendered by): build.rs writes what cargo
/// resolved and how the compiler was configured, `mgat-fingerprint`'s macros what rustc read to compile each of the
/// project's crates; a kind's fingerprint is the SHA-256 of both for the packages in its closure.
pub mod fingerprints {
    use std::sync::OnceLock;

    /// Per crate (or module tree): its files with their digests, and the environment variables it read.
    pub type Compiled = &'static [(
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    )];

    /// What build.rs resolved for one kind.
    pub struct KindBuild {
        pub kind: &'static str,
        /// The project's crates in its closure, by package name and by crate name.
        pub crates: &'static [&'static str],
        pub libs: &'static [&'static str],
        /// One line per package in its closure: name, version, origin (checksum, commit or content digest) and
        /// resolved features.
        pub packages: &'static [&'static str],
    }

    include!(concat!(env!("OUT_DIR"), "/fingerprints.rs"));

    /// One stage kind's code fingerprint and what it covers.
    #[derive(Debug)]
    pub struct KindCode {
        pub kind: &'static str,
        pub fingerprint: String,
        /// The project's crates in the kind's dependency closure.
        pub crates: &'static [&'static str],
        /// The files rustc read to compile them (repo-relative, or `$OUT_DIR/…` for build-script output).
        pub files: Vec<&'static str>,
        /// Every other package in the closure, as build.rs describes it.
        pub external: Vec<&'static str>,
    }

    /// Every kind's code, computed once.
    pub fn kinds() -> &'static [KindCode] {
        static KIND_CODES: OnceLock<Vec<KindCode>> = OnceLock::new();
        KIND_CODES.get_or_init(|| KINDS.iter().map(kind_code).collect())
    }

    fn kind_code(build: &KindBuild) -> KindCode {
        let mut text = format!("kind {}\n{BUILD}", build.kind);
        let mut files = Vec::new();
        for line in build.packages {
            text += &format!("package {line}\n");
        }
        for lib in build.libs {
            let (_, sources, env) = COMPILED
                .iter()
                .find(|(name, _, _)| name == lib)
                .expect("build.rs asks the macro for every crate of every closure");
            text += &compiled_text(lib, sources, env);
            files.extend(sources.iter().map(|(file, _)| *file));
        }
        KindCode {
            kind: build.kind,
            fingerprint: mgat_util::digest::sha256_bytes(text.as_bytes()),
            crates: build.crates,
            files,
            external: build
                .packages
                .iter()
                .copied()
                .filter(|l| !l.contains(" own "))
                .collect(),
        }
    }

    fn compiled_text(name: &str, sources: &[(&str, &str)], env: &[&str]) -> String {
        let mut text = format!("crate {name}\n");
        for (file, digest) in sources {
            text += &format!("file {file} {digest}\n");
        }
        for var in env {
            text += &format!("env {var}\n");
        }
        text
    }

    /// The fingerprint of the code reports are rendered by: `src/report/` and `src/spec/`, the packages they draw
    /// and write with, and the train and eval kinds' code, whose typed readers read the logs and metrics.
    pub fn report() -> &'static str {
        static REPORT: OnceLock<String> = OnceLock::new();
        REPORT.get_or_init(|| {
            let mut text = format!("report\n{BUILD}");
            for kind in ["train", "eval"] {
                let code = kinds()
                    .iter()
                    .find(|c| c.kind == kind)
                    .expect("build.rs fingerprints every stage kind");
                text += &format!("reads through {kind} {}\n", code.fingerprint);
            }
            for line in REPORT_PACKAGES {
                text += &format!("package {line}\n");
            }
            for (root, sources, env) in REPORT_SOURCES {
                text += &compiled_text(root, sources, env);
            }
            mgat_util::digest::sha256_bytes(text.as_bytes())
        })
    }
}
pub use fingerprints::KindCode;

pub use crate::stages::StageKind;

/// The parts of a kind's key that depend on the build and the machine rather than on the cell.
impl StageKind {
    /// The code in this kind's keys: its compute crates' token streams, manifests and locked dependencies, the
    /// compiler, the target and the features (build.rs).
    pub fn code(self) -> &'static KindCode {
        fingerprints::kinds()
            .iter()
            .find(|c| c.kind == self.name())
            .expect("build.rs fingerprints every stage kind")
    }

    /// This CPU's floating-point class for the kinds whose results depend on it: train and eval multiply floats
    /// through gemm, whose kernel and blocking depend on the CPU; synth uses exact arithmetic only and index none.
    pub fn numerics(self) -> Option<String> {
        self.float_numerics()
            .then(|| mgat_model::numerics::cpu_class().to_string())
    }

    pub fn fingerprint(self) -> &'static str {
        &self.code().fingerprint
    }
}

/// Everything a stage key is computed from. Stored in the manifest so that `mgat explain` can say what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyInputs {
    pub schema: u32,
    pub kind: StageKind,
    /// Only the configuration fields this kind reads.
    pub config: StageConfig,
    /// `sha256:…` of the output this stage reads from each kind it consumes ([`StageKind::consumed_output`]).
    pub upstream: BTreeMap<StageKind, String>,
    pub lock_digest: Option<String>,
    pub fingerprint: String,
    /// The floating-point class of the CPU it computes on ([`mgat_model::numerics::cpu_class`]), for the kinds whose
    /// results depend on it (train and eval).
    #[serde(default)]
    pub numerics: Option<String>,
    pub version: Option<String>,
}

impl KeyInputs {
    /// Inputs of a stage of `kind` with no configuration, for tests of what stores them.
    #[cfg(test)]
    pub fn for_tests(kind: StageKind) -> Self {
        Self {
            schema: KEY_SCHEMA,
            kind,
            config: StageConfig::Index(mgat_data::stage::IndexKey {
                format: crate::data::Format::Synth,
            }),
            upstream: BTreeMap::new(),
            lock_digest: None,
            fingerprint: kind.fingerprint().into(),
            numerics: kind.numerics(),
            version: None,
        }
    }

    pub fn key(&self) -> StageKey {
        let value = serde_json::to_value(self).unwrap_or(Value::Null);
        StageKey::from_digest(sha256_bytes(canonical_json(&value).as_bytes()))
    }
}

#[derive(Debug, Clone)]
pub struct Stage {
    pub kind: StageKind,
    /// Names the stage within a plan (for `mgat stage` and Slurm jobs): the hash of its key inputs with its
    /// upstream stages' ids in place of their outputs' digests.
    pub id: String,
    /// The cache key, once the entries it consumes exist (see [`Plan::resolve`]).
    pub key: Option<StageKey>,
    /// The key inputs; `upstream` is filled in with the key.
    pub inputs: KeyInputs,
    /// Indices (into [`Plan::stages`]) of the stages this one consumes.
    pub deps: Vec<usize>,
    /// The `datasets.lock` entry this stage's data comes from.
    pub dataset: String,
    /// Indices (into [`Plan::cells`]) of the cells that use this stage.
    pub cells: Vec<usize>,
    /// Where it computes: every cell sharing it must agree.
    pub placement: Placement,
}

/// Where a stage computes and with what, outside its key (the stage interface's placement): `train.device`,
/// `train.workers` and the path of `model.pretrained` (whose content is in the key). Cells that share a train or
/// eval stage must agree on it, or the plan is refused: which cell's choice to follow would otherwise depend on
/// their order.
pub use mgat_stage::Placement;

/// A cell's placement.
fn placement_of(lock: &LockFile, config: &crate::spec::RunConfig) -> Placement {
    Placement {
        device: config.train.device,
        workers: config.train.workers,
        pretrained: config
            .model
            .pretrained
            .as_ref()
            .and_then(|p| pretrained_path(lock, p).ok()),
    }
}

impl Stage {
    /// A short label: kind, first 12 hex digits of the key (of the id, marked `~`, while the key is unknown).
    pub fn label(&self) -> String {
        match &self.key {
            Some(key) => format!("{} {}", self.kind.name(), key.short()),
            None => format!("{} ~{}", self.kind.name(), short(&self.id)),
        }
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
    #[error(
        "cells {first} and {second} share the {kind} stage {id} but disagree on where it runs ({what}); \
         make train.device and train.workers the same for both"
    )]
    Placement {
        first: String,
        second: String,
        kind: &'static str,
        id: String,
        what: String,
    },
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
                let from_grid = cell.axes.iter().any(|(path, _)| path == "model.pretrained");
                let at: &[&str] = match from_grid {
                    true => &["grid", "model.pretrained"],
                    false => &["base", "model", "pretrained"],
                };
                spec.error_at(
                    at,
                    format!("model.pretrained `{value}` (cell {}): {message}", cell.name),
                )
            })?),
            None => None,
        };
        let placement = placement_of(lock, &cell.config);
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
        let digest = entry.digest.clone();
        let mut chain: Vec<usize> = Vec::new();
        let mut add = |config: StageConfig,
                       deps: Vec<usize>,
                       lock_digest: Option<String>,
                       stages: &mut Vec<Stage>| {
            let kind = config.kind();
            let inputs = KeyInputs {
                schema: KEY_SCHEMA,
                kind,
                config,
                upstream: BTreeMap::new(),
                lock_digest,
                fingerprint: kind.fingerprint().to_string(),
                numerics: kind.numerics(),
                version: spec.version.clone(),
            };
            let recipe = KeyInputs {
                upstream: deps
                    .iter()
                    .map(|&d| (stages[d].kind, stages[d].id.clone()))
                    .collect(),
                ..inputs.clone()
            };
            // Every cell on a dataset shares its data stages: their key is computed once.
            let shared = kind.per_dataset();
            let id = match data_keys
                .iter()
                .find(|(known, _)| shared && *known == recipe)
            {
                Some((_, id)) => id.clone(),
                None => {
                    let id = String::from(recipe.key());
                    if shared {
                        data_keys.push((recipe, id.clone()));
                    }
                    id
                }
            };
            let consumes = deps
                .iter()
                .any(|&d| stages[d].kind.consumed_output().is_some());
            let i = *by_key.entry(id.clone()).or_insert_with(|| {
                stages.push(Stage {
                    kind,
                    id,
                    key: (!consumes).then(|| inputs.key()),
                    inputs,
                    deps,
                    dataset: dataset.clone(),
                    cells: Vec::new(),
                    placement: placement.clone(),
                });
                stages.len() - 1
            });
            chain.push(i);
            i
        };
        let cell_keys = keys::CellKeys {
            config: &cell.config,
            dataset: entry,
            pretrained_sha256: pretrained,
        };
        let mut built: BTreeMap<StageKind, usize> = BTreeMap::new();
        for kind in StageKind::ALL {
            let Some(config) = StageConfig::for_cell(kind, &cell_keys) else {
                continue;
            };
            let deps = kind
                .consumes()
                .filter_map(|k| built.get(&k).copied())
                .collect();
            let lock_digest = kind.reads_dataset().then(|| digest.clone());
            let i = add(config, deps, lock_digest, &mut self.stages);
            built.insert(kind, i);
        }
        for &i in &chain {
            let stage = &self.stages[i];
            if !stage.kind.uses_device() {
                continue;
            }
            // The pretrained checkpoint's content is in the key: any of the paths to those bytes serves.
            let (had, has) = (&stage.placement, &placement);
            let what = match () {
                _ if had.device != has.device => {
                    format!("train.device {} against {}", had.device, has.device)
                }
                _ if had.workers != has.workers => {
                    format!("train.workers {} against {}", had.workers, has.workers)
                }
                _ => continue,
            };
            let first = stage
                .cells
                .first()
                .map(|&c| self.cells[c].cell.name.clone());
            return Err(PlanError::Placement {
                first: first.unwrap_or_default(),
                second: cell.name.clone(),
                kind: stage.kind.name(),
                id: short(&stage.id).to_string(),
                what,
            });
        }
        Ok(chain)
    }

    /// Stage `s`'s key inputs and key, given the keys of the stages it consumes (`key_of`) and the digest of an
    /// entry's output (`digest_of(kind, key, file)`); None while an entry it consumes does not exist.
    pub fn resolve_stage(
        &self,
        s: usize,
        key_of: &dyn Fn(usize) -> Option<StageKey>,
        digest_of: &dyn Fn(StageKind, &StageKey, &str) -> Option<String>,
    ) -> Option<(KeyInputs, StageKey)> {
        let stage = &self.stages[s];
        let mut inputs = stage.inputs.clone();
        for &d in &stage.deps {
            let kind = self.stages[d].kind;
            if let Some(file) = kind.consumed_output() {
                let digest = digest_of(kind, &key_of(d)?, file)?;
                inputs.upstream.insert(kind, digest);
            }
        }
        // A key already resolved from the same inputs stands (a plan resolved again after a run).
        let key = match &stage.key {
            Some(key) if inputs == stage.inputs => key.clone(),
            _ => inputs.key(),
        };
        Some((inputs, key))
    }

    /// Fills in every key whose consumed entries exist, in dependency order; `digest_of` reads an entry's output
    /// digest (from its manifest). The stages of one depth are resolved in parallel: none consumes another.
    pub fn resolve(
        &mut self,
        digest_of: &(dyn Fn(StageKind, &StageKey, &str) -> Option<String> + Sync),
    ) {
        use rayon::prelude::*;
        for wave in self.waves() {
            let key_of = |d: usize| self.stages[d].key.clone();
            let resolved: Vec<_> = wave
                .par_iter()
                .map(|&s| self.resolve_stage(s, &key_of, digest_of))
                .collect();
            for (&s, resolved) in wave.iter().zip(resolved) {
                if let Some((inputs, key)) = resolved {
                    self.stages[s].inputs = inputs;
                    self.stages[s].key = Some(key);
                }
            }
        }
    }

    /// The stages grouped by depth (a stage that consumes nothing is at depth 0, any other one deeper than
    /// everything it consumes), shallowest first.
    fn waves(&self) -> Vec<Vec<usize>> {
        let mut depth = vec![0usize; self.stages.len()];
        let mut waves: Vec<Vec<usize>> = Vec::new();
        for (s, stage) in self.stages.iter().enumerate() {
            depth[s] = stage.deps.iter().map(|&d| depth[d] + 1).max().unwrap_or(0);
            if waves.len() <= depth[s] {
                waves.resize_with(depth[s] + 1, Vec::new);
            }
            waves[depth[s]].push(s);
        }
        waves
    }

    /// The stage of `kind` among `cell`'s, if it has one.
    pub fn cell_stage(&self, cell: &PlannedCell, kind: StageKind) -> Option<&Stage> {
        cell.stages
            .iter()
            .map(|&s| &self.stages[s])
            .find(|s| s.kind == kind)
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
        let read = crate::inputfile::check_regular(&path).and_then(|()| sha256_file(&path));
        let digest = match (read, self.mode) {
            (Ok((hex, _)), _) => {
                let digest = mgat_util::digest::labelled(&hex);
                // Without the record, only a later run without the file loses its key.
                let _ = mgat_util::fsio::write_atomic(&record, format!("{digest}\n").as_bytes());
                digest
            }
            (Err(e), Purpose::Inspect { .. }) => match crate::inputfile::read_text_bounded(
                &record,
                crate::inputfile::limit::CACHE_RECORD,
            ) {
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

    fn lock() -> (mgat_testutil::TempDir, LockFile) {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("datasets.lock");
        let text = "datasets:\n  toy:\n    format: synth\n    synth: {seed: 1, ids: 8, cameras: 2, images_per_camera: 2, height: 64, width: 32, junk: 0, distractors: 0, quality: 90}\n    files: 1\n    bytes: 1\n    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000\n";
        std::fs::write(&path, text).unwrap();
        let lock = LockFile::load(&path, &dir.join("lists")).unwrap();
        (dir, lock)
    }

    fn plan(text: &str) -> Plan {
        let (_dir, lock) = lock();
        Plan::new(
            &[Spec::parse(Path::new("t.yaml"), text, &[]).unwrap()],
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
        // Ids: before anything is computed only the data stages have keys.
        let keys = |p: &Plan| p.stages.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
        let key_of = |p: &Plan, kind| p.stages.iter().find(|s| s.kind == kind).unwrap().id.clone();

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
        assert_eq!(
            synth.key.as_ref().map(StageKey::as_str),
            Some(expected.as_str())
        );
        assert_eq!(
            synth.inputs.fingerprint,
            StageKind::Synth.code().fingerprint
        );
        assert_eq!(synth.inputs.lock_digest, None);
        assert!(p.stages[1].inputs.lock_digest.is_some());
    }

    #[test]
    fn downstream_keys_follow_the_content_of_what_they_consume() {
        let mut p = plan(SPEC);
        let train = |p: &Plan| {
            p.stages
                .iter()
                .position(|s| s.kind == StageKind::Train)
                .unwrap()
        };
        let t = train(&p);
        assert_eq!(p.stages[t].key, None, "unknown until the index exists");
        // Every entry exists, each output with the digest `digest` gives for its stage.
        let resolved = |p: &mut Plan, digest: &(dyn Fn(StageKind, &StageKey) -> String + Sync)| {
            p.resolve(&|kind, key, _file| Some(digest(kind, key)));
            p.stages
                .iter()
                .map(|s| s.key.clone().unwrap())
                .collect::<Vec<_>>()
        };
        let same = resolved(&mut p, &|kind, _| format!("sha256:{}", kind.name()));
        // The index stage's key changes (another synth key upstream, say), its output does not: nothing moves.
        let mut q = plan(SPEC);
        let index = q
            .stages
            .iter()
            .position(|s| s.kind == StageKind::Index)
            .unwrap();
        q.stages[index].inputs.version = Some("other index code".into());
        q.stages[index].key = Some(q.stages[index].inputs.key());
        let after = resolved(&mut q, &|kind, _| format!("sha256:{}", kind.name()));
        assert_ne!(same[index], after[index]);
        let downstream = |keys: &[StageKey]| keys[index + 1..].to_vec();
        assert_eq!(
            downstream(&same),
            downstream(&after),
            "same bytes upstream, same keys downstream"
        );
        // Other index bytes: every train and eval key moves.
        let mut r = plan(SPEC);
        let other = resolved(&mut r, &|kind, key| format!("sha256:{}{key}", kind.name()));
        assert!(
            downstream(&same)
                .iter()
                .zip(downstream(&other))
                .all(|(a, b)| *a != b)
        );
        assert_eq!(
            p.stages[t].inputs.upstream.len(),
            1,
            "train reads the index"
        );
    }

    #[test]
    fn resolving_again_keeps_keys_whose_inputs_hold_and_recomputes_the_rest() {
        // Every stage's key is its inputs' key, and its inputs hold the digest of what it consumes.
        let check = |p: &Plan, digest: &dyn Fn(StageKind, &StageKey) -> String| {
            for stage in &p.stages {
                assert_eq!(stage.key, Some(stage.inputs.key()), "{}", stage.label());
                for &d in &stage.deps {
                    let dep = &p.stages[d];
                    if dep.kind.consumed_output().is_some() {
                        let expected = digest(dep.kind, dep.key.as_ref().unwrap());
                        assert_eq!(stage.inputs.upstream[&dep.kind], expected);
                    }
                }
            }
        };
        let keys = |p: &Plan| p.stages.iter().map(|s| s.key.clone()).collect::<Vec<_>>();
        let first = |kind: StageKind, _: &StageKey| format!("sha256:{}", kind.name());
        let second = |kind: StageKind, key: &StageKey| format!("sha256:{}{key}", kind.name());
        let mut p = plan(SPEC);
        p.resolve(&|kind, key, _file| Some(first(kind, key)));
        check(&p, &first);
        let once = keys(&p);
        p.resolve(&|kind, key, _file| Some(first(kind, key)));
        assert_eq!(keys(&p), once, "the same outputs: the same keys");
        // The entries consumed now hold other bytes (a stage ran again): every key that consumes them moves.
        p.resolve(&|kind, key, _file| Some(second(kind, key)));
        check(&p, &second);
        let mut fresh = plan(SPEC);
        fresh.resolve(&|kind, key, _file| Some(second(kind, key)));
        assert_eq!(keys(&p), keys(&fresh));
        let moved = keys(&p).iter().zip(&once).filter(|(a, b)| a != b).count();
        let consumers = p
            .stages
            .iter()
            .filter(|s| !s.inputs.upstream.is_empty())
            .count();
        assert_eq!(moved, consumers);
    }

    #[test]
    fn cells_sharing_a_stage_must_agree_on_where_it_runs() {
        let (_dir, lock) = lock();
        let text = SPEC.replace(
            "seeds: [1, 2]",
            "seeds: [1]\ninclude: [{model.head: none, train.device: cpu}]",
        );
        let spec = Spec::parse(Path::new("t.yaml"), &text, &[]).unwrap();
        let err = Plan::new(&[spec], &lock, read(&lock))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("share the train stage") && err.contains("train.device"),
            "{err}"
        );
    }

    #[test]
    fn unknown_dataset_points_at_the_spec() {
        let (_dir, lock) = lock();
        let spec = Spec::parse(
            Path::new("t.yaml"),
            &SPEC.replace("name: toy", "name: nope"),
            &[],
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
        let spec = Spec::parse(Path::new("t.yaml"), &text, &[]).unwrap();
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
                .map(|s| s.id.clone())
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
