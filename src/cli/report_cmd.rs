//! `mgat report` (regenerate a spec's results, tables and figures from the cache; render the paper's tables) and
//! `mgat diff` (compare results between git revisions).

use super::run_cmd::{SetArgs, plan_cell};
use super::{Context, UsageError};
use crate::plan::Plan;
use crate::report::diff::{Side, compare};
use crate::report::paper::{
    Committed, KnownNames, PAPER_FILE, PAPER_REPORT, PaperTables, Verdict, render,
};
use crate::report::results::RESULTS_FILE;
use crate::report::{ReportError, write_index, write_spec_report};
use crate::spec::Spec;
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Specs whose reports/<name>/ to regenerate from the cache.
    #[arg(required_unless_present = "paper")]
    specs: Vec<PathBuf>,
    /// Render reports/paper.yaml against the committed results into reports/paper.md and print it.
    #[arg(long)]
    paper: bool,
    /// With --paper: exit 1 when a reproduced value with a reported value is outside its tolerance.
    #[arg(long, requires = "paper")]
    check: bool,
}

#[derive(Args, Debug)]
pub struct RankArgs {
    /// The spec the cell is in.
    spec: PathBuf,
    /// The cell's name as `mgat plan` lists it.
    #[arg(long)]
    cell: String,
    /// Where to write the PNG.
    #[arg(long, short, default_value = "ranked.png")]
    out: PathBuf,
    #[command(flatten)]
    overrides: SetArgs,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Base revision [default: HEAD].
    rev_a: Option<String>,
    /// Revision to compare with the base [default: the working tree].
    rev_b: Option<String>,
    /// Only this spec's results (its `name`).
    #[arg(long, value_name = "NAME")]
    spec: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Md,
    Json,
}

