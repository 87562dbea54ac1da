//! The configuration of one run (`base` in a spec, and every grid cell once resolved): dataset, model, train and
//! eval sections, their paper defaults, and the range checks that make a configuration valid.

pub use mgat_stage::DeviceChoice;
use serde::{Deserialize, Serialize};

pub use mgat_eval::config::{EvalConfig, Metric, Protocol};
pub use mgat_model::config::{Backbone, GraphInput, GraphNorm, Head, Precision};
pub use mgat_train::config::{Optimizer, Schedule};

/// One run's full configuration. Every section has defaults (the paper's setting) except the dataset name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub dataset: DatasetConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
    #[serde(default)]
    pub eval: EvalConfig,
}

/// Which dataset a run reads: the name of an entry in `datasets.lock`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    pub name: String,
}

/// Backbone, head and loss settings. Defaults are the paper's setting: ResNet-50, MGAT with γ = 1, mask on, OF weight 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub backbone: Backbone,
    /// Channels of the first stage (64 is torchvision's ResNet).
    pub width: u32,
    pub last_stride: u32,
    pub bnneck: bool,
    /// Path to a checkpoint in torchvision naming, safetensors or PyTorch `.pth` (relative to the project root;
    /// `${VAR}` expanded), or null for random initialisation.
    pub pretrained: Option<String>,
    pub head: Head,
    /// γ in a_ij = exp(−γ·e_ij).
    pub gamma: f64,
    /// The ±1 same-identity mask; only `mgat` reads it (`gat` is MGAT with the mask off).
    pub mask: bool,
    /// G, the graph's input: `backbone` (X) or `bnneck` (BN(X), needs `bnneck: true`).
    pub graph_input: GraphInput,
    /// `l2` runs the head on G/‖G‖.
    pub graph_norm: GraphNorm,
    /// Use the squared euclidean edge length instead of the plain one.
    pub squared_distance: bool,
    /// Learnable d×d weight in the node update.
    pub weight: bool,
    /// Residual connection X' + X in the node update.
    pub residual: bool,
    /// λ_of, the weight of the optimisation-feedback loss MSE(G, stopgrad(X')), G the (normalised) graph input.
    pub of_weight: f64,
    /// Also apply the ID loss to the backbone features X.
    pub id_loss_on_x: bool,
    pub label_smoothing: f64,
    pub triplet_weight: f64,
    pub triplet_margin: f64,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            backbone: Backbone::Resnet50,
            width: 64,
            last_stride: 1,
            bnneck: false,
            pretrained: None,
            head: Head::Mgat,
            gamma: 1.0,
            mask: true,
            graph_input: GraphInput::Backbone,
            graph_norm: GraphNorm::None,
            squared_distance: false,
            weight: false,
            residual: false,
            of_weight: 1.0,
            id_loss_on_x: false,
            label_smoothing: 0.0,
            triplet_weight: 0.0,
            triplet_margin: 0.3,
        }
    }
}

/// Sampling, augmentation, optimiser and schedule. Defaults follow the paper's setting (256×128, P×K = 16×4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// `auto`, `cpu`, `cuda` or `cuda:N`. Not part of the stage key: it says where to compute, not what.
    pub device: DeviceChoice,
    /// Set from the spec's `seeds` axis.
    pub seed: u64,
    pub height: u32,
    pub width: u32,
    /// Images per batch, P identities × K instances.
    pub batch_size: u32,
    /// K, images per identity in a batch.
    pub instances: u32,
    pub epochs: u32,
    /// Iterations per epoch; null means one pass over the training images.
    pub iters_per_epoch: Option<u32>,
    pub optimizer: Optimizer,
    pub lr: f64,
    pub weight_decay: f64,
    pub momentum: f64,
    pub warmup_epochs: u32,
    pub schedule: Schedule,
    /// Epochs at which a step schedule multiplies the learning rate by `lr_decay`.
    pub lr_steps: Vec<u32>,
    pub lr_decay: f64,
    pub flip: bool,
    /// Pixels of padding before a random crop back to size; 0 disables pad-and-crop.
    pub pad: u32,
    /// Probability of random erasing per image.
    pub random_erasing: f64,
    /// JPEG decoding threads. Not part of the stage key.
    pub workers: u32,
    /// fp32, or bf16: convolutions and the classifier's matmul in bfloat16 with fp32 master weights, optimiser state,
    /// BatchNorm, head and losses (CUDA only). Part of the train key: it changes the numbers.
    pub precision: Precision,
}

