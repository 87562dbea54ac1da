//! `mgat fingerprint [--json]`: each stage kind's code fingerprint and the repo-relative source files it covers,
//! so a user (or a script) can see which edits move which keys.

use crate::plan::StageKind;
use anyhow::Result;
use clap::Args;
use serde_json::{Map, Value, json};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct FingerprintArgs {
    /// `{"<kind>": {"fingerprint": "<hex>", "crates": […], "files": […]}, …}` instead of a listing.
    #[arg(long)]
    json: bool,
    /// This CPU's floating-point class (in train and eval keys) alone.
    #[arg(long, conflicts_with = "json")]
    cpu_class: bool,
}

pub fn fingerprint(args: FingerprintArgs) -> Result<ExitCode> {
    if args.json {
        let kinds: Map<String, Value> = StageKind::ALL
            .iter()
            .map(|kind| {
                let code = kind.code();
                let value = json!({"fingerprint": code.fingerprint, "crates": code.crates, "files": code.files});
                (kind.name().to_string(), value)
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&Value::Object(kinds))?);
        return Ok(ExitCode::SUCCESS);
    }
    if args.cpu_class {
        println!("{}", mgat_model::numerics::cpu_class());
        return Ok(ExitCode::SUCCESS);
    }
    for kind in StageKind::ALL {
        let code = kind.code();
        println!(
            "{:<6} {}  {} crates, {} files, {} external crates",
            kind.name(),
            code.fingerprint,
            code.crates.len(),
            code.files.len(),
            code.external.len()
        );
        println!("       {}", code.crates.join(" "));
    }
    println!(
        "train and eval keys also hold this CPU's floating-point class: {}",
        mgat_model::numerics::cpu_class()
    );
    Ok(ExitCode::SUCCESS)
}
