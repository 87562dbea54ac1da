//! `mgat device check`: one training step on a device (and precision) against the same step in f64 on the CPU,
//! from the same weights and batch: the loss and every parameter's gradient, with exit code 1 outside tolerance.

use super::UsageError;
use crate::plan::keys::model_key;
use crate::spec::config::{Backbone, Head, ModelConfig, Precision};
use anyhow::Result;
use candle_core::{DType, Device};
use clap::{Args, Subcommand, ValueEnum};
use mgat_model::params::open_device;
use mgat_stage::DeviceChoice;
use mgat_train::check::{CheckBatch, Step, TensorDifference, compare, step};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Subcommand, Debug)]
pub enum DeviceCommand {
    /// Compare one training step on --device with the same step in f64 on the CPU.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceChoice,
    #[arg(long, value_enum, default_value_t = BackboneArg::Resnet50)]
    backbone: BackboneArg,
    /// Channels of the backbone's first stage.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=512))]
    channels: u32,
    /// Identities in the batch (P).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = bounded(2, 256))]
    ids: usize,
    /// Images per identity (K).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = bounded(2, 64))]
    instances: usize,
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = bounded(16, 2048))]
    height: usize,
    #[arg(long, default_value_t = 128, allow_negative_numbers = true, value_parser = bounded(16, 2048))]
    width: usize,
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// Largest relative difference of the loss and of any gradient's norm from f64 [default: 1e-3 for fp32, 5e-2 for
    /// bf16]; off the CPU, at least twice CPU f32's own difference.
    #[arg(long, allow_negative_numbers = true, value_parser = super::positive_number)]
    tolerance: Option<f64>,
    /// Seed of the weights and the batch.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// A size argument between `lo` and `hi` (a model and batch this check can allocate).
fn bounded(lo: i64, hi: i64) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| match s.trim().parse::<i64>() {
        Ok(n) if (lo..=hi).contains(&n) => usize::try_from(n).map_err(|e| e.to_string()),
        _ => Err(format!(
            "expected a whole number from {lo} to {hi}, got `{s}`"
        )),
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BackboneArg {
    Resnet18,
    Resnet34,
    Resnet50,
}

#[derive(Clone, Copy, Debug, PartialEq, ValueEnum)]
enum PrecisionArg {
    Fp32,
    Bf16,
}

pub fn run(cmd: DeviceCommand) -> Result<ExitCode> {
    match cmd {
        DeviceCommand::Check(args) => check(args),
    }
}

fn check(args: CheckArgs) -> Result<ExitCode> {
    if args.ids < 2 || args.instances < 2 || args.channels == 0 {
        return Err(UsageError(
            "--ids and --instances must be at least 2, --channels at least 1".into(),
        )
        .into());
    }
    let (dev, name) = open_device(args.device).map_err(|e| UsageError(e.to_string()))?;
    let precision = match args.precision {
        PrecisionArg::Fp32 => Precision::Fp32,
        PrecisionArg::Bf16 if dev.is_cpu() => {
            return Err(UsageError("--precision bf16 needs a CUDA device".into()).into());
        }
        PrecisionArg::Bf16 => Precision::Bf16,
    };
    let tolerance = args.tolerance.unwrap_or(if precision == Precision::Bf16 {
        5e-2
    } else {
        1e-3
    });
    let config = ModelConfig {
        backbone: match args.backbone {
            BackboneArg::Resnet18 => Backbone::Resnet18,
            BackboneArg::Resnet34 => Backbone::Resnet34,
            BackboneArg::Resnet50 => Backbone::Resnet50,
        },
        width: args.channels,
        bnneck: true,
        head: Head::Mgat,
        ..ModelConfig::default()
    };
    let model = model_key(&config, None);
    let batch = CheckBatch::random(args.seed, args.ids, args.instances, args.height, args.width);
    println!(
        "{:?} with {} channels, MGAT head and BN-neck; batch {}×{} at {}×{}; {name} {precision:?} against cpu f64",
        model.backbone, args.channels, args.ids, args.instances, args.height, args.width
    );
    let timed = |dev: &Device, dtype, precision| {
        let start = Instant::now();
        step(&model, precision, dev, dtype, &batch, args.seed)
            .map(|s| (s, start.elapsed().as_secs_f64()))
    };
    let (reference, t_ref) = timed(&Device::Cpu, DType::F64, Precision::Fp32)?;
    let (candidate, t_dev) = timed(&dev, DType::F32, precision)?;
    let worst = |step: &Step| -> Result<(f64, Vec<TensorDifference>)> {
        let diffs = compare(&reference, step).map_err(anyhow::Error::msg)?;
        let loss = (step.loss - reference.loss).abs() / reference.loss.abs().max(f64::MIN_POSITIVE);
        Ok((
            diffs.first().map_or(0.0, |d| d.norm_difference).max(loss),
            diffs,
        ))
    };
    let (device_worst, diffs) = worst(&candidate)?;
    println!(
        "loss {:.8} (cpu f64 {:.8}); step {t_dev:.2} s (cpu f64 {t_ref:.2} s)",
        candidate.loss, reference.loss
    );
    println!(
        "gradients of {} tensors, largest norm differences first:",
        diffs.len()
    );
    println!(
        "{:<34} {:>12} {:>12} {:>10} {:>10}",
        "tensor", "‖g‖ cpu f64", "‖g‖", "Δ‖g‖", "‖Δg‖"
    );
    for d in diffs.iter().take(8) {
        println!(
            "{:<34} {:>12.5e} {:>12.5e} {:>10.2e} {:>10.2e}",
            d.name, d.reference_norm, d.norm, d.norm_difference, d.difference
        );
    }
    // Off the CPU, the bound is also twice what CPU f32 itself differs from f64 on this model: a deep network at
    // random initialisation amplifies f32 rounding beyond 1e-3 whatever computes it (PyTorch's f32 too).
    let mut bound = tolerance;
    if !dev.is_cpu() {
        let (cpu_worst, _) = worst(&timed(&Device::Cpu, DType::F32, Precision::Fp32)?.0)?;
        println!("cpu f32 against cpu f64: largest relative difference {cpu_worst:.2e}");
        bound = bound.max(2.0 * cpu_worst);
    }
    let within = device_worst <= bound;
    println!(
        "{}: largest relative difference of the loss and the gradient norms {device_worst:.2e}, bound {bound:.2e}",
        if within {
            "within tolerance"
        } else {
            "OUTSIDE tolerance"
        }
    );
    Ok(if within {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