impl Default for TrainConfig {
    /// The paper's setting (the train key's default), on any device, with 4 decoding threads.
    fn default() -> Self {
        let s = mgat_train::key::TrainSettings::default();
        Self {
            device: DeviceChoice::Auto,
            seed: s.seed,
            height: s.height,
            width: s.width,
            batch_size: s.batch_size,
            instances: s.instances,
            epochs: s.epochs,
            iters_per_epoch: s.iters_per_epoch,
            optimizer: s.optimizer,
            lr: s.lr,
            weight_decay: s.weight_decay,
            momentum: s.momentum,
            warmup_epochs: s.warmup_epochs,
            schedule: s.schedule,
            lr_steps: s.lr_steps,
            lr_decay: s.lr_decay,
            flip: s.flip,
            pad: s.pad,
            random_erasing: s.random_erasing,
            precision: s.precision,
            workers: 4,
        }
    }
}

/// A value outside its allowed range: the dotted path of the field, the value as text, and what was expected.
#[derive(Debug, Clone, PartialEq)]
pub struct Invalid {
    pub path: &'static str,
    pub value: String,
    pub expected: String,
}

impl RunConfig {
    /// The paper's defaults on a dataset named `market1501`, for tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            dataset: DatasetConfig {
                name: "market1501".into(),
            },
            model: ModelConfig::default(),
            train: TrainConfig::default(),
            eval: EvalConfig::default(),
        }
    }

    /// Every range violation in this configuration, in field order.
    pub fn invalid_values(&self) -> Vec<Invalid> {
        let mut out = Vec::new();
        let mut check = |ok: bool, path: &'static str, value: String, expected: &str| {
            if !ok {
                out.push(Invalid {
                    path,
                    value,
                    expected: expected.to_string(),
                });
            }
        };
        let m = &self.model;
        let t = &self.train;
        let e = &self.eval;
        check(
            !self.dataset.name.trim().is_empty(),
            "dataset.name",
            self.dataset.name.clone(),
            "a dataset name from datasets.lock",
        );
        check(
            (1..=MAX_WIDTH).contains(&m.width),
            "model.width",
            m.width.to_string(),
            &format!("a channel count from 1 to {MAX_WIDTH} (ResNet-50 has 64)"),
        );
        check(
            m.last_stride == 1 || m.last_stride == 2,
            "model.last_stride",
            m.last_stride.to_string(),
            "1 or 2",
        );
        check(
            m.gamma > 0.0 && m.gamma.is_finite(),
            "model.gamma",
            m.gamma.to_string(),
            "a number > 0",
        );
        check(
            m.head == Head::None || m.graph_input == GraphInput::Backbone || m.bnneck,
            "model.graph_input",
            "bnneck".into(),
            "backbone unless model.bnneck is true",
        );
        check(
            is_nonneg(m.of_weight),
            "model.of_weight",
            m.of_weight.to_string(),
            "a weight >= 0",
        );
        check(
            (0.0..1.0).contains(&m.label_smoothing),
            "model.label_smoothing",
            m.label_smoothing.to_string(),
            "a number in [0, 1)",
        );
        check(
            is_nonneg(m.triplet_weight),
            "model.triplet_weight",
            m.triplet_weight.to_string(),
            "a weight >= 0",
        );
        check(
            is_nonneg(m.triplet_margin),
            "model.triplet_margin",
            m.triplet_margin.to_string(),
            "a margin >= 0",
        );
        check(
            (16..=MAX_SIDE).contains(&t.height),
            "train.height",
            t.height.to_string(),
            &format!("an image height from 16 to {MAX_SIDE} pixels"),
        );
        check(
            (16..=MAX_SIDE).contains(&t.width),
            "train.width",
            t.width.to_string(),
            &format!("an image width from 16 to {MAX_SIDE} pixels"),
        );
        check(
            (2..=MAX_BATCH).contains(&t.instances),
            "train.instances",
            t.instances.to_string(),
            &format!("K >= 2 images per identity (at most {MAX_BATCH})"),
        );
        check(
            t.instances >= 2
                && t.batch_size >= 2 * t.instances
                && t.batch_size <= MAX_BATCH
                && t.batch_size.is_multiple_of(t.instances),
            "train.batch_size",
            t.batch_size.to_string(),
            &format!(
                "P×K with K = train.instances = {}, P >= 2 and at most {MAX_BATCH} images",
                t.instances
            ),
        );
        check(
            !(t.precision == Precision::Bf16 && t.device == DeviceChoice::Cpu),
            "train.precision",
            "bf16".into(),
            "fp32 on train.device cpu (bf16 runs on CUDA only)",
        );
        check(
            (1..=MAX_EPOCHS).contains(&t.epochs),
            "train.epochs",
            t.epochs.to_string(),
            &format!("1 to {MAX_EPOCHS} epochs"),
        );
        check(
            t.pad <= t.height.min(t.width),
            "train.pad",
            t.pad.to_string(),
            "at most the image's smaller side in pixels",
        );
        check(
            t.iters_per_epoch != Some(0),
            "train.iters_per_epoch",
            "0".into(),
            "null or at least 1",
        );
        check(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            t.lr.to_string(),
            "a learning rate > 0",
        );
        check(
            is_nonneg(t.weight_decay),
            "train.weight_decay",
            t.weight_decay.to_string(),
            "a weight >= 0",
        );
        check(
            (0.0..1.0).contains(&t.momentum),
            "train.momentum",
            t.momentum.to_string(),
            "a momentum in [0, 1)",
        );
        check(
            t.warmup_epochs < t.epochs,
            "train.warmup_epochs",
            t.warmup_epochs.to_string(),
            "fewer warm-up epochs than train.epochs",
        );
        check(
            t.lr_decay > 0.0 && t.lr_decay <= 1.0,
            "train.lr_decay",
            t.lr_decay.to_string(),
            "a factor in (0, 1]",
        );
        check(
            t.lr_steps.windows(2).all(|w| w[0] < w[1]),
            "train.lr_steps",
            format!("{:?}", t.lr_steps),
            "strictly increasing epochs",
        );
        check(
            (0.0..=1.0).contains(&t.random_erasing),
            "train.random_erasing",
            t.random_erasing.to_string(),
            "a probability in [0, 1]",
        );
        check(
            (1..=MAX_WORKERS).contains(&t.workers),
            "train.workers",
            t.workers.to_string(),
            &format!("1 to {MAX_WORKERS} worker threads"),
        );
        check(
            (1..=MAX_RANK).contains(&e.max_rank),
            "eval.max_rank",
            e.max_rank.to_string(),
            &format!("a rank from 1 to {MAX_RANK}"),
        );
        check(
            (1..=MAX_BATCH).contains(&e.batch_size),
            "eval.batch_size",
            e.batch_size.to_string(),
            &format!("a batch size from 1 to {MAX_BATCH}"),
        );
        if let Some(r) = &e.rerank {
            check(
                (1..=MAX_NEIGHBOURS).contains(&r.k1),
                "eval.rerank.k1",
                r.k1.to_string(),
                &format!("1 to {MAX_NEIGHBOURS} neighbours"),
            );
            check(
                (1..=MAX_NEIGHBOURS).contains(&r.k2),
                "eval.rerank.k2",
                r.k2.to_string(),
                &format!("1 to {MAX_NEIGHBOURS} neighbours"),
            );
            check(
                r.k2 <= r.k1,
                "eval.rerank.k2",
                r.k2.to_string(),
                &format!(
                    "at most k1 ({}): query expansion averages over the k1 nearest",
                    r.k1
                ),
            );
            check(
                (0.0..=1.0).contains(&r.lambda),
                "eval.rerank.lambda",
                r.lambda.to_string(),
                "a weight in [0, 1]",
            );
        }
        if let Some(qe) = &e.query_expansion {
            check(
                (1..=MAX_NEIGHBOURS).contains(&qe.k),
                "eval.query_expansion.k",
                qe.k.to_string(),
                &format!("1 to {MAX_NEIGHBOURS} neighbours"),
            );
            check(
                is_nonneg(qe.alpha) && qe.alpha <= mgat_eval::query_expansion::MAX_ALPHA,
                "eval.query_expansion.alpha",
                qe.alpha.to_string(),
                &format!(
                    "an exponent from 0 to {}",
                    mgat_eval::query_expansion::MAX_ALPHA
                ),
            );
        }
        out
    }
}

