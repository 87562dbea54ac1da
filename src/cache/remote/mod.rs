//! Remotes: a stage cache elsewhere (a folder, an S3-compatible bucket, a static HTTPS server) that entries are
//! pushed to and pulled from, so that results travel between machines.
//!
//! A remote holds three kinds of object:
//!
//! | path | holds |
//! |---|---|
//! | `mgat-remote.json` | the marker that says this is a mgat remote, written by the first push |
//! | `blobs/<aa>/<sha256>` | one output file, named by its SHA-256 (written first) |
//! | `entries/<kind>/<key>.json` | an [`EntryRecord`]: the entry's `manifest.json` bytes and their signatures (written last) |
//!
//! Blobs are content-addressed and an entry becomes visible only when its record, a single atomic object, is
//! written after all its blobs, so a killed push leaves at most unreferenced blobs, and two machines pushing the
//! same key at once each leave a whole record that names only blobs that exist. Nothing from the wire is trusted:
//! a pulled record's signatures are checked against the project's trusted keys ([`sign`]), its manifest against
//! the key it was asked for (kind, key, the key's own inputs, the manifest's checksum), every blob against the
//! manifest's size and SHA-256 as it is written to the partial folder, and the entry then enters the cache through
//! the same check as a local one ([`Cache::import`]).

pub mod config;
#[cfg(feature = "remote")]
mod object;
pub mod sign;
pub mod store;
mod url;

pub use url::RemoteUrl;

use super::{Cache, CacheError, Damage, Manifest};
use crate::plan::{StageKey, StageKind};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sign::{PublicKey, SecretKey, Signature, SignatureProblem};
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use store::{Store, StoreError};

const MARKER: &str = "mgat-remote.json";
const MARKER_FORMAT: u32 = 1;
/// How old an unreferenced blob must be before gc removes it: younger ones may be a push in progress.
pub const GC_GRACE: Duration = Duration::from_secs(3600);
/// The largest entry record a pull reads (a manifest is a few KiB).
const RECORD_LIMIT: u64 = crate::inputfile::limit::CACHE_RECORD;

fn record_path(kind: StageKind, key: &str) -> String {
    format!("entries/{}/{key}.json", kind.name())
}

fn blob_path(sha256: &str) -> String {
    format!("blobs/{}/{sha256}", &sha256[..2.min(sha256.len())])
}

/// `mgat-remote.json`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Marker {
    mgat_remote: u32,
}

/// One entry on a remote: the exact bytes of its `manifest.json` (what signatures cover) and their signatures.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryRecord {
    pub manifest: String,
    #[serde(default)]
    pub signatures: Vec<Signature>,
}

/// Why a remote cannot be used at all: bad input (exit 2) except where it cannot be reached.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "remote `{url}`: unknown scheme `{scheme}://` (expected s3://BUCKET/PREFIX, https://HOST/PATH, or a folder)"
    )]
    UnknownScheme { url: String, scheme: String },
    #[error(
        "remote `{url}`: this mgat was built without S3 and HTTP(S) remotes; build it with `cargo build --release --features remote` (folder remotes need nothing)"
    )]
    NotBuiltIn { url: String },
    #[error("remote `{url}`: missing credentials: {what}")]
    MissingCredentials { url: String, what: String },
    #[error("{remote} is not a mgat remote: {why}")]
    NotARemote { remote: String, why: String },
    #[error("no remote: pass --remote URL, set MGAT_REMOTE, or name one as `remote:` in {config}")]
    NoRemote { config: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RemoteError {
    /// Everything but a remote that cannot be reached is the user's input to fix.
    pub fn is_bad_input(&self) -> bool {
        !matches!(
            self,
            RemoteError::Store(StoreError::Unreachable { .. } | StoreError::Local { .. })
        )
    }
}

/// Why one entry was not pulled or pushed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The remote's entry failed a check: nothing of it entered the cache.
    #[error("{remote}: {kind} {key}: refused: {reason}")]
    Refused {
        remote: String,
        kind: &'static str,
        key: String,
        reason: Box<Refusal>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// What was wrong with a remote's entry.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Signature(#[from] SignatureProblem),
    #[error("its record is not an entry record: {0}")]
    Record(String),
    #[error("its manifest: {0}")]
    Manifest(String),
    #[error("output {path}: {problem}")]
    Blob { path: String, problem: String },
    #[error("its files as written: {0}")]
    Damaged(Damage),
}

/// What a pull of one key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pulled {
    Imported { bytes: u64, signer: Option<String> },
    AlreadyLocal,
    NotOnRemote,
}

