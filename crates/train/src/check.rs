//! Device checks: one training step (forward and backward through backbone, graph head, BN-neck, classifier and
//! losses) on a device and precision, against the same step in f64 on the CPU from the same initial weights and the
//! same batch. What `mgat device check` prints, and the GPU check runs on CUDA.

use super::{Losses, TrainError};
use candle_core::{DType, Device, Tensor};
use mgat_model::Network;
use mgat_model::config::Precision;
use mgat_model::key::ModelKey;
use mgat_model::params::Params;
use mgat_util::rng::Rng;
use std::collections::BTreeMap;

/// A fixed batch: P identities × K images of standard-normal pixels.
pub struct CheckBatch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    pub shape: (usize, usize, usize, usize),
}

impl CheckBatch {
    pub fn random(seed: u64, p: usize, k: usize, height: usize, width: usize) -> Self {
        let mut rng = Rng::new(seed, &[0xc4ec]);
        let n = p * k;
        Self {
            images: (0..n * 3 * height * width)
                .map(|_| rng.normal() as f32)
                .collect(),
            labels: (0..n).map(|i| (i / k) as u32).collect(),
            shape: (n, 3, height, width),
        }
    }

    fn classes(&self) -> usize {
        self.labels.iter().max().map_or(1, |&l| l as usize + 1)
    }
}

/// The loss and every trainable tensor's gradient (f64, by name) after one step.
pub struct Step {
    pub loss: f64,
    pub grads: BTreeMap<String, Vec<f64>>,
}

/// One forward and backward pass of `model` on `batch`, with parameters in `dtype` on `device` and the given
/// precision for convolutions and matmuls; weights are seeded by `seed`, so equal seeds give equal weights.
pub fn step(
    model: &ModelKey,
    precision: Precision,
    device: &Device,
    dtype: DType,
    batch: &CheckBatch,
    seed: u64,
) -> Result<Step, TrainError> {
    let mut params = Params::new(device.clone(), dtype, seed);
    let mut net = Network::new(&mut params, model, batch.classes())?;
    net.set_precision(precision);
    let images = Tensor::from_slice(&batch.images, batch.shape, device)?.to_dtype(dtype)?;
    let labels = Tensor::from_slice(&batch.labels, batch.labels.len(), device)?;
    let outputs = net.forward_train(&images, &labels)?;
    let losses = Losses::of(&net, &outputs, &labels, model)?;
    let grads = losses.total.backward()?;
    let mut by_name = BTreeMap::new();
    for (name, var) in params.named_trainable() {
        if let Some(g) = grads.get(var.as_tensor()) {
            let values = g
                .to_dtype(DType::F64)?
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            by_name.insert(name.to_string(), values);
        }
    }
    let loss = losses.total.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    Ok(Step {
        loss,
        grads: by_name,
    })
}

/// How one gradient tensor differs from its reference.
#[derive(Debug, Clone)]
pub struct TensorDifference {
    pub name: String,
    pub reference_norm: f64,
    pub norm: f64,
    /// |‖g‖ − ‖g_ref‖| / ‖g_ref‖ (see [`compare`] for the denominator).
    pub norm_difference: f64,
    /// ‖g − g_ref‖ / ‖g_ref‖.
    pub difference: f64,
}

/// Every tensor's difference from the reference step, largest norm difference first; tensors missing on either
/// side are named in the error. Differences are relative to the tensor's reference norm, or to 1e-4 of the largest
/// reference norm when that is larger: a gradient that is numerically zero has no meaningful relative difference.
pub fn compare(reference: &Step, candidate: &Step) -> Result<Vec<TensorDifference>, String> {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let floor = 1e-4
        * reference
            .grads
            .values()
            .map(|g| norm(g))
            .fold(0.0, f64::max);
    let mut out = Vec::new();
    for (name, r) in &reference.grads {
        let c = candidate
            .grads
            .get(name)
            .ok_or_else(|| format!("no gradient for {name} on the device"))?;
        if c.len() != r.len() {
            return Err(format!(
                "{name}: {} gradient values on the device, {} on the CPU",
                c.len(),
                r.len()
            ));
        }
        let (rn, cn) = (norm(r), norm(c));
        let scale = rn.max(floor).max(f64::MIN_POSITIVE);
        let diff: Vec<f64> = r.iter().zip(c).map(|(a, b)| a - b).collect();
        out.push(TensorDifference {
            name: name.clone(),
            reference_norm: rn,
            norm: cn,
            norm_difference: (cn - rn).abs() / scale,
            difference: norm(&diff) / scale,
        });
    }
    if let Some(extra) = candidate
        .grads
        .keys()
        .find(|k| !reference.grads.contains_key(*k))
    {
        return Err(format!("{extra} has a gradient on the device only"));
    }
    out.sort_by(|a, b| b.norm_difference.total_cmp(&a.norm_difference));
    Ok(out)
}
