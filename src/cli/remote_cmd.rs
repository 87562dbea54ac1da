//! `mgat cache push|pull|keygen` and `cache gc --remote`, and the remote options `run` and `plan` share: which
//! remote (`--remote`, else `MGAT_REMOTE`, else `.mgat/config.yaml`), whose signatures to trust, which key signs.

use super::{Context, UsageError};
use crate::cache::remote::config::RemoteConfig;
use crate::cache::remote::sign::SecretKey;
use crate::cache::remote::{
    Pulled, Pushed, Remote, RemoteError, RemoteUrl, Settings, TransferError,
};
use crate::plan::{Plan, StageKey, StageKind};
use anyhow::{Context as _, Result};
use clap::Args;
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which remote, and what a pull from it trusts.
#[derive(Args, Debug, Clone, Default)]
pub struct RemoteArgs {
    /// The remote: a folder, s3://BUCKET/PREFIX or https://HOST/PATH [default: $MGAT_REMOTE, else `remote:` in
    /// .mgat/config.yaml].
    #[arg(long, value_name = "URL")]
    remote: Option<String>,
    /// Accept pulled entries that are unsigned or signed by a key not in trusted_keys (their contents are still
    /// checked against their manifests).
    #[arg(long)]
    trust_unsigned: bool,
}

/// A run's remote: read through it, and push what the run computes with `--push`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunRemoteArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    /// Use no remote, whatever MGAT_REMOTE or .mgat/config.yaml say.
    #[arg(long, conflicts_with = "remote")]
    offline: bool,
    /// Push the entries this run computes to the remote, signed.
    #[arg(long)]
    push: bool,
    #[command(flatten)]
    sign: SignArgs,
}

/// Which key signs what is pushed.
#[derive(Args, Debug, Clone, Default)]
pub struct SignArgs {
    /// Secret key file to sign pushed entries with [default: $MGAT_SIGNING_KEY, else
    /// ~/.config/mgat/signing-key].
    #[arg(long, value_name = "FILE", conflicts_with = "unsigned")]
    signing_key: Option<PathBuf>,
    /// Push without signing (pulls then refuse the entries unless they pass --trust-unsigned).
    #[arg(long)]
    unsigned: bool,
}

impl RemoteArgs {
    /// The remote `url` names; empty means the one the environment or the config names.
    pub fn naming(url: String) -> RemoteArgs {
        RemoteArgs {
            remote: Some(url).filter(|u| !u.is_empty()),
            ..RemoteArgs::default()
        }
    }

    /// The remote named by the flag, the environment or the project config, if any.
    fn url(&self, ctx: &Context, config: &RemoteConfig) -> Result<Option<RemoteUrl>, RemoteError> {
        let named = self
            .remote
            .clone()
            .or_else(|| std::env::var("MGAT_REMOTE").ok().filter(|v| !v.is_empty()))
            .or_else(|| config.remote.clone());
        let cwd = std::env::current_dir().unwrap_or_else(|_| ctx.project.root().to_path_buf());
        named.map(|text| RemoteUrl::parse(&text, &cwd)).transpose()
    }

    /// The remote a command cannot do without: to push to (made a mgat remote if empty) or to pull from.
    pub fn require(&self, ctx: &Context, push: bool) -> Result<Remote> {
        self.connect(ctx, load_config(ctx)?, push)
    }

    /// [`RemoteArgs::require`] with the project config already read.
    fn connect(&self, ctx: &Context, config: RemoteConfig, push: bool) -> Result<Remote> {
        let url = self
            .url(ctx, &config)?
            .ok_or_else(|| RemoteError::NoRemote {
                config: config.file.display().to_string(),
            })?;
        let settings = self.settings(config);
        Ok(match push {
            true => Remote::open_for_push(&url, settings)?,
            false => Remote::open(&url, settings)?,
        })
    }

    fn settings(&self, config: RemoteConfig) -> Settings {
        Settings {
            timeout: config.timeout,
            endpoint: config.endpoint,
            trusted: config.trusted,
            trust_unsigned: self.trust_unsigned,
        }
    }
}