/// What a push of one entry did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    Uploaded { blobs: usize, bytes: u64 },
    AlreadyThere,
}

/// How a remote is reached and what it is trusted for.
pub struct Settings {
    pub timeout: Duration,
    pub endpoint: Option<String>,
    pub trusted: Vec<PublicKey>,
    pub trust_unsigned: bool,
}

pub struct Remote {
    store: Box<dyn Store>,
    trusted: Vec<PublicKey>,
    trust_unsigned: bool,
    /// Transfers are latency-bound: this many run at once, whatever the core count.
    transfers: rayon::ThreadPool,
}

/// Objects transferred at once.
const TRANSFERS: usize = 8;

impl Remote {
    /// The remote at `url`, checked to be a mgat remote (its marker is there) so that it can be read.
    pub fn open(url: &RemoteUrl, settings: Settings) -> Result<Remote, RemoteError> {
        let remote = Remote::connect(url, settings)?;
        match remote.marker()? {
            Some(()) => Ok(remote),
            None => Err(RemoteError::NotARemote {
                remote: remote.describe().to_string(),
                why: format!("it has no {MARKER} (nothing was ever pushed to it)"),
            }),
        }
    }

    /// The remote at `url` for pushing: an empty one becomes a mgat remote; one that holds other files is refused.
    pub fn open_for_push(url: &RemoteUrl, settings: Settings) -> Result<Remote, RemoteError> {
        if let RemoteUrl::Http(url) = url {
            return Err(StoreError::ReadOnly {
                remote: url.clone(),
            }
            .into());
        }
        let remote = Remote::connect(url, settings)?;
        if remote.marker()?.is_none() {
            let listed = remote.store.list("")?;
            if let Some(other) = listed.first() {
                return Err(RemoteError::NotARemote {
                    remote: remote.describe().to_string(),
                    why: format!("it has no {MARKER} but holds other files ({})", other.path),
                });
            }
            let marker = serde_json::to_vec(&Marker {
                mgat_remote: MARKER_FORMAT,
            })
            .unwrap_or_default();
            remote.store.put_bytes(MARKER, &marker)?;
        }
        Ok(remote)
    }

    fn connect(url: &RemoteUrl, settings: Settings) -> Result<Remote, RemoteError> {
        let transfers = rayon::ThreadPoolBuilder::new()
            .num_threads(TRANSFERS)
            .thread_name(|i| format!("mgat-transfer-{i}"))
            .build()
            .map_err(|e| StoreError::Unreachable {
                remote: url.to_string(),
                reason: format!("cannot start transfer threads: {e}"),
            })?;
        Ok(Remote {
            store: url.store(settings.timeout, settings.endpoint)?,
            trusted: settings.trusted,
            trust_unsigned: settings.trust_unsigned,
            transfers,
        })
    }

    /// The remote as it may be shown: no credentials.
    pub fn describe(&self) -> &str {
        self.store.describe()
    }

    /// `Some` when the marker is there and says a format this mgat reads.
    fn marker(&self) -> Result<Option<()>, RemoteError> {
        let mut bytes = Vec::new();
        if !self.store.get(MARKER, 4096, &mut bytes)? {
            return Ok(None);
        }
        match serde_json::from_slice::<Marker>(&bytes) {
            Ok(m) if m.mgat_remote == MARKER_FORMAT => Ok(Some(())),
            Ok(m) => Err(RemoteError::NotARemote {
                remote: self.describe().to_string(),
                why: format!(
                    "its {MARKER} says format {}, this mgat reads {MARKER_FORMAT}",
                    m.mgat_remote
                ),
            }),
            Err(e) => Err(RemoteError::NotARemote {
                remote: self.describe().to_string(),
                why: format!("its {MARKER} is not mgat's: {e}"),
            }),
        }
    }

    /// Whether the remote has an entry record for the key (its contents unchecked).
    pub fn holds(&self, kind: StageKind, key: &StageKey) -> Result<bool, StoreError> {
        self.store.exists(&record_path(kind, key.as_str()))
    }

