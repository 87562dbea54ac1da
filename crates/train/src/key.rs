//! What a train stage is keyed by besides its inputs' digests: the model and every setting of the training loop.
//! The trainer reads its settings from these structs alone, so a setting it uses cannot be missing from the key.

use crate::config::{Optimizer, Schedule};
use mgat_model::config::Precision;
use mgat_model::key::ModelKey;
use serde::{Deserialize, Serialize};

/// What a train stage reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainKey {
    pub model: ModelKey,
    pub train: TrainSettings,
}

/// The training loop: every setting of a spec's `train` section but where it runs (`device`) and with how many
/// decoding threads (`workers`), which change no output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub seed: u64,
    pub height: u32,
    pub width: u32,
    pub batch_size: u32,
    pub instances: u32,
    pub epochs: u32,
    pub iters_per_epoch: Option<u32>,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub warmup_epochs: u32,
    pub schedule: Schedule,
    pub lr_steps: Vec<u32>,
    pub lr_decay: f64,
    pub flip: bool,
    pub pad: u32,
    pub random_erasing: f64,
    pub precision: Precision,
}

impl Default for TrainSettings {
    /// The paper's setting: 256×128, P×K = 16×4, Adam at 3.5e-4 with 10 warm-up epochs, steps at 40 and 70.
    fn default() -> Self {
        Self {
            seed: 1,
            height: 256,
            width: 128,
            batch_size: 64,
            instances: 4,
            epochs: 120,
            iters_per_epoch: None,
            optimizer: Optimizer::Adam,
            lr: 3.5e-4,
            weight_decay: 5e-4,
            momentum: 0.9,
            warmup_epochs: 10,
            schedule: Schedule::Step,
            lr_steps: vec![40, 70],
            lr_decay: 0.1,
            flip: true,
            pad: 10,
            random_erasing: 0.5,
            precision: Precision::Fp32,
        }
    }
}
