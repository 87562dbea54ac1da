//! S3-compatible and HTTP(S) remotes through the `object_store` crate (what polars uses for the same job), built
//! with `--features remote`. Calls block on a small tokio runtime of the remote's own (several transfer threads
//! call at once) and are bounded by the remote's timeout; a request is retried twice at most. Credentials come from the usual AWS environment variables
//! and never appear in [`Store::describe`] or an error.

use super::store::{Listed, Store, StoreError};
use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub struct ObjectStoreRemote {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    shown: String,
    writable: bool,
    runtime: tokio::runtime::Runtime,
}

/// How a remote built on `object_store` is reached.
pub struct Connection {
    pub timeout: Duration,
    /// The S3 endpoint (`AWS_ENDPOINT_URL` or the config's `endpoint`), for a store that is not AWS itself.
    pub endpoint: Option<String>,
}

fn client_options(connection: &Connection, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(connection.timeout)
        .with_connect_timeout(connection.timeout.min(Duration::from_secs(10)))
        .with_allow_http(allow_http)
}

fn retry(connection: &Connection) -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: connection.timeout,
        ..RetryConfig::default()
    }
}

impl ObjectStoreRemote {
    /// `s3://bucket/prefix`: credentials from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (or
    /// `AWS_SKIP_SIGNATURE=true` for a public bucket), region from `AWS_REGION`/`AWS_DEFAULT_REGION`.
    pub fn s3(
        shown: &str,
        bucket: &str,
        prefix: &str,
        connection: &Connection,
    ) -> Result<Self, String> {
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = connection
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        if let Some(endpoint) = endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let store = builder
            .with_client_options(client_options(connection, allow_http))
            .with_retry(retry(connection))
            .build()
            .map_err(|e| e.to_string())?;
        Self::new(Arc::new(store), prefix, shown, true)
    }

    /// `https://…` (or `http://` on a trusted network): read-only, served by any static file server.
    pub fn http(shown: &str, url: &str, connection: &Connection) -> Result<Self, String> {
        let store = object_store::http::HttpBuilder::new()
            .with_url(url)
            .with_client_options(client_options(connection, url.starts_with("http://")))
            .with_retry(retry(connection))
            .build()
            .map_err(|e| e.to_string())?;
        Self::new(Arc::new(store), "", shown, false)
    }

    fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        shown: &str,
        writable: bool,
    ) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(ObjectStoreRemote {
            store,
            prefix: prefix.trim_matches('/').to_string(),
            shown: shown.to_string(),
            writable,
            runtime,
        })
    }

    fn location(&self, path: &str) -> ObjectPath {
        match self.prefix.is_empty() {
            true => ObjectPath::from(path),
            false => ObjectPath::from(format!("{}/{path}", self.prefix)),
        }
    }

    fn error(&self, path: &str, error: object_store::Error) -> StoreError {
        use object_store::Error::*;
        match error {
            PermissionDenied { .. }
            | Unauthenticated { .. }
            | Precondition { .. }
            | AlreadyExists { .. }
            | NotSupported { .. } => StoreError::Refused {
                remote: self.shown.clone(),
                path: path.to_string(),
                reason: error.to_string(),
            },
            _ => StoreError::Unreachable {
                remote: self.shown.clone(),
                reason: format!("{path}: {error}"),
            },
        }
    }

    fn writable(&self) -> Result<(), StoreError> {
        match self.writable {
            true => Ok(()),
            false => Err(StoreError::ReadOnly {
                remote: self.shown.clone(),
            }),
        }
    }

    fn put(&self, path: &str, payload: PutPayload) -> Result<(), StoreError> {
        self.writable()?;
        let location = self.location(path);
        self.runtime
            .block_on(self.store.put(&location, payload))
            .map(|_| ())
            .map_err(|e| self.error(path, e))
    }
}

impl Store for ObjectStoreRemote {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn get(&self, path: &str, limit: u64, dest: &mut dyn Write) -> Result<bool, StoreError> {
        let location = self.location(path);
        let too_large = || StoreError::TooLarge {
            remote: self.shown.clone(),
            path: path.to_string(),
            limit,
        };
        self.runtime.block_on(async {
            let result = match self.store.get(&location).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(false),
                Err(e) => return Err(self.error(path, e)),
            };
            if result.meta.size > limit {
                return Err(too_large());
            }
            let mut received = 0u64;
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error(path, e))?;
                received += chunk.len() as u64;
                if received > limit {
                    return Err(too_large());
                }
                dest.write_all(&chunk).map_err(|e| StoreError::Local {
                    remote: self.shown.clone(),
                    error: mgat_util::fsio::IoError::new(path, e),
                })?;
            }
            Ok(true)
        })
    }

    fn put_file(&self, path: &str, source: &Path) -> Result<(), StoreError> {
        self.writable()?;
        let bytes = mgat_util::fsio::read(source).map_err(|error| StoreError::Local {
            remote: self.shown.clone(),
            error,
        })?;
        self.put(path, PutPayload::from(bytes))
    }

    fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.put(path, PutPayload::from(bytes.to_vec()))
    }

    fn exists(&self, path: &str) -> Result<bool, StoreError> {
        let location = self.location(path);
        match self.runtime.block_on(self.store.head(&location)) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error(path, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        if !self.writable {
            return Err(StoreError::CannotList {
                remote: self.shown.clone(),
                what: "a static server has no listing".into(),
            });
        }
        let location = self.location(prefix.trim_end_matches('/'));
        let strip = match self.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", self.prefix),
        };
        self.runtime.block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(Some(&location));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.error(prefix, e))?;
                let full = meta.location.to_string();
                out.push(Listed {
                    path: full.strip_prefix(&strip).unwrap_or(&full).to_string(),
                    modified: Some(meta.last_modified.into()),
                });
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        self.writable()?;
        let location = self.location(path);
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(path, e)),
        }
    }
}