    /// Uploads the local entry under `key` (checked sound first): its blobs the remote lacks, then its record,
    /// signed by `signer` when given. An entry whose record is already there is left as it is.
    pub fn push(
        &self,
        cache: &Cache,
        kind: StageKind,
        key: &StageKey,
        signer: Option<&SecretKey>,
    ) -> Result<Pushed, TransferError> {
        let record = record_path(kind, key.as_str());
        if self.store.exists(&record)? {
            return Ok(Pushed::AlreadyThere);
        }
        let Some(manifest) = cache.trusted(kind, key)? else {
            return Err(CacheError::Io(mgat_util::fsio::IoError::new(
                cache.entry_dir(kind, key),
                std::io::Error::other("not in the local cache, or damaged"),
            ))
            .into());
        };
        let dir = cache.entry_dir(kind, key);
        let text = cache.manifest_text(kind, key)?;
        let uploaded: Vec<u64> = self.transfers.install(|| {
            manifest
                .outputs
                .par_iter()
                .map(|(path, output)| {
                    let blob = blob_path(&output.sha256);
                    match self.store.exists(&blob)? {
                        true => Ok(None),
                        false => self
                            .store
                            .put_file(&blob, &dir.join(path))
                            .map(|()| Some(output.bytes)),
                    }
                })
                .filter_map(Result::transpose)
                .collect::<Result<_, StoreError>>()
        })?;
        let (blobs, bytes) = (uploaded.len(), uploaded.iter().sum());
        let message = sign::message(kind.name(), key.as_str(), text.as_bytes());
        let record_bytes = serde_json::to_vec_pretty(&EntryRecord {
            manifest: text,
            signatures: signer.map(|s| s.sign(&message)).into_iter().collect(),
        })
        .unwrap_or_default();
        self.store.put_bytes(&record, &record_bytes)?;
        Ok(Pushed::Uploaded { blobs, bytes })
    }

    /// [`Remote::push`] of each entry, several at once; `on_entry` after each.
    pub fn push_all(
        &self,
        cache: &Cache,
        entries: &[(StageKind, StageKey)],
        signer: Option<&SecretKey>,
        on_entry: &(dyn Fn() + Sync),
    ) -> Vec<Result<Pushed, TransferError>> {
        self.transfers.install(|| {
            entries
                .par_iter()
                .map(|(kind, key)| {
                    let pushed = self.push(cache, *kind, key, signer);
                    on_entry();
                    pushed
                })
                .collect()
        })
    }

    /// [`Remote::pull`] of each key, several at once.
    pub fn pull_all(
        &self,
        cache: &Cache,
        entries: &[(StageKind, StageKey)],
    ) -> Vec<Result<Pulled, TransferError>> {
        self.transfers.install(|| {
            entries
                .par_iter()
                .map(|(kind, key)| self.pull(cache, *kind, key))
                .collect()
        })
    }

    /// Fetches the entry under `key` into the local cache, verified; nothing of a refused entry stays.
    pub fn pull(
        &self,
        cache: &Cache,
        kind: StageKind,
        key: &StageKey,
    ) -> Result<Pulled, TransferError> {
        if cache.contains(kind, key) {
            return Ok(Pulled::AlreadyLocal);
        }
        let refused = |reason: Refusal| TransferError::Refused {
            remote: self.describe().to_string(),
            kind: kind.name(),
            key: key.as_str().to_string(),
            reason: Box::new(reason),
        };
        let (record, verdict) = match self.record(kind, key)? {
            None => return Ok(Pulled::NotOnRemote),
            Some(read) => read.map_err(refused)?,
        };
        let signer = match verdict {
            Ok(name) => Some(name),
            Err(_) if self.trust_unsigned => None,
            Err(problem) => return Err(refused(problem.into())),
        };
        let manifest = check_manifest(&record.manifest, kind, key)
            .map_err(|m| refused(Refusal::Manifest(m)))?;
        let _lock = cache.lock(kind, key, || {})?;
        if cache.settle(kind, key)? {
            return Ok(Pulled::AlreadyLocal);
        }
        let partial = cache.partial_dir(kind, key);
        mgat_util::fsio::remove_dir_all(&partial).map_err(CacheError::from)?;
        let fetched = self.fetch_outputs(&manifest, &partial).and_then(|bytes| {
            match cache.import(&partial, &manifest, record.manifest.as_bytes())? {
                Ok(_) => Ok(bytes),
                Err(damage) => Err(refused(Refusal::Damaged(damage))),
            }
        });
        match fetched {
            Ok(bytes) => Ok(Pulled::Imported { bytes, signer }),
            Err(TransferError::Refused { reason, .. }) => {
                let _ = std::fs::remove_dir_all(&partial);
                Err(refused(*reason))
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                Err(e)
            }
        }
    }

