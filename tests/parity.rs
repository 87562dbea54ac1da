//! Parity of the training maths with an independent PyTorch implementation (`scripts/torch-parity.py`): for the
//! baseline, plain GAT, MGAT as specified and its two open variants, one fixed batch through the quickstart-sized
//! network from the same initial weights gives the same loss terms and per-tensor gradient norms, and three Adam
//! steps give the same weights and BatchNorm statistics, to 1e-4 relative. Both sides compute in f64: in f32, Adam
//! turns gradients that are rounding noise (the BN-neck bias's at initialisation) into different full-size updates,
//! so f32 runs of one implementation differ from its own f64 run by 2% on such tensors; the f32 kernels are checked
//! against f64 by the op tests.
//!
//! The inputs (`tests/data/parity/init.safetensors`, `batch.safetensors`) are written by mgat:
//! `MGAT_PARITY_EXPORT=1 cargo test --release --test parity`; the expected values by the script, from them.

use candle_core::{DType, Device, Tensor};
use mgat::plan::keys::{ModelKey, TrainSettings, model_key, train_settings};
use mgat::spec::config::{
    Backbone, GraphInput, GraphNorm, Head, ModelConfig, Optimizer as Kind, TrainConfig,
};
use mgat_model::Network;
use mgat_model::params::Params;
use mgat_train::Losses;
use mgat_train::optim::Optimizer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const STEPS: usize = 3;
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 5e-4;
const TOLERANCE: f64 = 1e-4;
/// Identities × images of each in the batch, and its image size: the quickstart's model at a smaller batch.
const IDS: usize = 4;
const PER_ID: usize = 2;
const HEIGHT: usize = 64;
const WIDTH: usize = 32;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity")
}

/// The variants the script computes: (fixture name, head, graph input, graph normalisation, γ).
const VARIANTS: [(&str, Head, GraphInput, GraphNorm, f64); 5] = [
    (
        "none",
        Head::None,
        GraphInput::Backbone,
        GraphNorm::None,
        1.0,
    ),
    ("gat", Head::Gat, GraphInput::Backbone, GraphNorm::None, 1.0),
    (
        "mgat",
        Head::Mgat,
        GraphInput::Backbone,
        GraphNorm::None,
        1.0,
    ),
    (
        "mgat-bnneck",
        Head::Mgat,
        GraphInput::Bnneck,
        GraphNorm::None,
        2.0,
    ),
    (
        "mgat-l2",
        Head::Mgat,
        GraphInput::Backbone,
        GraphNorm::L2,
        10.0,
    ),
];

fn model(head: Head, input: GraphInput, norm: GraphNorm, gamma: f64) -> ModelKey {
    let cfg = ModelConfig {
        backbone: Backbone::Resnet18,
        width: 8,
        last_stride: 1,
        bnneck: true,
        head,
        gamma,
        mask: true,
        graph_input: input,
        graph_norm: norm,
        of_weight: 1.0,
        ..ModelConfig::default()
    };
    model_key(&cfg, None)
}

fn settings() -> TrainSettings {
    let cfg = TrainConfig {
        optimizer: Kind::Adam,
        lr: LR,
        weight_decay: WEIGHT_DECAY,
        ..TrainConfig::default()
    };
    train_settings(&cfg)
}

/// Every variant's network has the same backbone, BN-neck and classifier (no head weights), so one set of initial
/// weights serves all.
fn network(m: &ModelKey) -> (Params, Network) {
    let mut params = Params::new(Device::Cpu, DType::F64, 1);
    let net = Network::new(&mut params, m, IDS).expect("network");
    (params, net)
}

