//! `keys.json` beside `results.csv`: what every cell's stages were keyed by (kind, key, the full [`KeyInputs`]:
//! configuration fields, code fingerprint, dataset digest, upstream output digests), what each stage produced (the
//! digest of its result file), and which source files each kind's fingerprint covered. Written with the report,
//! byte-stable like it; read back from git by `mgat diff` and from the checkout by `mgat audit`, so that both can
//! say why a key moved without the cache.

use super::ReportError;
use super::results::ResultRow;
use crate::cache::Cache;
use crate::plan::reasons::{KeyChange, key_changes};
use crate::plan::{KeyInputs, Plan, StageKey, StageKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const KEYS_FILE: &str = "keys.json";
/// Bump when the file's layout changes.
pub(crate) const KEYS_FORMAT: u32 = 1;

/// One stage that a reported cell used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageRecord {
    pub kind: StageKind,
    pub inputs: KeyInputs,
    /// `sha256:…` of the stage's result file ([`StageKind::result_file`]); None for a synth stage (whose dataset
    /// is pinned by the lock digest).
    pub output: Option<String>,
}

/// The code a kind's fingerprint covered when the report was written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeRecord {
    pub fingerprint: String,
    /// Repository-relative source files whose token streams are in the fingerprint.
    pub files: Vec<String>,
}

/// The contents of `keys.json`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportKeys {
    pub format: u32,
    /// Per cell name, its stages' keys by kind.
    pub cells: BTreeMap<String, BTreeMap<StageKind, StageKey>>,
    /// Every stage some cell used, by key.
    pub stages: BTreeMap<StageKey, StageRecord>,
    /// Per kind used, the code its fingerprint covered.
    pub code: BTreeMap<StageKind, CodeRecord>,
}

/// Why keys.json cannot say why a stage's key moved: a side has no keys.json, or its keys.json does not record
/// that cell's stage (a cell or a stage kind added since).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unrecorded {
    NoKeysFile { old: bool, new: bool },
    NoStage { old: bool },
}

impl Unrecorded {
    /// The reason, with the sides named `old` and `new` (`A` and `B` in a diff).
    pub fn describe(self, old_name: &str, new_name: &str) -> String {
        match self {
            Unrecorded::NoKeysFile {
                old: true,
                new: true,
            } => "neither side has a keys.json to say why".into(),
            Unrecorded::NoKeysFile { old: true, .. } => {
                format!("{old_name} has no keys.json to say why")
            }
            Unrecorded::NoKeysFile { .. } => format!("{new_name} has no keys.json to say why"),
            Unrecorded::NoStage { old } => format!(
                "{}'s keys.json does not record this cell's stage",
                if old { old_name } else { new_name }
            ),
        }
    }
}

