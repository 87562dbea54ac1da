//! The index stage kind: reads a dataset's folder in its layout and writes `index.json`; and the typed reader of
//! that file for the stages that consume it.

use crate::index::{INDEX_FILE, IndexSummary};
use crate::{DatasetIndex, Format};
use mgat_stage::{DeviceChoice, Failure, Inputs, Placement, Produced, Progress, Stage};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub struct Index;

/// An index stage's key: the layout its dataset is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexKey {
    pub format: Format,
}

impl Stage for Index {
    const KIND: &'static str = "index";
    const CONSUMES: &'static [&'static str] = &["synth"];
    const RESULT_FILE: Option<&'static str> = Some(INDEX_FILE);
    const PER_DATASET: bool = true;
    type Key = IndexKey;
    type Summary = IndexSummary;

    fn run(
        key: &IndexKey,
        inputs: &Inputs,
        _: &Placement,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<Produced<IndexSummary>, Failure> {
        progress.set_message("indexing".into());
        // A dataset the layout does not describe is the user's to fix.
        let summary = crate::index::write_index(key.format, &inputs.dataset_root, out)
            .map_err(Failure::bad_input)?;
        Ok(Produced {
            device: DeviceChoice::Cpu,
            summary,
        })
    }
}

/// The index an index entry holds (at `entry`), for the stages that consume it. One that does not parse is damage
/// the manifest check missed: a failure, not the user's input.
pub fn read_index(entry: &Path) -> Result<DatasetIndex, Failure> {
    let path = entry.join(INDEX_FILE);
    let bytes = mgat_util::fsio::read(&path).map_err(Failure::computation)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::computation(format!("{}: {e}", path.display())))
}