/// Upper bounds that keep a valid spec within what a machine can allocate: a ResNet-50 at width 512 (8× the paper's)
/// on 2048-pixel images, or 4096-image batches, is already far beyond any GPU's memory; beyond these, sizes only
/// overflow or abort on allocation.
const MAX_WIDTH: u32 = 512;
const MAX_SIDE: u32 = 2048;
const MAX_BATCH: u32 = 4096;
const MAX_EPOCHS: u32 = 100_000;
const MAX_WORKERS: u32 = 256;
const MAX_RANK: u32 = 100_000;
/// Re-ranking's neighbour counts: the paper uses 20 and 6; a list per item of this many is still small.
const MAX_NEIGHBOURS: usize = 1000;

fn is_nonneg(x: f64) -> bool {
    x >= 0.0 && x.is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RunConfig {
        RunConfig::for_tests()
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().invalid_values(), vec![]);
    }

    #[test]
    fn each_range_violation_names_its_field() {
        type Mutation = fn(&mut RunConfig);
        let cases: Vec<(&str, Mutation)> = vec![
            ("model.gamma", |c| c.model.gamma = 0.0),
            ("model.of_weight", |c| c.model.of_weight = -0.5),
            ("train.instances", |c| c.train.instances = 1),
            ("train.batch_size", |c| c.train.batch_size = 30),
            ("model.last_stride", |c| c.model.last_stride = 3),
            ("model.graph_input", |c| {
                c.model.bnneck = false;
                c.model.graph_input = GraphInput::Bnneck;
            }),
            ("train.lr_steps", |c| c.train.lr_steps = vec![70, 40]),
            ("model.width", |c| c.model.width = 200_000),
            ("train.height", |c| c.train.height = 1_000_000),
            ("train.batch_size", |c| c.train.batch_size = 4_000_000_000),
            ("train.pad", |c| c.train.pad = 4_000_000_000),
            ("train.precision", |c| {
                c.train.device = DeviceChoice::Cpu;
                c.train.precision = Precision::Bf16;
            }),
            ("eval.rerank.k2", |c| {
                c.eval.rerank = Some(mgat_eval::rerank::Rerank {
                    k1: 5,
                    k2: 6,
                    lambda: 0.3,
                })
            }),
            ("eval.query_expansion.k", |c| {
                c.eval.query_expansion =
                    Some(mgat_eval::query_expansion::QueryExpansion { k: 0, alpha: 3.0 })
            }),
            ("eval.query_expansion.alpha", |c| {
                c.eval.query_expansion =
                    Some(mgat_eval::query_expansion::QueryExpansion { k: 5, alpha: -1.0 })
            }),
            ("eval.rerank.lambda", |c| {
                c.eval.rerank = Some(mgat_eval::rerank::Rerank {
                    k1: 20,
                    k2: 6,
                    lambda: 1.5,
                })
            }),
        ];
        for (path, mutate) in cases {
            let mut c = config();
            mutate(&mut c);
            let paths: Vec<_> = c.invalid_values().into_iter().map(|i| i.path).collect();
            assert!(paths.contains(&path), "{path} not reported, got {paths:?}");
        }
    }

    #[test]
    fn a_device_is_parsed_where_the_spec_is_and_cuda_is_cuda_0() {
        let device = |text: &str| serde_yaml::from_str::<TrainConfig>(text).map(|t| t.device);
        assert_eq!(device("device: cuda").unwrap(), DeviceChoice::Cuda(0));
        assert_eq!(device("device: cuda:1").unwrap(), DeviceChoice::Cuda(1));
        for bad in [
            "device: gpu",
            "device: 'cuda:'",
            "device: cuda:99999999999999999999",
        ] {
            let err = device(bad).unwrap_err().to_string();
            assert!(err.contains("is not a device"), "{bad}: {err}");
        }
    }
}