pub fn report(ctx: &Context, args: ReportArgs) -> Result<ExitCode> {
    if !args.specs.is_empty() {
        let (specs, plan, _lock) = super::run_cmd::load_plan(ctx, &args.specs, &[], false)?;
        write_reports(ctx, &specs, &plan, &ctx.project.reports())?;
    }
    if !args.paper {
        return Ok(ExitCode::SUCCESS);
    }
    let reports = ctx.project.reports();
    let paper = PaperTables::load(&reports.join(PAPER_FILE))?;
    // Every report's results: their datasets are names paper.yaml may use.
    let committed = Committed::read(&reports, &|_| true);
    paper.check_names(&known_names(ctx, &committed)?)?;
    let compared = paper.compare_committed(&committed)?;
    let text = render(&paper, &compared);
    let out = reports.join(PAPER_REPORT);
    mgat_util::fsio::write_atomic(&out, text.as_bytes())?;
    write_index(&reports, Some((&paper, &compared)))?;
    print!("{text}");
    let outside = compared
        .iter()
        .flatten()
        .filter(|c| c.verdict == Verdict::Outside)
        .count();
    eprintln!(
        "wrote {}; {outside} value(s) outside tolerance",
        out.display()
    );
    Ok(if args.check && outside > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The spec and dataset names paper.yaml may use: the `name:` of every spec under `experiments/` and every folder
/// under `reports/`; every dataset in datasets.lock (when there is one), that a cell of those specs names, or that a
/// row of the `committed` results names.
fn known_names(ctx: &Context, committed: &Committed) -> Result<KnownNames> {
    let spec_paths = match ctx.project.spec_files() {
        Err(e) if e.is_not_found() => Vec::new(),
        listed => listed?,
    };
    let specs = Spec::load_all(&spec_paths, &[])?;
    let report_dirs: Vec<std::path::PathBuf> = std::fs::read_dir(ctx.project.reports())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    let reports = report_dirs
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
    let reported = committed.datasets().map(str::to_string);
    let locked: Vec<String> = match ctx.lock_path.exists() {
        true => ctx.load_lock()?.names().map(str::to_string).collect(),
        false => Vec::new(),
    };
    let named = specs
        .iter()
        .flat_map(|s| &s.cells)
        .map(|c| c.config.dataset.name.clone());
    let sorted = |names: Vec<String>| {
        let mut names = names;
        names.sort();
        names.dedup();
        names
    };
    Ok(KnownNames {
        specs: sorted(
            specs
                .iter()
                .map(|s| s.name.clone())
                .chain(reports)
                .collect(),
        ),
        datasets: sorted(locked.into_iter().chain(named).chain(reported).collect()),
        cells: specs
            .iter()
            .map(|s| {
                let cells = s.cells.iter().map(|c| serde_yaml::to_value(&c.config));
                Ok((s.name.clone(), cells.collect::<Result<_, _>>()?))
            })
            .collect::<Result<_, serde_yaml::Error>>()?,
    })
}

/// Regenerates `reports/<name>/` for every spec of the plan and says what it wrote.
pub fn write_reports(
    ctx: &Context,
    specs: &[Spec],
    plan: &Plan,
    reports: &std::path::Path,
) -> Result<(), ReportError> {
    for (i, spec) in specs.iter().enumerate() {
        let written = write_spec_report(spec, i, plan, &ctx.cache, reports)?;
        let dir = reports.join(&spec.name);
        let shown = dir
            .strip_prefix(ctx.project.root())
            .unwrap_or(&dir)
            .display();
        if written.rows == 0 {
            println!("report {shown}/: no evaluated cells yet, nothing written");
        } else if written.unchanged {
            println!(
                "report {shown}/: {} cells, unchanged since rendered from the same inputs",
                written.rows
            );
        } else {
            println!(
                "report {shown}/: {} cells in {RESULTS_FILE}, {} files",
                written.rows,
                written.files.len()
            );
        }
        if !written.missing.is_empty() {
            println!(
                "  {} cells without eval results: {}",
                written.missing.len(),
                written.missing.join(" ")
            );
        }
    }
    let paper = PaperTables::compare_if_present(reports)?;
    write_index(reports, paper.as_ref().map(|(t, c)| (t, c.as_slice())))?;
    Ok(())
}

pub fn diff(ctx: &Context, args: DiffArgs) -> Result<ExitCode> {
    let a = Side::Rev(args.rev_a.unwrap_or_else(|| "HEAD".into()));
    let b = args.rev_b.map_or(Side::WorkingTree, Side::Rev);
    let load = |side: &Side| -> Result<_> {
        let mut all = side.load(ctx.project.root())?;
        if let Some(name) = &args.spec {
            all.retain(|n, _| n == name);
        }
        if all.is_empty() {
            let what = args
                .spec
                .as_ref()
                .map_or("reports/*/results.csv".to_string(), |n| {
                    format!("reports/{n}/results.csv")
                });
            return Err(UsageError(format!("{} has no {what}", side.label())).into());
        }
        Ok(all)
    };
    let (results_a, results_b) = (load(&a)?, load(&b)?);
    let mut diff = compare(&results_a, &results_b, args.spec.as_deref());
    diff.name_changed_files(ctx.project.root(), (&a, &results_a), (&b, &results_b));
    let (la, lb) = (a.label(), b.label());
    match args.format {
        Format::Table => print!("{}", diff.table(la, lb)),
        Format::Md => print!("{}", diff.markdown(la, lb)),
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&diff.json(la, lb)).unwrap_or_default()
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// `mgat rank`: a cell's ranked lists (the queries its evaluation picked: worst, median and best by average
/// precision) as one PNG, framed as on its report page.
pub fn rank(ctx: &Context, args: RankArgs) -> Result<ExitCode> {
    let (plan, c) = plan_cell(ctx, &args.spec, &args.overrides.set, &args.cell)?;
    let Some(lists) = crate::report::ranked::CellLists::read(&plan, &plan.cells[c], &ctx.cache)?
    else {
        return Err(UsageError(format!(
            "cell `{}` has not been evaluated in {} (run `mgat run {}` first)",
            args.cell,
            ctx.cache.root().display(),
            args.spec.display()
        ))
        .into());
    };
    let png = crate::report::ranked::png(&lists)?;
    mgat_util::fsio::write_atomic(&args.out, &png)?;
    let picks: Vec<String> = lists
        .lists
        .iter()
        .map(|l| format!("{} (AP {:.1}%)", l.pick.label(), l.ap * 100.0))
        .collect();
    println!("wrote {}: {}", args.out.display(), picks.join(", "));
    Ok(ExitCode::SUCCESS)
}