    /// Downloads each output's blob into `partial`, checking its size and SHA-256 as it arrives.
    fn fetch_outputs(&self, manifest: &Manifest, partial: &Path) -> Result<u64, TransferError> {
        let refused = |path: &str, problem: String| TransferError::Refused {
            remote: self.describe().to_string(),
            kind: manifest.kind.name(),
            key: manifest.key.as_str().to_string(),
            reason: Box::new(Refusal::Blob {
                path: path.to_string(),
                problem,
            }),
        };
        let fetch_one =
            |(path, output): (&String, &super::OutputFile)| -> Result<u64, TransferError> {
                let dest = partial.join(path);
                let parent = dest.parent().unwrap_or(partial);
                mgat_util::fsio::create_dir_all(parent).map_err(CacheError::from)?;
                let file = std::fs::File::create(&dest)
                    .map_err(|e| CacheError::from(mgat_util::fsio::IoError::new(&dest, e)))?;
                let mut writer = HashingWriter::new(file);
                let blob = blob_path(&output.sha256);
                let found = match self.store.get(&blob, output.bytes, &mut writer) {
                    Ok(found) => found,
                    Err(StoreError::TooLarge { .. }) => {
                        return Err(refused(
                            path,
                            format!(
                                "{blob} is larger than the {} bytes the manifest says",
                                output.bytes
                            ),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                };
                if !found {
                    return Err(refused(path, format!("{blob} is missing")));
                }
                let (sha256, bytes) = writer
                    .finish()
                    .map_err(|e| CacheError::from(mgat_util::fsio::IoError::new(&dest, e)))?;
                if sha256 != output.sha256 || bytes != output.bytes {
                    return Err(refused(
                        path,
                        format!(
                            "{blob} has sha256 {sha256} ({bytes} bytes), the manifest says {} ({} bytes)",
                            output.sha256, output.bytes
                        ),
                    ));
                }
                Ok(bytes)
            };
        self.transfers
            .install(|| manifest.outputs.par_iter().map(fetch_one).sum())
    }

    /// Every entry record's kind and key; the names that are no kind or key are skipped.
    pub fn entries(&self) -> Result<Vec<(StageKind, StageKey)>, StoreError> {
        Ok(self
            .store
            .list("entries/")?
            .iter()
            .filter_map(|listed| {
                let (kind, file) = listed.path.strip_prefix("entries/")?.split_once('/')?;
                let key = StageKey::parse(file.strip_suffix(".json")?).ok()?;
                Some((StageKind::from_name(kind)?, key))
            })
            .collect())
    }

    /// What the remote publishes for `key`: its manifest, checked like a pulled one's (kind, key, inputs,
    /// checksum), and whether a trusted key signed it. None when the remote has no such entry or its record or
    /// manifest does not pass those checks.
    pub fn published(
        &self,
        kind: StageKind,
        key: &StageKey,
    ) -> Result<Option<Published>, StoreError> {
        let Some(Ok((record, signer))) = self.record(kind, key)? else {
            return Ok(None);
        };
        Ok(check_manifest(&record.manifest, kind, key)
            .ok()
            .map(|manifest| Published { manifest, signer }))
    }

    /// The remote's record for `key`, parsed, with the trusted key that signed its manifest or why none did; None
    /// when the remote has no record, a refusal when it is not a record.
    fn record(
        &self,
        kind: StageKind,
        key: &StageKey,
    ) -> Result<Option<Result<SignedRecord, Refusal>>, StoreError> {
        let mut bytes = Vec::new();
        if !self
            .store
            .get(&record_path(kind, key.as_str()), RECORD_LIMIT, &mut bytes)?
        {
            return Ok(None);
        }
        let record = match serde_json::from_slice::<EntryRecord>(&bytes) {
            Ok(record) => record,
            Err(e) => return Ok(Some(Err(Refusal::Record(e.to_string())))),
        };
        let message = sign::message(kind.name(), key.as_str(), record.manifest.as_bytes());
        let signer = sign::verify(&record.signatures, &self.trusted, &message);
        Ok(Some(Ok((record, signer))))
    }

    /// Removes the records not in `keep`, then every blob no remaining record names that is older than
    /// [`GC_GRACE`] (a younger one may belong to a push whose record is not written yet). With `apply` false it
    /// only says what it would remove.
    pub fn collect_garbage(
        &self,
        keep: &dyn Fn(StageKind, &StageKey) -> bool,
        apply: bool,
    ) -> Result<Garbage, StoreError> {
        let now = std::time::SystemTime::now();
        let mut garbage = Garbage::default();
        let mut referenced = std::collections::HashSet::new();
        for (kind, key) in self.entries()? {
            let path = record_path(kind, key.as_str());
            if keep(kind, &key) {
                garbage.kept += 1;
                if let Some(p) = self.published(kind, &key)? {
                    referenced.extend(p.manifest.outputs.values().map(|o| blob_path(&o.sha256)));
                }
                continue;
            }
            if apply {
                self.store.delete(&path)?;
            }
            garbage.records.push(path);
        }
        for blob in self.store.list("blobs/")? {
            let young = blob
                .modified
                .is_none_or(|m| now.duration_since(m).unwrap_or_default() < GC_GRACE);
            if referenced.contains(&blob.path) || young {
                continue;
            }
            if apply {
                self.store.delete(&blob.path)?;
            }
            garbage.blobs.push(blob.path);
        }
        Ok(garbage)
    }
}

/// A remote's record with the trusted key that signed it, or why none did.
type SignedRecord = (EntryRecord, Result<String, SignatureProblem>);

/// An entry as a remote publishes it.
#[derive(Debug)]
pub struct Published {
    pub manifest: Manifest,
    /// The trusted key that signed it, or why none did.
    pub signer: Result<String, SignatureProblem>,
}

/// What [`Remote::collect_garbage`] removed (or would remove).
#[derive(Debug, Default)]
pub struct Garbage {
    pub records: Vec<String>,
    pub blobs: Vec<String>,
    pub kept: usize,
}

/// A record's manifest, parsed and checked to be the entry asked for: its kind and key, the key its own inputs
/// hash to, its checksum, and output paths that stay inside the entry.
fn check_manifest(text: &str, kind: StageKind, key: &StageKey) -> Result<Manifest, String> {
    let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if manifest.kind != kind || manifest.key != *key {
        return Err(format!(
            "it describes {} {}",
            manifest.kind.name(),
            manifest.key
        ));
    }
    if manifest.inputs.key() != *key {
        return Err(format!(
            "its inputs hash to {}, not to its key",
            manifest.inputs.key()
        ));
    }
    if manifest.compute_checksum() != manifest.checksum {
        return Err("its checksum does not match its content".into());
    }
    if let Some(path) = manifest.outputs.keys().find(|p| !inside_entry(p)) {
        return Err(format!("output path `{path}` leaves the entry's folder"));
    }
    if let Some(out) = manifest
        .outputs
        .values()
        .find(|o| StageKey::parse(&o.sha256).is_err())
    {
        return Err(format!("`{}` is not a SHA-256", out.sha256));
    }
    Ok(manifest)
}

/// A relative path of plain names (no `..`, `.`, root, or the manifest itself).
fn inside_entry(path: &str) -> bool {
    path != super::MANIFEST
        && !path.is_empty()
        && !path.starts_with('/')
        && path
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\\'))
}

/// Writes to a file while hashing what it writes.
struct HashingWriter {
    file: std::fs::File,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl HashingWriter {
    fn new(file: std::fs::File) -> Self {
        use sha2::Digest;
        HashingWriter {
            file,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// The hex SHA-256 and length of what was written, once it is on disk.
    fn finish(self) -> std::io::Result<(String, u64)> {
        use sha2::Digest;
        self.file.sync_all()?;
        Ok((mgat_util::digest::hex(&self.hasher.finalize()), self.bytes))
    }
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_must_stay_inside_the_entry() {
        for good in ["model.safetensors", "thumbs/q1.png", "a/b/c"] {
            assert!(inside_entry(good), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./x",
            "manifest.json",
            "a\\b",
        ] {
            assert!(!inside_entry(bad), "{bad}");
        }
    }
}
