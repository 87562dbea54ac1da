//! The registry of stage kinds: one line per kind, naming its variant, its [`Stage`] impl (the kind's compute crate,
//! whose code its keys' fingerprint covers) and the function of `plan::keys` that builds its key from a cell. The
//! kinds' enum ([`StageKind`]), their key configurations ([`StageConfig`]) and the dispatch to each kind's `run` are
//! generated from it, and every fact about a kind (what it consumes, its result file, whether it reads the dataset,
//! uses a device, resumes) is read from its [`Stage`] impl.

use crate::plan::keys;
use mgat_stage::Stage;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What the registry reads from a kind's [`Stage`] impl.
struct Facts {
    name: &'static str,
    consumes: &'static [&'static str],
    result_file: Option<&'static str>,
    reads_dataset: bool,
    per_dataset: bool,
    uses_device: bool,
    float_numerics: bool,
    resumes: bool,
    dataset_root: fn(&Path) -> Option<PathBuf>,
}

impl Facts {
    const fn of<S: Stage>() -> Facts {
        Facts {
            name: S::KIND,
            consumes: S::CONSUMES,
            result_file: S::RESULT_FILE,
            reads_dataset: S::READS_DATASET,
            per_dataset: S::PER_DATASET,
            uses_device: S::USES_DEVICE,
            float_numerics: S::FLOAT_NUMERICS,
            resumes: S::RESUMES,
            dataset_root: S::dataset_root,
        }
    }
}

/// Generates [`StageKind`], [`StageConfig`] and [`dispatch`] from the list of kinds, in pipeline order (every kind
/// after the kinds it consumes).
macro_rules! stage_kinds {
    ($($variant:ident => $stage:ty, key $key:path;)+) => {
        /// A stage kind, as the registry lists them.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum StageKind {
            $($variant),+
        }

        impl StageKind {
            /// Every kind, in pipeline order.
            pub const ALL: [StageKind; [$(stringify!($variant)),+].len()] = [$(StageKind::$variant),+];

            fn facts(self) -> &'static Facts {
                match self {
                    $(StageKind::$variant => const { &Facts::of::<$stage>() }),+
                }
            }
        }

        /// The configuration part of a stage key, by kind: exactly the kind's typed key.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(rename_all = "lowercase", deny_unknown_fields)]
        pub enum StageConfig {
            $($variant(<$stage as Stage>::Key)),+
        }

        impl StageConfig {
            /// The key configuration of a cell's stage of `kind`; None where the cell has no stage of it.
            pub fn for_cell(kind: StageKind, cell: &keys::CellKeys) -> Option<StageConfig> {
                match kind {
                    $(StageKind::$variant => $key(cell).map(StageConfig::$variant)),+
                }
            }

            /// The kind this configuration is of.
            pub fn kind(&self) -> StageKind {
                match self {
                    $(StageConfig::$variant(_) => StageKind::$variant),+
                }
            }
        }

        /// Runs the kind's [`Stage`] impl on its typed key.
        pub(super) fn dispatch<R: Runner>(config: &StageConfig, runner: &R) -> R::Output {
            match config {
                $(StageConfig::$variant(key) => runner.run::<$stage>(key)),+
            }
        }
    };
}

stage_kinds! {
    Synth => mgat_synth::stage::Synth, key keys::synth;
    Index => mgat_data::stage::Index, key keys::index;
    Train => mgat_train::stage::Train, key keys::train;
    Eval => mgat_eval::stage::Eval, key keys::eval;
}

/// What [`dispatch`] hands a kind's typed key to.
pub(super) trait Runner {
    type Output;
    fn run<S: Stage>(&self, key: &S::Key) -> Self::Output;
}