fn export() {
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap();
    let (params, _) = network(&model(
        Head::None,
        GraphInput::Backbone,
        GraphNorm::None,
        1.0,
    ));
    let init: HashMap<String, Tensor> = params
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect();
    mgat_model::params::save_tensors(&init, &dir.join("init.safetensors")).unwrap();
    let mut rng = mgat_util::rng::Rng::new(5, &[]);
    let pixels: Vec<f32> = (0..IDS * PER_ID * 3 * HEIGHT * WIDTH)
        .map(|_| rng.normal() as f32)
        .collect();
    let images = Tensor::from_vec(pixels, (IDS * PER_ID, 3, HEIGHT, WIDTH), &Device::Cpu).unwrap();
    // Identities interleaved, so that the mask is not block-diagonal in batch order.
    let labels: Vec<i64> = (0..IDS * PER_ID).map(|i| (i % IDS) as i64).collect();
    let labels = Tensor::from_vec(labels, IDS * PER_ID, &Device::Cpu).unwrap();
    let tensors = HashMap::from([
        ("images".to_string(), images),
        ("labels".to_string(), labels),
    ]);
    mgat_model::params::save_tensors(&tensors, &dir.join("batch.safetensors")).unwrap();
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn norm(t: &Tensor) -> f64 {
    scalar(
        &t.to_dtype(DType::F64)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap(),
    )
}

/// Records a comparison beyond the tolerance in `errors`, and the largest relative error seen in `worst`.
fn close(what: &str, ours: f64, theirs: f64, errors: &mut Vec<String>, worst: &mut f64) {
    let err = (ours - theirs).abs() / theirs.abs().max(1e-6);
    *worst = worst.max(err);
    if err > TOLERANCE {
        errors.push(format!(
            "{what}: mgat {ours:.8e}, torch {theirs:.8e} (relative {err:.2e})"
        ));
    }
}

#[test]
fn training_maths_match_pytorch() {
    if std::env::var_os("MGAT_PARITY_EXPORT").is_some() {
        export();
    }
    let dir = dir();
    let batch =
        candle_core::safetensors::load(dir.join("batch.safetensors"), &Device::Cpu).unwrap();
    let images = &batch["images"].to_dtype(DType::F64).unwrap();
    let labels = batch["labels"].to_dtype(DType::U32).unwrap();
    for (name, head, input, norm_kind, gamma) in VARIANTS {
        let m = model(head, input, norm_kind, gamma);
        let (params, net) = network(&m);
        params
            .load(&dir.join("init.safetensors"), |_| true)
            .unwrap();
        let expected =
            candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
                .unwrap_or_else(|e| panic!("{name}: run scripts/torch-parity.py ({e})"));
        let (mut errors, mut worst) = (Vec::new(), 0.0f64);
        let mut opt = Optimizer::new(&settings(), params.trainable()).unwrap();
        for step in 0..STEPS {
            let out = net.forward_train(images, &labels).unwrap();
            let losses = Losses::of(&net, &out, &labels, &m).unwrap();
            let grads = losses.total.backward().unwrap();
            if step == 0 {
                for (term, t) in [
                    ("total", &losses.total),
                    ("id", &losses.id),
                    ("of", &losses.of),
                ] {
                    close(
                        &format!("loss.{term}"),
                        scalar(t),
                        scalar(&expected[&format!("loss.{term}")]),
                        &mut errors,
                        &mut worst,
                    );
                }
                for (tensor, var) in params.named_trainable() {
                    let g = grads
                        .get(var.as_tensor())
                        .expect("every weight has a gradient");
                    close(
                        &format!("grad_norm.{tensor}"),
                        norm(g),
                        scalar(&expected[&format!("grad_norm.{tensor}")]),
                        &mut errors,
                        &mut worst,
                    );
                }
            }
            opt.step(&grads, LR).unwrap();
        }
        for (tensor, value) in params.tensors() {
            let theirs = &expected[&format!("step{STEPS}.{tensor}")];
            let diff = norm(&(value - theirs.to_dtype(DType::F64).unwrap()).unwrap());
            close(
                &format!("step{STEPS}.{tensor} (‖Δ‖/‖w‖)"),
                1.0 + diff / norm(theirs).max(1e-12),
                1.0,
                &mut errors,
                &mut worst,
            );
        }
        eprintln!("{name}: largest relative error {worst:.2e}");
        assert!(errors.is_empty(), "{name}:\n{}", errors.join("\n"));
    }
}
