//! `mgat weights inspect|convert`: what a checkpoint holds (tensor names, shapes, dtypes, the backbone it fits), and
//! a PyTorch `.pth` rewritten as safetensors.

use super::UsageError;
use anyhow::Result;
use candle_core::Device;
use clap::Subcommand;
use mgat_model::checkpoint::{self, Checkpoint};
use mgat_model::params::{ModelError, save_tensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum WeightsCommand {
    /// List a checkpoint's tensors (name, dtype, shape) and say which backbone it fits.
    Inspect {
        /// A safetensors or PyTorch .pth/.pt file.
        file: PathBuf,
        /// Only the summary, not every tensor.
        #[arg(long)]
        brief: bool,
    },
    /// Rewrite a checkpoint (e.g. torchvision's .pth) as safetensors, every tensor kept.
    Convert {
        input: PathBuf,
        /// Must not exist.
        output: PathBuf,
    },
}

pub fn run(cmd: WeightsCommand) -> Result<ExitCode> {
    match cmd {
        WeightsCommand::Inspect { file, brief } => inspect(&file, brief),
        WeightsCommand::Convert { input, output } => convert(&input, &output),
    }
}

fn read(path: &Path) -> Result<Checkpoint> {
    crate::inputfile::check_regular(path).map_err(|e| UsageError(e.to_string()))?;
    if !path.exists() {
        return Err(UsageError(format!("{}: no such file", path.display())).into());
    }
    checkpoint::read(path, &Device::Cpu).map_err(|e| match e {
        ModelError::Checkpoint { .. } => UsageError(e.to_string()).into(),
        other => other.into(),
    })
}

fn inspect(path: &Path, brief: bool) -> Result<ExitCode> {
    let ckpt = read(path)?;
    let elements: usize = ckpt.tensors.values().map(|t| t.elem_count()).sum();
    println!(
        "{}: {}, {} tensors, {} values",
        path.display(),
        ckpt.format.name(),
        ckpt.tensors.len(),
        elements
    );
    if !brief {
        let width = ckpt.tensors.keys().map(String::len).max().unwrap_or(0);
        for (name, t) in &ckpt.tensors {
            println!("  {name:width$}  {:?}  {:?}", t.dtype(), t.dims());
        }
    }
    match checkpoint::fit(&ckpt) {
        Some(fit) => {
            println!("backbone: {}", fit.describe());
            for (name, found, expected) in fit.wrong_shape.iter().take(5) {
                println!("  `{name}`: {found:?} in the file, {expected:?} in that backbone");
            }
            for name in fit.missing.iter().take(5) {
                println!("  `{name}`: missing");
            }
        }
        None => println!("backbone: none (no `conv1.weight`: not a torchvision-named ResNet)"),
    }
    Ok(ExitCode::SUCCESS)
}

fn convert(input: &Path, output: &Path) -> Result<ExitCode> {
    if output.exists() {
        return Err(UsageError(format!(
            "{}: exists; choose a new output file",
            output.display()
        ))
        .into());
    }
    let ckpt = read(input)?;
    let tensors: HashMap<String, candle_core::Tensor> = ckpt.tensors.into_iter().collect();
    save_tensors(&tensors, output)?;
    println!(
        "wrote {}: {} tensors from {}",
        output.display(),
        tensors.len(),
        input.display()
    );
    Ok(ExitCode::SUCCESS)
}