impl ReportKeys {
    /// The records of the cells named in `cells` (the rows of results.csv), from the plan's resolved keys and the
    /// cache's manifests.
    pub fn collect<'a>(
        plan: &Plan,
        spec_index: usize,
        cells: impl IntoIterator<Item = &'a str>,
        cache: &Cache,
    ) -> ReportKeys {
        let mut out = ReportKeys {
            format: KEYS_FORMAT,
            ..ReportKeys::default()
        };
        for name in cells {
            let Some(pc) = plan
                .cells
                .iter()
                .find(|pc| pc.spec == spec_index && pc.cell.name == name)
            else {
                continue;
            };
            let mut keys = BTreeMap::new();
            for &s in &pc.stages {
                let stage = &plan.stages[s];
                let Some(key) = &stage.key else { continue };
                keys.insert(stage.kind, key.clone());
                let output = stage
                    .kind
                    .result_file()
                    .and_then(|file| cache.output_digest(stage.kind, key, file));
                out.stages.insert(
                    key.clone(),
                    StageRecord {
                        kind: stage.kind,
                        inputs: stage.inputs.clone(),
                        output,
                    },
                );
                let code = stage.kind.code();
                out.code.insert(
                    stage.kind,
                    CodeRecord {
                        fingerprint: code.fingerprint.to_string(),
                        files: code.files.iter().map(|f| f.to_string()).collect(),
                    },
                );
            }
            out.cells.insert(name.to_string(), keys);
        }
        out
    }

    /// JSON with one line per cell, stage and kind, so that a git diff of the file shows which records changed.
    pub fn to_json(&self) -> Vec<u8> {
        fn section<K: Serialize, V: Serialize>(name: &str, map: &BTreeMap<K, V>) -> String {
            let lines: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    let key = serde_json::to_string(k).unwrap_or_default();
                    let value = serde_json::to_string(v).unwrap_or_default();
                    format!("    {key}: {value}")
                })
                .collect();
            format!("  \"{name}\": {{\n{}\n  }}", lines.join(",\n"))
        }
        format!(
            "{{\n  \"format\": {},\n{},\n{},\n{}\n}}\n",
            self.format,
            section("cells", &self.cells),
            section("stages", &self.stages),
            section("code", &self.code)
        )
        .into_bytes()
    }

    pub fn parse(bytes: &[u8], origin: &str) -> Result<ReportKeys, ReportError> {
        let keys: ReportKeys = serde_json::from_slice(bytes).map_err(|e| ReportError::Results {
            origin: origin.to_string(),
            message: format!("not a keys.json: {e}"),
        })?;
        if keys.format != KEYS_FORMAT {
            return Err(ReportError::Results {
                origin: origin.to_string(),
                message: format!(
                    "keys.json format {} (this mgat reads format {KEYS_FORMAT})",
                    keys.format
                ),
            });
        }
        Ok(keys)
    }

    /// Why each stage of `row`'s cell has another key in `new` than in `old`, upstream first: the typed reasons
    /// from both sides' key inputs, or `None` for a stage whose inputs a side did not record (then from the rows'
    /// train and eval keys alone).
    pub fn moved(
        old: (Option<&ReportKeys>, &ResultRow),
        new: (Option<&ReportKeys>, &ResultRow),
    ) -> Vec<(StageKind, Result<KeyChange, Unrecorded>)> {
        let cell = &new.1.cell;
        let mut out = Vec::new();
        let (Some(a), Some(b)) = (old.0, new.0) else {
            let missing = Unrecorded::NoKeysFile {
                old: old.0.is_none(),
                new: new.0.is_none(),
            };
            for (kind, ka, kb) in [
                (StageKind::Train, &old.1.train_key, &new.1.train_key),
                (StageKind::Eval, &old.1.eval_key, &new.1.eval_key),
            ] {
                if ka != kb {
                    out.push((kind, Err(missing)));
                }
            }
            return out;
        };
        for kind in StageKind::ALL {
            match (a.stage(cell, kind), b.stage(cell, kind)) {
                (Some((ka, ra)), Some((kb, rb))) if ka != kb => out.extend(
                    key_changes(&ra.inputs, &rb.inputs, &[])
                        .into_iter()
                        .map(|c| (kind, Ok(c))),
                ),
                (Some(_), None) | (None, Some(_)) => out.push((
                    kind,
                    Err(Unrecorded::NoStage {
                        old: a.stage(cell, kind).is_none(),
                    }),
                )),
                _ => {}
            }
        }
        out
    }

    /// The `keys.json` in report folder `dir`; None where the report has none (written before keys.json was).
    pub fn read_beside(dir: &Path) -> Result<Option<ReportKeys>, ReportError> {
        let path = dir.join(KEYS_FILE);
        match crate::inputfile::read_bounded(&path, crate::inputfile::limit::REPORT_FILE) {
            Ok(bytes) => Self::parse(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ReportError::unreadable(&path, e)),
        }
    }

    /// The record of `cell`'s stage of `kind`.
    pub fn stage(&self, cell: &str, kind: StageKind) -> Option<(&StageKey, &StageRecord)> {
        let key = self.cells.get(cell)?.get(&kind)?;
        Some((key, self.stages.get(key)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_another_format() {
        let k1 = crate::report::results::tests::test_key(1);
        let mut keys = ReportKeys {
            format: KEYS_FORMAT,
            ..ReportKeys::default()
        };
        keys.cells.insert(
            "head=none,seed=1".into(),
            BTreeMap::from([(StageKind::Index, k1.clone())]),
        );
        keys.stages.insert(
            k1.clone(),
            StageRecord {
                kind: StageKind::Index,
                inputs: KeyInputs::for_tests(StageKind::Index),
                output: Some("sha256:00".into()),
            },
        );
        let back = ReportKeys::parse(&keys.to_json(), "x").unwrap();
        assert_eq!(back, keys);
        assert_eq!(
            back.stage("head=none,seed=1", StageKind::Index)
                .map(|s| s.0),
            Some(&k1)
        );
        let other = String::from_utf8(keys.to_json())
            .unwrap()
            .replace("\"format\": 1", "\"format\": 9");
        let err = ReportKeys::parse(other.as_bytes(), "x").unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
        assert!(ReportKeys::parse(b"[]", "x").is_err());
    }

    #[test]
    fn a_key_that_moved_where_keys_json_lacks_the_stage_says_so_not_that_a_file_is_missing() {
        let row = |key: u64| {
            let mut row =
                crate::report::results::tests::table(&["model.head"], &[(&["none"], 1, 0.5, 0.3)])
                    .rows
                    .remove(0);
            row.train_key = crate::report::results::tests::test_key(key);
            row
        };
        let (a, b) = (row(1), row(2));
        let recorded = ReportKeys {
            format: KEYS_FORMAT,
            ..ReportKeys::default()
        };
        let moved = ReportKeys::moved((Some(&recorded), &a), (Some(&recorded), &b));
        assert!(moved.is_empty(), "neither side records the cell: {moved:?}");
        let mut with_train = recorded.clone();
        with_train.cells.insert(
            b.cell.clone(),
            BTreeMap::from([(StageKind::Train, b.train_key.clone())]),
        );
        with_train.stages.insert(
            b.train_key.clone(),
            StageRecord {
                kind: StageKind::Train,
                inputs: KeyInputs::for_tests(StageKind::Train),
                output: None,
            },
        );
        let moved = ReportKeys::moved((Some(&recorded), &a), (Some(&with_train), &b));
        let Err(missing) = moved[0].1 else {
            panic!("{moved:?}")
        };
        assert_eq!(
            missing.describe("A", "B"),
            "A's keys.json does not record this cell's stage"
        );
        let moved = ReportKeys::moved((None, &a), (Some(&with_train), &b));
        let Err(missing) = moved[0].1 else {
            panic!("{moved:?}")
        };
        assert_eq!(missing.describe("A", "B"), "A has no keys.json to say why");
    }
}
