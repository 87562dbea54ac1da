//! The training loop: P×K batches through backbone, head and classifier; ID, OF and triplet losses; the optimiser
//! and schedule; a checkpoint after every epoch (weights, optimiser state, log) so that a killed run resumes and
//! reaches the same final weights; `model.safetensors` and `train_log.csv` at the end.

pub mod config;
pub mod key;

pub mod check;
pub mod data;
pub mod diagnostics;
pub mod loss;
pub mod optim;
pub mod stage;

use crate::key::TrainKey;
use candle_core::{DType, Device, Tensor};
pub use diagnostics::{Diagnostic, Diagnostics};
use mgat_data::DatasetIndex;
use mgat_data::image::ImageError;
use mgat_model::key::ModelKey;
use mgat_model::params::{ModelError, Params};
use mgat_model::{Network, Outputs};
use mgat_util::fsio::IoError;
use optim::{Optimizer, learning_rate};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use mgat_model::MODEL_FILE;
pub const LOG_FILE: &str = "train_log.csv";
const CHECKPOINT: &str = "checkpoint.json";

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("training diverged in epoch {epoch}: the loss is {loss}")]
    Diverged { epoch: u32, loss: f64 },
    #[error("epoch {epoch} had no batches (train.iters_per_epoch must be at least 1)")]
    NoBatches { epoch: u32 },
}

/// One row of `train_log.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    pub epoch: u32,
    pub lr: f64,
    pub loss: f64,
    pub id_loss: f64,
    pub of_loss: f64,
    pub triplet_loss: f64,
    pub accuracy: f64,
    #[serde(flatten)]
    pub diagnostics: Diagnostics,
    pub images_per_s: f64,
    pub seconds: f64,
}

/// The train stage's figures in its manifest: the last epoch's loss, accuracy and diagnostics, and time and speed
/// over all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub epochs: usize,
    pub final_loss: f64,
    pub final_id_loss: f64,
    pub final_accuracy: f64,
    /// None only for a run of no epochs.
    pub final_diagnostics: Option<Diagnostics>,
    pub train_seconds: f64,
    pub images_per_s: f64,
}

