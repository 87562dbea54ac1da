//! Per-kind key configurations: exactly the settings each stage kind reads, and nothing else. The plan builds them
//! from a cell's configuration and hashes them into the stage key; the stage runners read their settings back from
//! these structs (not from the cell), so a setting a stage uses cannot be missing from its key without the compiler
//! noticing. Deliberately outside every key: where a stage runs (`train.device`) and with how many decoding threads
//! (`train.workers`), which change no output.

use crate::data::Format;
use crate::data::synth::SynthParams;
use crate::spec::RunConfig;
use crate::spec::config::{
    Backbone, EvalConfig, GraphInput, GraphNorm, Head, ModelConfig, Optimizer, Precision, Schedule,
    TrainConfig,
};
use serde::{Deserialize, Serialize};

/// The configuration part of a stage key, by kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum StageConfig {
    Synth(SynthParams),
    Index { format: Format },
    Train(TrainKey),
    Eval(EvalKey),
}

/// What a train stage reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainKey {
    pub model: ModelKey,
    pub train: TrainSettings,
}

/// The network and its losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelKey {
    pub backbone: Backbone,
    pub width: u32,
    pub last_stride: u32,
    pub bnneck: bool,
    /// `sha256:…` of the pretrained checkpoint (its content, not its path); none for random initialisation.
    pub pretrained_sha256: Option<String>,
    pub head: HeadKey,
    pub label_smoothing: f64,
    pub triplet_weight: f64,
    pub triplet_margin: f64,
}

/// The graph head: the baseline reads none of its settings, plain GAT all but the mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum HeadKey {
    None,
    Gat(GraphKey),
    Mgat { graph: GraphKey, mask: bool },
}

/// The settings of a graph head (GAT or MGAT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphKey {
    pub input: GraphInput,
    pub norm: GraphNorm,
    pub gamma: f64,
    pub squared_distance: bool,
    pub weight: bool,
    pub residual: bool,
    pub of_weight: f64,
    pub id_loss_on_x: bool,
}

/// The training loop: everything in `train` but `device` and `workers`.
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

/// What an eval stage reads besides the trained model (whose train key is upstream of it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalKey {
    pub eval: EvalConfig,
}

impl TrainKey {
    /// The train key of a cell; `pretrained_sha256` is the checkpoint's digest when the cell names one.
    pub fn of(config: &RunConfig, pretrained_sha256: Option<String>) -> Self {
        Self {
            model: ModelKey::of(&config.model, pretrained_sha256),
            train: TrainSettings::from(&config.train),
        }
    }
}

impl ModelKey {
    pub fn of(m: &ModelConfig, pretrained_sha256: Option<String>) -> Self {
        let graph = GraphKey {
            input: m.graph_input,
            norm: m.graph_norm,
            gamma: m.gamma,
            squared_distance: m.squared_distance,
            weight: m.weight,
            residual: m.residual,
            of_weight: m.of_weight,
            id_loss_on_x: m.id_loss_on_x,
        };
        Self {
            backbone: m.backbone,
            width: m.width,
            last_stride: m.last_stride,
            bnneck: m.bnneck,
            pretrained_sha256,
            head: match m.head {
                Head::None => HeadKey::None,
                Head::Gat => HeadKey::Gat(graph),
                Head::Mgat => HeadKey::Mgat {
                    graph,
                    mask: m.mask,
                },
            },
            label_smoothing: m.label_smoothing,
            triplet_weight: m.triplet_weight,
            triplet_margin: m.triplet_margin,
        }
    }

    /// The graph head's settings, and whether it masks by identity; None for the baseline.
    pub fn graph(&self) -> Option<(&GraphKey, bool)> {
        match &self.head {
            HeadKey::None => None,
            HeadKey::Gat(g) => Some((g, false)),
            HeadKey::Mgat { graph, mask } => Some((graph, *mask)),
        }
    }
}

impl From<&TrainConfig> for TrainSettings {
    fn from(t: &TrainConfig) -> Self {
        Self {
            seed: t.seed,
            height: t.height,
            width: t.width,
            batch_size: t.batch_size,
            instances: t.instances,
            epochs: t.epochs,
            iters_per_epoch: t.iters_per_epoch,
            optimizer: t.optimizer,
            lr: t.lr,
            weight_decay: t.weight_decay,
            momentum: t.momentum,
            warmup_epochs: t.warmup_epochs,
            schedule: t.schedule,
            lr_steps: t.lr_steps.clone(),
            lr_decay: t.lr_decay,
            flip: t.flip,
            pad: t.pad,
            random_erasing: t.random_erasing,
            precision: t.precision,
        }
    }
}

impl Default for TrainSettings {
    /// The paper's setting, as `train:` defaults to.
    fn default() -> Self {
        Self::from(&TrainConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_key_holds_no_head_settings_and_gat_no_mask() {
        let mut m = ModelConfig {
            head: Head::None,
            ..ModelConfig::default()
        };
        let baseline = ModelKey::of(&m, None);
        m.gamma = 7.0;
        m.id_loss_on_x = true;
        assert_eq!(
            ModelKey::of(&m, None),
            baseline,
            "gamma and id_loss_on_x are unread by the baseline"
        );
        m.head = Head::Gat;
        let gat = ModelKey::of(&m, None);
        m.mask = !m.mask;
        assert_eq!(ModelKey::of(&m, None), gat, "plain GAT reads no mask");
        m.head = Head::Mgat;
        let mgat = ModelKey::of(&m, None);
        m.mask = !m.mask;
        assert_ne!(ModelKey::of(&m, None), mgat);
    }

    #[test]
    fn device_and_workers_are_in_no_key() {
        let t = TrainConfig::default();
        let other = TrainConfig {
            device: "cpu".into(),
            workers: 1,
            ..t.clone()
        };
        assert_eq!(TrainSettings::from(&t), TrainSettings::from(&other));
        let json = serde_json::to_string(&TrainSettings::from(&t)).unwrap();
        assert!(
            !json.contains("device") && !json.contains("workers"),
            "{json}"
        );
    }
}
