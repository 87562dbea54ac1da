//! A remote's URL, parsed and checked before anything connects: `s3://BUCKET/PREFIX`, `https://HOST/PATH`
//! (read-only; `http://` too, for a server on a trusted network), or a folder (a path, or `file:///path`).

use super::RemoteError;
use super::store::{FolderStore, Store};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteUrl {
    Folder(PathBuf),
    S3 {
        text: String,
        bucket: String,
        prefix: String,
    },
    Http(String),
}

impl RemoteUrl {
    /// `text` as a remote; a relative folder is taken from `cwd`.
    pub fn parse(text: &str, cwd: &Path) -> Result<RemoteUrl, RemoteError> {
        let bad = |reason: &str| RemoteError::BadUrl {
            url: shown(text),
            reason: reason.to_string(),
        };
        if text.trim().is_empty() {
            return Err(bad("empty"));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains white space"));
        }
        let Some((scheme, rest)) = text.split_once("://") else {
            return Ok(RemoteUrl::Folder(cwd.join(text)));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in a URL (they would end up in logs and reports); use the AWS_* environment variables",
            ));
        }
        match scheme {
            "file" if authority.is_empty() && !path.is_empty() => {
                Ok(RemoteUrl::Folder(PathBuf::from(format!("/{path}"))))
            }
            "file" => Err(bad("expected file:///ABSOLUTE/PATH")),
            "s3" => {
                let valid_bucket = (3..=63).contains(&authority.len())
                    && authority.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    });
                if !valid_bucket {
                    return Err(bad(
                        "expected s3://BUCKET/PREFIX, BUCKET being 3 to 63 lower-case letters, digits, `-` or `.`",
                    ));
                }
                Ok(RemoteUrl::S3 {
                    text: text.trim_end_matches('/').to_string(),
                    bucket: authority.to_string(),
                    prefix: path.trim_matches('/').to_string(),
                })
            }
            "https" | "http" if !authority.is_empty() && !authority.starts_with(':') => {
                Ok(RemoteUrl::Http(text.trim_end_matches('/').to_string()))
            }
            "https" | "http" => Err(bad("expected https://HOST/PATH")),
            other => Err(RemoteError::UnknownScheme {
                url: shown(text),
                scheme: other.to_string(),
            }),
        }
    }

    /// The storage behind the URL, reached within `timeout`; `endpoint` is an S3-compatible store's address.
    pub fn store(
        &self,
        timeout: Duration,
        endpoint: Option<String>,
    ) -> Result<Box<dyn Store>, RemoteError> {
        match self {
            RemoteUrl::Folder(path) => Ok(Box::new(FolderStore::new(path.clone()))),
            #[cfg(feature = "remote")]
            RemoteUrl::S3 {
                text,
                bucket,
                prefix,
            } => {
                check_s3_credentials(text)?;
                let connection = super::object::Connection { timeout, endpoint };
                super::object::ObjectStoreRemote::s3(text, bucket, prefix, &connection)
                    .map(|s| Box::new(s) as Box<dyn Store>)
                    .map_err(|reason| RemoteError::BadUrl {
                        url: text.clone(),
                        reason,
                    })
            }
            #[cfg(feature = "remote")]
            RemoteUrl::Http(url) => {
                let connection = super::object::Connection { timeout, endpoint };
                super::object::ObjectStoreRemote::http(url, url, &connection)
                    .map(|s| Box::new(s) as Box<dyn Store>)
                    .map_err(|reason| RemoteError::BadUrl {
                        url: url.clone(),
                        reason,
                    })
            }
            #[cfg(not(feature = "remote"))]
            RemoteUrl::S3 { text: url, .. } | RemoteUrl::Http(url) => {
                let _ = (timeout, endpoint);
                Err(RemoteError::NotBuiltIn { url: url.clone() })
            }
        }
    }
}

impl std::fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RemoteUrl::Folder(path) => write!(f, "{}", path.display()),
            RemoteUrl::S3 { text, .. } | RemoteUrl::Http(text) => write!(f, "{text}"),
        }
    }
}

/// The URL as an error may show it: without anything before an `@` in its authority.
fn shown(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) if rest.split('/').next().is_some_and(|a| a.contains('@')) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit('@').next().unwrap_or(authority);
            format!("{scheme}://…@{host}/{path}")
        }
        _ => text.to_string(),
    }
}

/// S3 needs `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`, unless `AWS_SKIP_SIGNATURE=true` (a public bucket).
#[cfg(feature = "remote")]
fn check_s3_credentials(url: &str) -> Result<(), RemoteError> {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if std::env::var("AWS_SKIP_SIGNATURE").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(());
    }
    let missing: Vec<&str> = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        .into_iter()
        .filter(|v| !set(v))
        .collect();
    match missing.is_empty() {
        true => Ok(()),
        false => Err(RemoteError::MissingCredentials {
            url: url.to_string(),
            what: format!(
                "set {} (or AWS_SKIP_SIGNATURE=true for a public bucket)",
                missing.join(" and ")
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_by_scheme_and_bad_ones_say_why() {
        let cwd = Path::new("/work");
        assert_eq!(
            RemoteUrl::parse("s3://my-bucket/lab/mgat/", cwd).unwrap(),
            RemoteUrl::S3 {
                text: "s3://my-bucket/lab/mgat".into(),
                bucket: "my-bucket".into(),
                prefix: "lab/mgat".into()
            }
        );
        assert_eq!(
            RemoteUrl::parse("shared/cache", cwd).unwrap(),
            RemoteUrl::Folder("/work/shared/cache".into())
        );
        assert_eq!(
            RemoteUrl::parse("file:///mnt/nfs", cwd).unwrap(),
            RemoteUrl::Folder("/mnt/nfs".into())
        );
        assert_eq!(
            RemoteUrl::parse("https://example.org/cache/", cwd).unwrap(),
            RemoteUrl::Http("https://example.org/cache".into())
        );
        for (bad, says) in [
            ("ftp://host/x", "unknown scheme `ftp://`"),
            ("s3://", "BUCKET"),
            ("s3://UPPER/x", "BUCKET"),
            ("https://", "HOST"),
            ("file://host/x", "ABSOLUTE"),
            ("", "empty"),
            ("s3://b ucket/x", "white space"),
        ] {
            let err = RemoteUrl::parse(bad, cwd).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
        // Credentials in a URL are refused and not repeated.
        let err = RemoteUrl::parse("https://user:secret@host/x", cwd)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("credentials") && !err.contains("secret@"),
            "{err}"
        );
    }
}