impl TrainSummary {
    pub fn of(log: &[EpochLog]) -> Self {
        let last = log.last();
        let seconds: f64 = log.iter().map(|e| e.seconds).sum();
        let images: f64 = log.iter().map(|e| e.images_per_s * e.seconds).sum();
        Self {
            epochs: log.len(),
            final_loss: last.map_or(f64::NAN, |e| e.loss),
            final_id_loss: last.map_or(f64::NAN, |e| e.id_loss),
            final_accuracy: last.map_or(f64::NAN, |e| e.accuracy),
            final_diagnostics: last.map(|e| e.diagnostics),
            train_seconds: seconds,
            images_per_s: images / seconds.max(1e-9),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    epochs_done: u32,
    steps: u64,
    weights: String,
    /// SHA-256 of the weights file, checked before resuming.
    weights_sha256: String,
    log: Vec<EpochLog>,
}

/// Progress reports: (batches done in all, total batches, latest epoch log if an epoch just ended).
pub type OnProgress<'a> = &'a (dyn Fn(u64, u64, Option<&EpochLog>) + Sync);

/// Trains on the index's training split (images of `dataset`, each read against its pinned digest), writing
/// checkpoints and results into `out`.
#[allow(clippy::too_many_arguments)]
pub fn train(
    key: &TrainKey,
    workers: u32,
    index: &DatasetIndex,
    dataset: &mgat_data::image::PinnedTree,
    out: &Path,
    device: &Device,
    pretrained: Option<&Path>,
    on_progress: OnProgress,
) -> Result<Vec<EpochLog>, TrainError> {
    let (m, t) = (&key.model, &key.train);
    let mut params = Params::new(device.clone(), DType::F32, t.seed);
    let mut net = Network::new(&mut params, m, index.num_train_pids)?;
    net.set_precision(t.precision);
    if let Some(path) = pretrained {
        check_weights(path, m.pretrained_sha256.as_deref())?;
        load_pretrained(&params, path)?;
    }
    let mut opt = Optimizer::new(t, params.trainable())?;
    let mut log = resume(out, &params, &mut opt)?;
    let batches_per_epoch = data::epoch_batches(t, &index.train, 0).len() as u64;
    let total = batches_per_epoch * u64::from(t.epochs);
    let (n, h, w) = (t.batch_size as usize, t.height as usize, t.width as usize);
    for epoch in log.len() as u32..t.epochs {
        let lr = learning_rate(t, epoch);
        let started = Instant::now();
        let mut sums = [0f64; 5];
        let mut diagnostics = Vec::new();
        let mut batches = 0u64;
        for batch in data::stream_epoch(dataset, &index.train, t, workers, epoch, 0) {
            let batch = batch?;
            let images = Tensor::from_vec(batch.images, (n, 3, h, w), device)?;
            let labels = Tensor::from_vec(batch.labels, n, device)?;
            let o = net.forward_train(&images, &labels)?;
            let losses = Losses::of(&net, &o, &labels, m)?;
            let value = f64::from(losses.total.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(TrainError::Diverged { epoch, loss: value });
            }
            opt.step(&losses.total.backward()?, lr)?;
            let (id, of, tri) = (&losses.id, &losses.of, &losses.triplet);
            let scalars = [
                value,
                f64::from(id.to_scalar::<f32>()?),
                f64::from(of.to_scalar::<f32>()?),
                f64::from(tri.to_scalar::<f32>()?),
                loss::accuracy(&o.logits, &labels)?,
            ];
            sums.iter_mut().zip(scalars).for_each(|(s, v)| *s += v);
            diagnostics.push(Diagnostics::of_batch(&o, &labels)?);
            batches += 1;
            on_progress(u64::from(epoch) * batches_per_epoch + batches, total, None);
        }
        let seconds = started.elapsed().as_secs_f64();
        let mean = |i: usize| sums[i] / batches.max(1) as f64;
        let row = EpochLog {
            epoch: epoch + 1,
            lr,
            loss: mean(0),
            id_loss: mean(1),
            of_loss: mean(2),
            triplet_loss: mean(3),
            accuracy: mean(4),
            diagnostics: Diagnostics::mean(&diagnostics).ok_or(TrainError::NoBatches { epoch })?,
            images_per_s: (batches * n as u64) as f64 / seconds,
            seconds,
        };
        on_progress(u64::from(epoch + 1) * batches_per_epoch, total, Some(&row));
        log.push(row);
        save_checkpoint(out, &params, &opt, &log)?;
    }
    params.save(&out.join(MODEL_FILE))?;
    mgat_util::fsio::write_atomic(&out.join(LOG_FILE), log_csv(&log).as_bytes())?;
    remove_checkpoints(out)?;
    Ok(log)
}

/// The loss terms of one batch: ID cross-entropy on X' (plus on X with `id_loss_on_x`), the OF loss between the
/// graph's input G and X' (zero for the baseline), batch-hard triplet loss (zero when its weight is), and their weighted total.
pub struct Losses {
    pub total: Tensor,
    pub id: Tensor,
    pub of: Tensor,
    pub triplet: Tensor,
}

impl Losses {
    pub fn of(
        net: &Network,
        o: &Outputs,
        labels: &Tensor,
        m: &ModelKey,
    ) -> candle_core::Result<Self> {
        let zero = || Tensor::zeros((), o.features.dtype(), o.features.device());
        let mut id = loss::cross_entropy(&o.logits, labels, m.label_smoothing)?;
        if let Some(lx) = &o.logits_x {
            id = (id + loss::cross_entropy(lx, labels, m.label_smoothing)?)?;
        }
        let (of, of_weight) = match (&net.head, m.graph()) {
            (Some(_), Some((graph, _))) => {
                (loss::of_loss(&o.graph_input, &o.refined)?, graph.of_weight)
            }
            _ => (zero()?, 0.0),
        };
        let triplet = match m.triplet_weight > 0.0 {
            true => loss::triplet_hard(&o.features, labels, m.triplet_margin)?,
            false => zero()?,
        };
        let total = ((&id + (&of * of_weight)?)? + (&triplet * m.triplet_weight)?)?;
        Ok(Self {
            total,
            id,
            of,
            triplet,
        })
    }
}

/// Refuses pretrained weights whose content is not what the plan hashed into the key: the file may have changed
/// between planning and this run (hours later under Slurm).
/// Loads an ImageNet checkpoint (safetensors or `.pth`) into the backbone; head, BN-neck and classifier start fresh.
/// A file that does not fit says which backbone it looks like.
fn load_pretrained(params: &Params, path: &Path) -> Result<(), ModelError> {
    let ckpt = mgat_model::checkpoint::read(path, &params.device)?;
    let is_backbone = |name: &str| {
        name.starts_with("conv1") || name.starts_with("bn1") || name.starts_with("layer")
    };
    match params.load_from(&ckpt, is_backbone) {
        Ok(_) => Ok(()),
        Err(error @ (ModelError::Shape { .. } | ModelError::Missing { .. })) => {
            Err(ModelError::Misfit {
                error: Box::new(error),
                looks_like: mgat_model::checkpoint::fit(&ckpt).map_or_else(
                    || "no ResNet (it has no `conv1.weight`)".into(),
                    |f| f.describe(),
                ),
            })
        }
        Err(e) => Err(e),
    }
}

fn check_weights(path: &Path, expected: Option<&str>) -> Result<(), TrainError> {
    let (found, _) = mgat_util::digest::sha256_file(path).map_err(IoError::at(path))?;
    let found = mgat_util::digest::labelled(&found);
    match expected {
        Some(e) if e == found => Ok(()),
        _ => Err(TrainError::Model(ModelError::ChangedWeights {
            path: path.into(),
            found,
            expected: expected.unwrap_or("no weights").into(),
        })),
    }
}

/// Loads the last checkpoint in `out`, if any, returning the log of the epochs it covers.
fn resume(out: &Path, params: &Params, opt: &mut Optimizer) -> Result<Vec<EpochLog>, TrainError> {
    let path = out.join(CHECKPOINT);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(Vec::new());
    };
    // A checkpoint is used only when it is exactly what was written; anything else is discarded (training starts
    // over), never half-loaded.
    let usable = serde_json::from_str::<Checkpoint>(&text)
        .map_err(|e| format!("unreadable {CHECKPOINT}: {e}"))
        .and_then(|ckpt| {
            let weights = out.join(&ckpt.weights);
            match mgat_util::digest::sha256_file(&weights) {
                Ok((sha, _)) if sha == ckpt.weights_sha256 => Ok(ckpt),
                Ok(_) => Err(format!(
                    "{} differs from the digest in {CHECKPOINT}",
                    weights.display()
                )),
                Err(e) => Err(format!("{}: {e}", weights.display())),
            }
        });
    let ckpt = match usable {
        Ok(ckpt) => ckpt,
        Err(why) => {
            tracing::warn!(
                "{}: checkpoint unusable ({why}); training starts over",
                out.display()
            );
            remove_checkpoints(out)?;
            return Ok(Vec::new());
        }
    };
    let weights = out.join(&ckpt.weights);
    params.load(&weights, |_| true)?;
    let state = candle_core::safetensors::load(&weights, &params.device)?;
    opt.restore(&state, ckpt.steps)?;
    tracing::info!(
        "resuming training after epoch {} from {}",
        ckpt.epochs_done,
        weights.display()
    );
    Ok(ckpt.log)
}

/// Writes weights and optimiser state to `ckpt-E.safetensors`, then points `checkpoint.json` at it (atomically),
/// then removes older checkpoints: a kill at any moment leaves a consistent checkpoint.
fn save_checkpoint(
    out: &Path,
    params: &Params,
    opt: &Optimizer,
    log: &[EpochLog],
) -> Result<(), TrainError> {
    let epochs_done = log.len() as u32;
    let weights = format!("ckpt-{epochs_done}.safetensors");
    let mut tensors = params.tensors();
    tensors.extend(opt.state());
    mgat_model::params::save_tensors(&tensors, &out.join(&weights))?;
    let (weights_sha256, _) = mgat_util::digest::sha256_file(&out.join(&weights))
        .map_err(IoError::at(&out.join(&weights)))?;
    let ckpt = Checkpoint {
        epochs_done,
        steps: opt.steps(),
        weights: weights.clone(),
        weights_sha256,
        log: log.to_vec(),
    };
    let json = serde_json::to_vec_pretty(&ckpt).map_err(|e| {
        TrainError::Io(IoError::new(out.join(CHECKPOINT), std::io::Error::other(e)))
    })?;
    mgat_util::fsio::write_atomic(&out.join(CHECKPOINT), &json)?;
    for (name, path) in checkpoint_files(out)? {
        if name.starts_with("ckpt-") && name != weights {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

fn remove_checkpoints(out: &Path) -> Result<(), TrainError> {
    for (_, path) in checkpoint_files(out)? {
        std::fs::remove_file(&path).map_err(|source| TrainError::Io(IoError::new(path, source)))?;
    }
    Ok(())
}

/// Checkpoint files in `out` (weights `ckpt-E.safetensors`, `checkpoint.json`) and temporaries a killed write left,
/// by name.
fn checkpoint_files(out: &Path) -> Result<Vec<(String, PathBuf)>, TrainError> {
    let entries =
        std::fs::read_dir(out).map_err(|source| TrainError::Io(IoError::new(out, source)))?;
    Ok(entries
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| {
            name.starts_with("ckpt-")
                || name.starts_with(CHECKPOINT)
                || mgat_util::fsio::is_temporary(name)
        })
        .collect())
}

/// `train_log.csv`: one row per epoch.
pub fn log_csv(log: &[EpochLog]) -> String {
    let names: Vec<&str> = LogColumn::ALL.iter().map(|c| c.name()).collect();
    let mut out = names.join(",") + "\n";
    let optional = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in log {
        let fields: Vec<String> = LogColumn::ALL
            .iter()
            .map(|column| match column {
                LogColumn::Epoch => r.epoch.to_string(),
                LogColumn::Lr => format!("{:.6e}", r.lr),
                LogColumn::Loss => format!("{:.6}", r.loss),
                LogColumn::IdLoss => format!("{:.6}", r.id_loss),
                LogColumn::OfLoss => format!("{:.6}", r.of_loss),
                LogColumn::TripletLoss => format!("{:.6}", r.triplet_loss),
                LogColumn::Accuracy => format!("{:.6}", r.accuracy),
                LogColumn::Diagnostic(d) => optional(d.of(&r.diagnostics)),
                LogColumn::ImagesPerS => format!("{:.1}", r.images_per_s),
                LogColumn::Seconds => format!("{:.2}", r.seconds),
            })
            .collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

/// Parses `train_log.csv` as [`log_csv`] writes it: the header must name [`LogColumn::ALL`] in order.
pub fn parse_log_csv(text: &str) -> Result<Vec<EpochLog>, String> {
    let mut lines = text.lines();
    let names: Vec<&str> = LogColumn::ALL.iter().map(|c| c.name()).collect();
    let header = lines.next().unwrap_or_default();
    if header != names.join(",") {
        return Err(format!(
            "the header is `{header}`, expected `{}`",
            names.join(",")
        ));
    }
    lines
        .enumerate()
        .map(|(i, line)| parse_log_row(line).map_err(|e| format!("line {}: {e}", i + 2)))
        .collect()
}

fn parse_log_row(line: &str) -> Result<EpochLog, String> {
    let fields: Vec<&str> = line.split(',').collect();
    if fields.len() != LogColumn::ALL.len() {
        return Err(format!(
            "{} fields, expected {}",
            fields.len(),
            LogColumn::ALL.len()
        ));
    }
    let field = |c: LogColumn| {
        fields[LogColumn::ALL
            .iter()
            .position(|&x| x == c)
            .unwrap_or_default()]
    };
    let number = |c: LogColumn| {
        field(c)
            .parse::<f64>()
            .map_err(|_| format!("{} is `{}`, not a number", c.name(), field(c)))
    };
    let optional = |c: LogColumn| match field(c) {
        "" => Ok(None),
        _ => number(c).map(Some),
    };
    let diagnostic = |d: Diagnostic| number(LogColumn::Diagnostic(d));
    Ok(EpochLog {
        epoch: field(LogColumn::Epoch)
            .parse()
            .map_err(|_| format!("epoch is `{}`, not a count", field(LogColumn::Epoch)))?,
        lr: number(LogColumn::Lr)?,
        loss: number(LogColumn::Loss)?,
        id_loss: number(LogColumn::IdLoss)?,
        of_loss: number(LogColumn::OfLoss)?,
        triplet_loss: number(LogColumn::TripletLoss)?,
        accuracy: number(LogColumn::Accuracy)?,
        diagnostics: Diagnostics {
            feature_norm: diagnostic(Diagnostic::FeatureNorm)?,
            refined_norm: diagnostic(Diagnostic::RefinedNorm)?,
            same_identity_attention: optional(LogColumn::Diagnostic(
                Diagnostic::SameIdentityAttention,
            ))?,
            offdiag_attention: optional(LogColumn::Diagnostic(Diagnostic::OffdiagAttention))?,
            graph_change: diagnostic(Diagnostic::GraphChange)?,
            graph_cosine: diagnostic(Diagnostic::GraphCosine)?,
        },
        images_per_s: number(LogColumn::ImagesPerS)?,
        seconds: number(LogColumn::Seconds)?,
    })
}

/// The columns of `train_log.csv`, in file order: the one contract between the trainer that writes it and
/// everything that reads it (the report's figures, the benches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogColumn {
    Epoch,
    Lr,
    Loss,
    IdLoss,
    OfLoss,
    TripletLoss,
    Accuracy,
    Diagnostic(Diagnostic),
    ImagesPerS,
    Seconds,
}

impl LogColumn {
    pub const ALL: [LogColumn; 15] = [
        LogColumn::Epoch,
        LogColumn::Lr,
        LogColumn::Loss,
        LogColumn::IdLoss,
        LogColumn::OfLoss,
        LogColumn::TripletLoss,
        LogColumn::Accuracy,
        LogColumn::Diagnostic(Diagnostic::FeatureNorm),
        LogColumn::Diagnostic(Diagnostic::RefinedNorm),
        LogColumn::Diagnostic(Diagnostic::SameIdentityAttention),
        LogColumn::Diagnostic(Diagnostic::OffdiagAttention),
        LogColumn::Diagnostic(Diagnostic::GraphChange),
        LogColumn::Diagnostic(Diagnostic::GraphCosine),
        LogColumn::ImagesPerS,
        LogColumn::Seconds,
    ];

    /// The column's header in `train_log.csv`.
    pub fn name(self) -> &'static str {
        match self {
            LogColumn::Epoch => "epoch",
            LogColumn::Lr => "lr",
            LogColumn::Loss => "loss",
            LogColumn::IdLoss => "id_loss",
            LogColumn::OfLoss => "of_loss",
            LogColumn::TripletLoss => "triplet_loss",
            LogColumn::Accuracy => "accuracy",
            LogColumn::Diagnostic(d) => d.name(),
            LogColumn::ImagesPerS => "images_per_s",
            LogColumn::Seconds => "seconds",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_reads_back_what_it_wrote() {
        let epoch = |epoch, offdiag: Option<f64>| EpochLog {
            epoch,
            lr: 3.5e-4,
            loss: 1.25,
            id_loss: 0.75,
            of_loss: 0.125,
            triplet_loss: 0.375,
            accuracy: 0.5,
            diagnostics: Diagnostics {
                feature_norm: 6.5,
                refined_norm: 6.25,
                same_identity_attention: offdiag.map(|v| v / 2.0),
                offdiag_attention: offdiag,
                graph_change: 0.0625,
                graph_cosine: -0.375,
            },
            images_per_s: 1093.5,
            seconds: 12.25,
        };
        let log = vec![epoch(1, None), epoch(2, Some(0.5))];
        assert_eq!(parse_log_csv(&log_csv(&log)).unwrap(), log);
        let renamed = log_csv(&log).replacen("feature_norm", "norm", 1);
        assert!(parse_log_csv(&renamed).unwrap_err().contains("header"));
        let short = log_csv(&log).replace(",12.25\n", "\n");
        assert!(parse_log_csv(&short).unwrap_err().contains("line 2"));
    }
}