/// `.mgat/config.yaml` of the project, a bad one being the user's to fix (exit 2).
fn load_config(ctx: &Context) -> Result<RemoteConfig, UsageError> {
    RemoteConfig::load(ctx.project.root()).map_err(|e| UsageError(e.to_string()))
}

impl RunRemoteArgs {
    /// The same options using no remote; an error if the user named one or asked to push.
    pub fn offline(self, why: &str) -> Result<RunRemoteArgs, UsageError> {
        match self.remote.remote.is_some() || self.push {
            true => Err(UsageError(format!("--remote and --push: {why}"))),
            false => Ok(RunRemoteArgs {
                offline: true,
                ..self
            }),
        }
    }

    /// The remote a run reads through (and pushes to, with `--push`); None when none is named or, with a
    /// warning, when it cannot be reached: the run then computes locally. A malformed URL, missing credentials, a
    /// folder that is no mgat remote or `--push` without a signing key are errors, before anything runs.
    pub fn open(&self, ctx: &Context) -> Result<Option<RunRemote>> {
        if self.offline {
            return Ok(None);
        }
        let signer = match self.push {
            true => self.sign.key()?,
            false => None,
        };
        let config = load_config(ctx)?;
        if self.remote.url(ctx, &config)?.is_none() {
            return match self.push {
                true => Err(RemoteError::NoRemote {
                    config: config.file.display().to_string(),
                }
                .into()),
                false => Ok(None),
            };
        }
        match self.remote.connect(ctx, config, self.push) {
            Ok(remote) => Ok(Some(RunRemote {
                remote,
                push: self.push,
                signer,
            })),
            Err(e)
                if e.downcast_ref::<RemoteError>()
                    .is_some_and(|r| !r.is_bad_input()) =>
            {
                tracing::warn!("{e:#}; computing locally");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

/// The remote a run reads through, and what it pushes with.
pub struct RunRemote {
    pub remote: Remote,
    push: bool,
    signer: Option<SecretKey>,
}

impl RunRemote {
    /// Pulls what the run's selected stages can take from the remote; a remote that stops answering or an entry it
    /// serves wrong is a warning, and those stages are computed here.
    pub fn read_through(&self, ctx: &Context, plan: &mut Plan, selected: &[usize]) {
        match pull_plan(ctx, &self.remote, plan, selected) {
            Ok(tally) => tracing::info!("{}", tally.line(&self.remote)),
            Err(e) => tracing::warn!("{e}; computing the rest locally"),
        }
    }

    /// With `--push`, uploads the entries of `computed` (plan indices with resolved keys); a failure is an error
    /// after the run's reports are written.
    pub fn push_computed(&self, ctx: &Context, plan: &Plan, computed: &[usize]) -> Result<()> {
        if !self.push {
            return Ok(());
        }
        let entries: Vec<(StageKind, StageKey)> = computed
            .iter()
            .filter_map(|&s| Some((plan.stages[s].kind, plan.stages[s].key.clone()?)))
            .collect();
        let (mut uploaded, mut bytes) = (0, 0);
        for pushed in self
            .remote
            .push_all(&ctx.cache, &entries, self.signer.as_ref(), &|| {})
        {
            if let Pushed::Uploaded { bytes: n, .. } = pushed? {
                uploaded += 1;
                bytes += n;
            }
        }
        tracing::info!(
            "pushed {uploaded} entries ({bytes} bytes) to {}",
            self.remote.describe()
        );
        Ok(())
    }
}

impl SignArgs {
    /// The key to sign with; None with --unsigned. A missing default key is an error that says how to make one.
    pub fn key(&self) -> Result<Option<SecretKey>> {
        if self.unsigned {
            return Ok(None);
        }
        let path = match self.signing_key.clone().or_else(|| {
            std::env::var_os("MGAT_SIGNING_KEY")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        }) {
            Some(p) => p,
            None => default_key_path()?,
        };
        let text = match crate::inputfile::read_text_bounded(&path, 4096) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(UsageError(format!(
                    "no signing key at {}: make one with `mgat cache keygen NAME`, name one with --signing-key, or push with --unsigned",
                    path.display()
                ))
                .into());
            }
            Err(e) => return Err(UsageError(e.to_string()).into()),
        };
        SecretKey::parse(&text)
            .map(Some)
            .map_err(|e| UsageError(format!("{}: {e}", path.display())).into())
    }
}

/// `~/.config/mgat/signing-key` (or under `$XDG_CONFIG_HOME`).
fn default_key_path() -> Result<PathBuf, UsageError> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| {
            UsageError("neither XDG_CONFIG_HOME nor HOME is set: pass --signing-key FILE".into())
        })?;
    Ok(config.join("mgat").join("signing-key"))
}