impl StageKind {
    /// Its name, as in cache folders, manifests and run files.
    pub fn name(self) -> &'static str {
        self.facts().name
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<StageKind> {
        StageKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The kinds whose entries a stage of this kind reads.
    pub fn consumes(self) -> impl Iterator<Item = StageKind> {
        self.facts()
            .consumes
            .iter()
            .filter_map(|name| StageKind::from_name(name))
    }

    /// The file that holds what an entry of this kind computed (the index, the weights, the metrics), whose digest
    /// reports record. A synth entry's output is the dataset, pinned by the lock digest instead.
    pub fn result_file(self) -> Option<&'static str> {
        self.facts().result_file
    }

    /// The output of an entry of this kind that downstream stages read, whose digest is in their keys: its result
    /// file, for the kinds that other kinds consume.
    pub fn consumed_output(self) -> Option<&'static str> {
        let consumed = StageKind::ALL
            .into_iter()
            .any(|other| other.consumes().any(|k| k == self));
        self.result_file().filter(|_| consumed)
    }

    /// Whether it reads the dataset's files (its key then holds the lock digest).
    pub fn reads_dataset(self) -> bool {
        self.facts().reads_dataset
    }

    /// Whether every cell on a dataset shares one stage of this kind.
    pub fn per_dataset(self) -> bool {
        self.facts().per_dataset
    }

    /// Whether it computes on the placement's device and threads.
    pub fn uses_device(self) -> bool {
        self.facts().uses_device
    }

    /// Whether its results depend on the CPU's floating-point class.
    pub fn float_numerics(self) -> bool {
        self.facts().float_numerics
    }

    /// Whether a killed run of this kind continues from what it left in its partial directory.
    pub fn resumes(self) -> bool {
        self.facts().resumes
    }

    /// The dataset an entry of this kind (at `entry`) provides to its consumers, for a kind that generates one.
    pub fn dataset_root(self, entry: &Path) -> Option<PathBuf> {
        (self.facts().dataset_root)(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_their_stage_impls_say_and_follow_what_they_consume() {
        for (i, kind) in StageKind::ALL.into_iter().enumerate() {
            let serialised = serde_json::to_value(kind).unwrap();
            assert_eq!(
                serialised,
                kind.name(),
                "the enum's serde name is the kind's"
            );
            assert_eq!(StageKind::from_name(kind.name()), Some(kind));
            let names = kind.facts().consumes;
            assert_eq!(
                kind.consumes().count(),
                names.len(),
                "{names:?}: each consumed kind is registered"
            );
            // Where a dataset is generated, its stage's entry is where the files are.
            let providers = StageKind::ALL
                .into_iter()
                .filter(|p| p.dataset_root(Path::new("entry")).is_some());
            for provider in providers.filter(|_| kind.reads_dataset()) {
                assert!(
                    kind.consumes().any(|k| k == provider),
                    "{} reads the dataset, so it must consume {}, which generates one",
                    kind.name(),
                    provider.name()
                );
            }
            for consumed in kind.consumes() {
                assert!(
                    StageKind::ALL[..i].contains(&consumed),
                    "{} consumes {}, which the registry lists after it",
                    kind.name(),
                    consumed.name()
                );
            }
        }
    }

    #[test]
    fn facts_come_from_the_stage_impls() {
        assert_eq!(
            StageKind::Train.consumed_output(),
            Some(mgat_train::MODEL_FILE)
        );
        assert_eq!(
            StageKind::Eval.consumed_output(),
            None,
            "nothing consumes metrics"
        );
        assert_eq!(
            StageKind::Synth.consumed_output(),
            None,
            "the lock pins a dataset"
        );
        assert!(StageKind::Train.resumes() && !StageKind::Eval.resumes());
        assert!(!StageKind::Synth.reads_dataset() && StageKind::Index.reads_dataset());
        let entry = Path::new("/cache/synth/k");
        assert_eq!(
            StageKind::Synth.dataset_root(entry),
            Some(mgat_synth::stage::dataset_root(entry))
        );
        assert_eq!(StageKind::Index.dataset_root(entry), None);
    }
}
