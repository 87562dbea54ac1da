//! Per-kind key configurations: exactly the settings each stage kind reads, and nothing else. The key structs live
//! in the compute crates that read them (`mgat_model::key`, `mgat_train::key`, `mgat_eval::config`); this module
//! builds them from a cell's configuration, one function per kind, which the registry (`stages::registry`) names. Deliberately outside every key: where a stage runs (`train.device`) and
//! with how many decoding threads (`train.workers`), which change no output.

use crate::data::{Format, LockEntry};
use crate::spec::RunConfig;
use crate::spec::config::{Head, ModelConfig, TrainConfig};
use mgat_data::stage::IndexKey;
pub use mgat_eval::config::EvalKey;
pub use mgat_model::key::{GraphKey, HeadKey, ModelKey};
use mgat_synth::SynthParams;
pub use mgat_train::key::{TrainKey, TrainSettings};

/// What a cell's stage keys are built from: its configuration, its dataset's lock entry and the digest of the
/// pretrained checkpoint it names.
pub struct CellKeys<'a> {
    pub config: &'a RunConfig,
    pub dataset: &'a LockEntry,
    pub pretrained_sha256: Option<String>,
}

/// A synth key: the generator's parameters, for a synthetic dataset.
pub fn synth(cell: &CellKeys) -> Option<SynthParams> {
    match (cell.dataset.format, &cell.dataset.synth) {
        (Format::Synth, Some(params)) => Some(params.clone()),
        _ => None,
    }
}

/// An index key: the dataset's layout.
pub fn index(cell: &CellKeys) -> Option<IndexKey> {
    Some(IndexKey {
        format: cell.dataset.format,
    })
}

/// A train key: the model and the training settings.
pub fn train(cell: &CellKeys) -> Option<TrainKey> {
    Some(train_key(cell.config, cell.pretrained_sha256.clone()))
}

/// An eval key: the eval settings, the model it rebuilds and the input size it extracts at.
pub fn eval(cell: &CellKeys) -> Option<EvalKey> {
    let trained = train_key(cell.config, cell.pretrained_sha256.clone());
    Some(EvalKey {
        eval: cell.config.eval.clone(),
        model: trained.model,
        height: trained.train.height,
        width: trained.train.width,
    })
}

/// The train key of a cell; `pretrained_sha256` is the checkpoint's digest when the cell names one.
pub fn train_key(config: &RunConfig, pretrained_sha256: Option<String>) -> TrainKey {
    TrainKey {
        model: model_key(&config.model, pretrained_sha256),
        train: train_settings(&config.train),
    }
}

/// The model part of a train key.
pub fn model_key(m: &ModelConfig, pretrained_sha256: Option<String>) -> ModelKey {
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
    ModelKey {
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

/// The training settings of a cell: all of `train` but `device` and `workers`.
pub fn train_settings(t: &TrainConfig) -> TrainSettings {
    TrainSettings {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_key_holds_no_head_settings_and_gat_no_mask() {
        let mut m = ModelConfig {
            head: Head::None,
            ..ModelConfig::default()
        };
        let baseline = model_key(&m, None);
        m.gamma = 7.0;
        m.id_loss_on_x = true;
        assert_eq!(
            model_key(&m, None),
            baseline,
            "gamma and id_loss_on_x are unread by the baseline"
        );
        m.head = Head::Gat;
        let gat = model_key(&m, None);
        m.mask = !m.mask;
        assert_eq!(model_key(&m, None), gat, "plain GAT reads no mask");
        m.head = Head::Mgat;
        let mgat = model_key(&m, None);
        m.mask = !m.mask;
        assert_ne!(model_key(&m, None), mgat);
    }

    #[test]
    fn device_and_workers_are_in_no_key() {
        let t = TrainConfig::default();
        let other = TrainConfig {
            device: crate::spec::config::DeviceChoice::Cpu,
            workers: 1,
            ..t.clone()
        };
        assert_eq!(train_settings(&t), train_settings(&other));
        let json = serde_json::to_string(&train_settings(&t)).unwrap();
        assert!(
            !json.contains("device") && !json.contains("workers"),
            "{json}"
        );
    }

    #[test]
    fn every_train_field_is_in_the_key_or_a_documented_exclusion() {
        // `train:` fields that say where and how fast to compute, never what: the only ones outside the key.
        const EXCLUDED: [&str; 2] = ["device", "workers"];
        let fields = |v: serde_json::Value| -> Vec<String> {
            let mut names: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            names.sort();
            names
        };
        let config = fields(serde_json::to_value(TrainConfig::default()).unwrap());
        let mut keyed = fields(serde_json::to_value(TrainSettings::default()).unwrap());
        keyed.extend(EXCLUDED.iter().map(|s| s.to_string()));
        keyed.sort();
        assert_eq!(
            config, keyed,
            "a train field is in neither the key nor the exclusions"
        );
        assert_eq!(
            train_settings(&TrainConfig::default()),
            TrainSettings::default(),
            "train: defaults to the key's paper setting"
        );
    }
}
