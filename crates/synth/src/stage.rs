//! The synth stage kind: generates the synthetic dataset its key describes into its entry's `data/` folder.

use crate::{DATA_DIR, SynthParams, SynthSummary};
use mgat_stage::{DeviceChoice, Failure, Inputs, Placement, Produced, Progress, Stage};
use std::path::{Path, PathBuf};

pub struct Synth;

impl Stage for Synth {
    const KIND: &'static str = "synth";
    const CONSUMES: &'static [&'static str] = &[];
    /// The generated dataset, which `datasets.lock` pins.
    const RESULT_FILE: Option<&'static str> = None;
    const READS_DATASET: bool = false;
    const PER_DATASET: bool = true;
    type Key = SynthParams;
    type Summary = SynthSummary;

    fn run(
        params: &SynthParams,
        _: &Inputs,
        _: &Placement,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<Produced<SynthSummary>, Failure> {
        let images = crate::image_count(params, &Default::default());
        progress.set_length(images as u64);
        progress.set_message(format!("generating {images} images"));
        let summary = crate::generate(params, &dataset_root(out), &|| progress.advance(1))
            .map_err(Failure::computation)?;
        Ok(Produced {
            device: DeviceChoice::Cpu,
            summary,
        })
    }

    /// Where the dataset a synth entry generated lies.
    fn dataset_root(entry: &Path) -> Option<PathBuf> {
        Some(dataset_root(entry))
    }
}

/// Where the dataset a synth entry generated lies, for the stages that read it.
pub fn dataset_root(entry: &Path) -> PathBuf {
    entry.join(DATA_DIR)
}