/// `mgat cache keygen NAME`: a new key pair; the secret half to a file only its owner reads, the public half printed.
pub fn keygen(name: &str, out: Option<PathBuf>) -> Result<ExitCode> {
    let key = SecretKey::generate(name).map_err(|e| UsageError(e.to_string()))?;
    let path = match out {
        Some(p) => p,
        None => default_key_path()?,
    };
    if path.exists() {
        return Err(UsageError(format!(
            "{} exists; keygen never overwrites a key (name another file with --out)",
            path.display()
        ))
        .into());
    }
    write_secret(&path, key.to_file_text().as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    println!("secret key written to {} (keep it private)", path.display());
    println!("public key, for trusted_keys in .mgat/config.yaml:");
    println!("  - {}", key.public());
    Ok(ExitCode::SUCCESS)
}

/// Creates `path` readable by its owner only (0600), failing if it exists.
fn write_secret(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The local entries to push: those of the specs' planned stages, or every entry in the cache.
fn local_entries(ctx: &Context, specs: &[PathBuf]) -> Result<Vec<(StageKind, StageKey)>> {
    if specs.is_empty() {
        ctx.cache.require()?;
        return Ok(ctx
            .cache
            .entries()?
            .iter()
            .filter_map(|e| Some((e.kind()?, StageKey::parse(&e.key).ok()?)))
            .collect());
    }
    let (_specs, plan, _lock) = super::run_cmd::load_plan(ctx, specs, &[], false)?;
    let mut seen = HashSet::new();
    Ok(plan
        .stages
        .iter()
        .filter_map(|s| Some((s.kind, s.key.clone()?)))
        .filter(|(kind, key)| ctx.cache.contains(*kind, key) && seen.insert((*kind, key.clone())))
        .collect())
}

/// `mgat cache push`.
pub fn push(
    ctx: &Context,
    specs: &[PathBuf],
    remote: &RemoteArgs,
    sign: &SignArgs,
) -> Result<ExitCode> {
    let signer = sign.key()?;
    let remote = remote.require(ctx, true)?;
    let entries = local_entries(ctx, specs)?;
    let (mut uploaded, mut there, mut blobs, mut bytes) = (0, 0, 0, 0u64);
    let bar = ctx
        .progress()
        .add(indicatif::ProgressBar::new(entries.len() as u64).with_message("pushing"));
    for pushed in remote.push_all(&ctx.cache, &entries, signer.as_ref(), &|| bar.inc(1)) {
        match pushed? {
            Pushed::Uploaded { blobs: b, bytes: n } => {
                uploaded += 1;
                blobs += b;
                bytes += n;
            }
            Pushed::AlreadyThere => there += 1,
        }
    }
    bar.finish_and_clear();
    println!(
        "pushed {uploaded} entries ({blobs} files, {bytes} bytes) to {}{}; {there} were there already",
        remote.describe(),
        signer.map_or(" unsigned".to_string(), |k| format!(
            ", signed by `{}`",
            k.name
        )),
    );
    Ok(ExitCode::SUCCESS)
}

/// How a pull went.
#[derive(Debug, Default)]
pub struct PullTally {
    pub imported: usize,
    pub bytes: u64,
    pub local: usize,
    pub absent: usize,
    pub refused: Vec<String>,
}

impl PullTally {
    fn count(&mut self, result: Result<Pulled, TransferError>) -> Result<(), TransferError> {
        match result {
            Ok(Pulled::Imported { bytes, .. }) => {
                self.imported += 1;
                self.bytes += bytes;
            }
            Ok(Pulled::AlreadyLocal) => self.local += 1,
            Ok(Pulled::NotOnRemote) => self.absent += 1,
            Err(e @ TransferError::Refused { .. }) => {
                tracing::error!("{e}");
                self.refused.push(e.to_string());
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    pub fn line(&self, remote: &Remote) -> String {
        format!(
            "pulled {} entries ({} bytes) from {}; {} were here already, {} not on the remote, {} refused",
            self.imported,
            self.bytes,
            remote.describe(),
            self.local,
            self.absent,
            self.refused.len()
        )
    }
}

/// Pulls every stage of `selected` (plan indices) the remote holds, resolving keys as the entries they consume
/// arrive (an eval key needs its train entry's output); the plan's keys are resolved after.
pub fn pull_plan(
    ctx: &Context,
    remote: &Remote,
    plan: &mut Plan,
    selected: &[usize],
) -> Result<PullTally, TransferError> {
    let mut tally = PullTally::default();
    let mut tried: HashSet<usize> = HashSet::new();
    loop {
        super::run_cmd::resolve_keys(ctx, plan);
        let ready: Vec<usize> = selected
            .iter()
            .copied()
            .filter(|s| plan.stages[*s].key.is_some() && !tried.contains(s))
            .collect();
        if ready.is_empty() {
            return Ok(tally);
        }
        tried.extend(&ready);
        let mut keys: Vec<(StageKind, StageKey)> = ready
            .iter()
            .filter_map(|&s| Some((plan.stages[s].kind, plan.stages[s].key.clone()?)))
            .collect();
        // Stages of several cells share a key (their dataset's): each is pulled once.
        keys.sort();
        keys.dedup();
        for pulled in remote.pull_all(&ctx.cache, &keys) {
            tally.count(pulled)?;
        }
    }
}

/// `mgat cache pull`: exit 1 when an entry was refused (the others are imported).
pub fn pull(ctx: &Context, specs: &[PathBuf], remote: &RemoteArgs) -> Result<ExitCode> {
    let remote = remote.require(ctx, false)?;
    let tally = match specs.is_empty() {
        true => {
            let mut tally = PullTally::default();
            for pulled in remote.pull_all(&ctx.cache, &remote.entries()?) {
                tally.count(pulled)?;
            }
            tally
        }
        false => {
            let (_specs, mut plan, _lock) = super::run_cmd::load_plan(ctx, specs, &[], false)?;
            let all: Vec<usize> = (0..plan.stages.len()).collect();
            pull_plan(ctx, &remote, &mut plan, &all)?
        }
    };
    println!("{}", tally.line(&remote));
    Ok(match tally.refused.is_empty() {
        true => ExitCode::SUCCESS,
        false => ExitCode::from(1),
    })
}

/// `mgat cache gc --remote`: keeps what any spec in experiments/ or any committed report's keys.json references.
pub fn gc(ctx: &Context, remote: &RemoteArgs, yes: bool) -> Result<ExitCode> {
    let remote = remote.require(ctx, false)?;
    let mut keep: HashSet<(StageKind, StageKey)> = HashSet::new();
    for dir in report_dirs(ctx)? {
        if let Some(keys) = crate::report::keys::ReportKeys::read_beside(&dir)? {
            for stages in keys.cells.values() {
                keep.extend(stages.iter().map(|(k, key)| (*k, key.clone())));
            }
        }
    }
    let specs = crate::spec::Spec::load_all(&ctx.project.spec_files()?, &[])?;
    let lock = ctx.load_lock()?;
    let runnable: Vec<_> = specs
        .into_iter()
        .map(|mut spec| {
            spec.cells
                .retain(|c| lock.entry(&c.config.dataset.name).is_ok());
            spec
        })
        .collect();
    let mut plan = Plan::new(&runnable, &lock, ctx.purpose(false))?;
    resolve_through(ctx, &remote, &mut plan);
    keep.extend(
        plan.stages
            .iter()
            .filter_map(|s| Some((s.kind, s.key.clone()?))),
    );
    let garbage = remote.collect_garbage(&|kind, key| keep.contains(&(kind, key.clone())), yes)?;
    for path in garbage.records.iter().chain(&garbage.blobs) {
        println!("{} {path}", if yes { "removed" } else { "would remove" });
    }
    println!(
        "{}{} entries and {} files {} from {}; {} entries referenced by specs or committed reports kept",
        if yes { "" } else { "dry run: " },
        garbage.records.len(),
        garbage.blobs.len(),
        if yes {
            "removed"
        } else {
            "would be removed (pass --yes to delete)"
        },
        remote.describe(),
        garbage.kept
    );
    Ok(ExitCode::SUCCESS)
}

/// Resolves the plan's keys through the local cache and then the remote's own manifests: a train entry on the
/// remote keys the eval entry beside it.
pub fn resolve_through(ctx: &Context, remote: &Remote, plan: &mut Plan) {
    plan.resolve(&|kind, key, file| {
        ctx.cache.output_digest(kind, key, file).or_else(|| {
            let published = remote.published(kind, key).ok().flatten()?;
            let output = published.manifest.outputs.get(file)?;
            Some(mgat_util::digest::labelled(&output.sha256))
        })
    });
}

/// How the entries an audit recomputed compare with what a remote publishes under the same keys.
#[derive(Debug, Default)]
pub struct RemoteAudit {
    pub matched: usize,
    pub signed: usize,
    pub absent: usize,
    pub differ: Vec<String>,
}

/// Compares each of `stages` (computed into `cache` by an audit) with the remote's entry under its key: the result
/// file's SHA-256 (every output's, for a kind without one).
pub fn audit_against(
    cache: &crate::cache::Cache,
    remote: &Remote,
    plan: &Plan,
    stages: &[usize],
) -> Result<RemoteAudit> {
    let mut audit = RemoteAudit::default();
    for &s in stages {
        let stage = &plan.stages[s];
        let Some(key) = &stage.key else { continue };
        let Some(local) = cache.trusted(stage.kind, key)? else {
            continue;
        };
        let Some(published) = remote.published(stage.kind, key)? else {
            audit.absent += 1;
            continue;
        };
        let compared = |m: &crate::cache::Manifest| match stage.kind.result_file() {
            Some(file) => m
                .outputs
                .get(file)
                .map(|o| o.sha256.clone())
                .into_iter()
                .collect::<Vec<_>>(),
            None => m.outputs.values().map(|o| o.sha256.clone()).collect(),
        };
        let signer = match &published.signer {
            Ok(name) => format!("signed by `{name}`"),
            Err(problem) => format!("not trusted: {problem}"),
        };
        if compared(&local) == compared(&published.manifest) {
            audit.matched += 1;
            audit.signed += usize::from(published.signer.is_ok());
        } else {
            audit.differ.push(format!(
                "{}: recomputed {}, the remote publishes {} ({signer})",
                stage.label(),
                compared(&local).join(","),
                compared(&published.manifest).join(",")
            ));
        }
    }
    Ok(audit)
}

impl RemoteAudit {
    pub fn lines(&self, remote: &Remote) -> Vec<String> {
        let mut lines = vec![format!(
            "remote {}: {} recomputed entries match what it publishes ({} signed by a trusted key), {} differ, {} not on it",
            remote.describe(),
            self.matched,
            self.signed,
            self.differ.len(),
            self.absent
        )];
        lines.extend(self.differ.iter().map(|d| format!("  differs: {d}")));
        lines
    }
}

/// Every `reports/<spec>/` folder.
fn report_dirs(ctx: &Context) -> Result<Vec<PathBuf>> {
    let reports = ctx.project.reports();
    match std::fs::read_dir(&reports) {
        Ok(dirs) => Ok(dirs
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(mgat_util::fsio::IoError::new(&reports, e).into()),
    }
}
