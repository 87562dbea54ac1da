//! The project's remote configuration, `.mgat/config.yaml` (committed, as DVC commits `.dvc/config`): which remote
//! results travel through and whose signatures a pull trusts. `--remote` and `MGAT_REMOTE` override the remote;
//! an absent file means no remote and no trusted keys.
//!
//! ```yaml
//! remote: s3://lab-results/mgat      # a folder, s3://BUCKET/PREFIX or https://HOST/PATH
//! endpoint: https://s3.lab.example   # an S3-compatible store that is not AWS (else AWS_ENDPOINT_URL)
//! timeout_s: 30                      # a request slower than this counts as the remote being down
//! trusted_keys:                      # what `mgat cache keygen` printed, one line per publisher
//!   - lab-cluster-1:3q1T…=
//! ```

use super::sign::{KeyError, PublicKey};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the config file is, under the project root.
pub fn path(project_root: &Path) -> PathBuf {
    project_root.join(".mgat").join("config.yaml")
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    remote: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    timeout_s: Option<f64>,
    #[serde(default)]
    trusted_keys: Vec<String>,
}

/// `.mgat/config.yaml` as read and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteConfig {
    pub file: PathBuf,
    pub remote: Option<String>,
    pub endpoint: Option<String>,
    pub timeout: Duration,
    pub trusted: Vec<PublicKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
    #[error("{file}: trusted_keys[{index}]: {error}")]
    Key {
        file: String,
        index: usize,
        error: KeyError,
    },
}

impl RemoteConfig {
    /// The config of the project at `root`; the defaults when there is no file.
    pub fn load(root: &Path) -> Result<RemoteConfig, ConfigError> {
        let file = path(root);
        let shown = file.display().to_string();
        let invalid = |message: String| ConfigError::Invalid {
            file: shown.clone(),
            message,
        };
        let parsed: ConfigFile = match crate::inputfile::read_text_bounded(
            &file,
            crate::inputfile::limit::TEXT_CONFIG,
        ) {
            Ok(text) if text.trim().is_empty() => ConfigFile::default(),
            Ok(text) => serde_yaml::from_str(&text).map_err(|e| {
                let (pos, message) = crate::yamlpos::split_serde_error(&e);
                invalid(match pos {
                    Some(p) => format!("line {}: {message}", p.line),
                    None => message,
                })
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => return Err(invalid(e.to_string())),
        };
        let timeout_s = parsed.timeout_s.unwrap_or(30.0);
        if !(timeout_s > 0.0 && timeout_s <= 3600.0) {
            return Err(invalid(format!(
                "timeout_s: {timeout_s}: expected a number of seconds in (0, 3600]"
            )));
        }
        let trusted = parsed
            .trusted_keys
            .iter()
            .enumerate()
            .map(|(index, text)| {
                PublicKey::parse(text).map_err(|error| ConfigError::Key {
                    file: shown.clone(),
                    index,
                    error,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(RemoteConfig {
            file,
            remote: parsed.remote.filter(|r| !r.trim().is_empty()),
            endpoint: parsed.endpoint,
            timeout: Duration::from_secs_f64(timeout_s),
            trusted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<RemoteConfig, ConfigError> {
        let dir = mgat_testutil::tempdir();
        std::fs::create_dir_all(dir.join(".mgat")).unwrap();
        std::fs::write(path(&dir), text).unwrap();
        RemoteConfig::load(&dir)
    }

    #[test]
    fn a_config_names_its_remote_and_keys_and_bad_values_are_located() {
        let key = super::super::sign::SecretKey::generate("lab")
            .unwrap()
            .public();
        let config = load(&format!(
            "remote: s3://bucket/x\ntimeout_s: 5\ntrusted_keys:\n  - {key}\n"
        ))
        .unwrap();
        assert_eq!(config.remote.as_deref(), Some("s3://bucket/x"));
        assert_eq!(config.timeout, Duration::from_secs(5));
        assert_eq!(config.trusted, vec![key]);
        let err = load("remote: x\nremtoe: y\n").unwrap_err().to_string();
        assert!(err.contains("line 2") && err.contains("remtoe"), "{err}");
        let err = load("trusted_keys: [ok:AAAA]\n").unwrap_err().to_string();
        assert!(err.contains("trusted_keys[0]"), "{err}");
        let err = load("timeout_s: -1\n").unwrap_err().to_string();
        assert!(err.contains("timeout_s: -1"), "{err}");
        assert_eq!(
            RemoteConfig::load(&mgat_testutil::tempdir())
                .unwrap()
                .remote,
            None
        );
    }
}
