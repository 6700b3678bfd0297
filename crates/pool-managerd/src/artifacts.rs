//! Model artifacts by `model_ref`: a local file (`/path/model.gguf`, `file:` prefix optional),
//! an `http(s)://` URL (downloaded into the cache directory with resume; a SHA-256 is
//! required), or `sha256:<digest>` naming a catalog entry. Every artifact is checksummed
//! before it is handed to an engine (UNTRUSTED_ARTIFACT on mismatch).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::catalog::{Catalog, CatalogError, normalize_digest};
use crate::provision::{UntrustedArtifact, sha256_file};

/// A parsed `model_ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Local(PathBuf),
    Url(String),
    /// Lower-case hex digest of a catalog entry.
    Catalog(String),
}

impl ModelRef {
    pub fn parse(s: &str) -> Result<ModelRef, ArtifactError> {
        let s = s.trim();
        if let Some(d) = s.strip_prefix("sha256:") {
            return normalize_digest(d)
                .map(ModelRef::Catalog)
                .map_err(|_| ArtifactError::InvalidRef(format!("`{s}`: not sha256:<64 hex>")));
        }
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return reqwest::Url::parse(s)
                .map(|u| ModelRef::Url(u.to_string()))
                .map_err(|e| ArtifactError::InvalidRef(format!("`{s}`: {e}")));
        }
        let path = s.strip_prefix("file:").unwrap_or(s);
        if path.is_empty() || lower.contains("://") {
            return Err(ArtifactError::InvalidRef(format!(
                "`{s}`: expected a local path, an http(s):// URL or sha256:<digest>"
            )));
        }
        Ok(ModelRef::Local(PathBuf::from(path)))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("invalid model_ref {0}")]
    InvalidRef(String),
    /// Checksum mismatch; the message starts with UNTRUSTED_ARTIFACT.
    #[error(transparent)]
    Untrusted(#[from] UntrustedArtifact),
    #[error("model_ref {0} needs a sha256 (downloads are only trusted by digest)")]
    DigestRequired(String),
    #[error("downloading {url}: {message}")]
    Download { url: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("sha256:{0} is not in the model catalog")]
    NotInCatalog(String),
    #[error("MODEL_DEPRECATED: sha256:{digest} is {state} in the catalog and may not be loaded")]
    NotLoadable { digest: String, state: &'static str },
    #[error("sha256:{digest} is in the catalog, but the pool asks for sha256 {asked}")]
    DigestConflict { digest: String, asked: String },
    #[error("model catalog: {0}")]
    Catalog(#[from] CatalogError),
    #[error("sha256:<digest> model_refs need the model catalog, which is not open here")]
    NoCatalog,
}

impl ArtifactError {
    /// True when retrying cannot help without an operator (bad digest, bad ref, catalog
    /// state); false for I/O and network trouble.
    pub fn is_permanent(&self) -> bool {
        !matches!(
            self,
            ArtifactError::Download { .. } | ArtifactError::Io { .. } | ArtifactError::Catalog(_)
        )
    }

    pub fn code(&self) -> api_types::ErrorCode {
        use api_types::ErrorCode;
        match self {
            ArtifactError::Untrusted(_) => ErrorCode::UntrustedArtifact,
            ArtifactError::NotLoadable { .. } => ErrorCode::ModelDeprecated,
            ArtifactError::InvalidRef(_)
            | ArtifactError::DigestRequired(_)
            | ArtifactError::NotInCatalog(_)
            | ArtifactError::DigestConflict { .. } => ErrorCode::InvalidParams,
            _ => ErrorCode::PoolUnready,
        }
    }
}

/// Resolves model_refs to verified local files: downloads into `cache`, looks up `catalog`.
pub struct Artifacts {
    cache: PathBuf,
    catalog: Option<Arc<Catalog>>,
    http: reqwest::Client,
    /// Attempts per download; each one after the first resumes with a Range request.
    pub download_attempts: u32,
}

/// Bytes of a download go through this many attempts before it fails.
const DOWNLOAD_ATTEMPTS: u32 = 5;

impl Artifacts {
    /// Downloads go to `cache/models/`.
    pub fn new(cache: &Path, catalog: Option<Arc<Catalog>>) -> Artifacts {
        Artifacts {
            cache: cache.join("models"),
            catalog,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(30))
                // No overall timeout: models are gigabytes. A stalled body is caught by the
                // read timeout and resumed.
                .read_timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            download_attempts: DOWNLOAD_ATTEMPTS,
        }
    }

    pub fn catalog(&self) -> Option<&Arc<Catalog>> {
        self.catalog.as_ref()
    }

    /// The verified local file for `model_ref`; `sha256` is the digest the config requires
    /// (mandatory for URLs; for catalog refs it must agree with the entry).
    pub async fn resolve(
        &self,
        model_ref: &str,
        sha256: Option<&str>,
    ) -> Result<PathBuf, ArtifactError> {
        let sha = match sha256 {
            Some(s) => Some(normalize_digest(s).map_err(|_| {
                ArtifactError::InvalidRef(format!("sha256 `{s}` is not 64 hex characters"))
            })?),
            None => None,
        };
        match ModelRef::parse(model_ref)? {
            ModelRef::Local(path) => {
                if let Some(d) = &sha {
                    verify(&path, d).await?;
                }
                Ok(path)
            }
            ModelRef::Url(url) => {
                let d = sha.ok_or_else(|| ArtifactError::DigestRequired(url.clone()))?;
                self.download(&url, &d).await
            }
            ModelRef::Catalog(digest) => {
                if let Some(asked) = sha
                    && asked != digest
                {
                    return Err(ArtifactError::DigestConflict { digest, asked });
                }
                let cat = self.catalog.as_ref().ok_or(ArtifactError::NoCatalog)?;
                let entry = match cat.get(&digest) {
                    Ok(e) => e,
                    Err(CatalogError::NotFound(_)) => {
                        return Err(ArtifactError::NotInCatalog(digest));
                    }
                    Err(e) => return Err(e.into()),
                };
                use api_types::ModelState;
                if matches!(entry.state, ModelState::Deprecated | ModelState::Retired) {
                    return Err(ArtifactError::NotLoadable {
                        digest,
                        state: entry.state.as_str(),
                    });
                }
                match ModelRef::parse(&entry.model_ref)? {
                    ModelRef::Local(path) => {
                        verify(&path, &digest).await?;
                        Ok(path)
                    }
                    ModelRef::Url(url) => self.download(&url, &digest).await,
                    ModelRef::Catalog(_) => Err(ArtifactError::InvalidRef(entry.model_ref)),
                }
            }
        }
    }

    /// Where a download of `digest` ends up.
    pub fn download_path(&self, digest: &str) -> PathBuf {
        self.cache.join(format!("sha256-{digest}"))
    }

    /// Downloads `url` into the cache as `sha256-<digest>` (via `sha256-<digest>.part`,
    /// resuming it with HTTP Range after a broken transfer or a restart), verifies it and
    /// returns its path. An already downloaded, verified file is reused.
    pub async fn download(&self, url: &str, digest: &str) -> Result<PathBuf, ArtifactError> {
        let dest = self.download_path(digest);
        if dest.is_file() {
            match verify(&dest, digest).await {
                Ok(()) => return Ok(dest),
                Err(e) => {
                    tracing::warn!(path = %dest.display(), error = %e, "cached download is corrupt; fetching again");
                    let _ = tokio::fs::remove_file(&dest).await;
                }
            }
        }
        tokio::fs::create_dir_all(&self.cache)
            .await
            .map_err(|source| ArtifactError::Io {
                path: self.cache.clone(),
                source,
            })?;
        let part = self.cache.join(format!("sha256-{digest}.part"));
        let mut last = String::new();
        let mut complete = false;
        for attempt in 0..self.download_attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            match self.fetch_once(url, &part).await {
                Ok(()) => {
                    complete = true;
                    break;
                }
                Err(Fetch::Fatal(m)) => {
                    return Err(ArtifactError::Download {
                        url: url.into(),
                        message: m,
                    });
                }
                Err(Fetch::Retry(m)) => {
                    tracing::warn!(url, attempt, error = %m, "download interrupted; resuming");
                    last = m;
                }
            }
        }
        if !complete {
            return Err(ArtifactError::Download {
                url: url.into(),
                message: format!("gave up after {} attempts: {last}", self.download_attempts),
            });
        }
        if let Err(e) = verify(&part, digest).await {
            // A wrong file must not be resumed next time.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        tokio::fs::rename(&part, &dest)
            .await
            .map_err(|source| ArtifactError::Io {
                path: dest.clone(),
                source,
            })?;
        tracing::info!(url, path = %dest.display(), "model downloaded and verified");
        Ok(dest)
    }

    /// One GET, continuing `part` from its current length.
    async fn fetch_once(&self, url: &str, part: &Path) -> Result<(), Fetch> {
        let have = tokio::fs::metadata(part)
            .await
            .map(|m| m.len())
            .unwrap_or(0);
        let mut req = self.http.get(url);
        if have > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={have}-"));
        }
        let resp = req.send().await.map_err(|e| Fetch::Retry(e.to_string()))?;
        let status = resp.status();
        let append = match status.as_u16() {
            206 => {
                // Only append when the server continues exactly where we stopped.
                let start = resp
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("bytes "))
                    .and_then(|v| v.split('-').next())
                    .and_then(|v| v.parse::<u64>().ok());
                if start != Some(have) {
                    let _ = tokio::fs::remove_file(part).await;
                    return Err(Fetch::Retry(format!(
                        "server resumed at {start:?}, not {have}; starting over"
                    )));
                }
                true
            }
            200 => false,
            // Nothing left to fetch: the part is whole (the digest check decides).
            416 if have > 0 => return Ok(()),
            s if (500..600).contains(&s) || s == 429 => {
                return Err(Fetch::Retry(format!("HTTP {status}")));
            }
            _ => return Err(Fetch::Fatal(format!("HTTP {status}"))),
        };
        let io = |e: std::io::Error| Fetch::Fatal(format!("{}: {e}", part.display()));
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(part)
            .await
            .map_err(io)?;
        let mut body = resp.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| Fetch::Retry(format!("body: {e}")))?;
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
}

enum Fetch {
    Retry(String),
    Fatal(String),
}

/// Hashes `path` off the async runtime and compares with `digest`.
pub async fn verify(path: &Path, digest: &str) -> Result<(), ArtifactError> {
    let p = path.to_path_buf();
    let actual = tokio::task::spawn_blocking(move || sha256_file(&p))
        .await
        .map_err(|e| ArtifactError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?
        .map_err(|source| ArtifactError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if !actual.eq_ignore_ascii_case(digest) {
        return Err(UntrustedArtifact {
            path: path.to_path_buf(),
            expected: digest.to_ascii_lowercase(),
            actual,
        }
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ref_forms() {
        assert_eq!(
            ModelRef::parse("/m/a.gguf").unwrap(),
            ModelRef::Local("/m/a.gguf".into())
        );
        assert_eq!(
            ModelRef::parse("file:/m/a.gguf").unwrap(),
            ModelRef::Local("/m/a.gguf".into())
        );
        assert_eq!(
            ModelRef::parse("https://h.example/m.gguf").unwrap(),
            ModelRef::Url("https://h.example/m.gguf".into())
        );
        let d = "AB".repeat(32);
        assert_eq!(
            ModelRef::parse(&format!("sha256:{d}")).unwrap(),
            ModelRef::Catalog(d.to_ascii_lowercase())
        );
        for bad in ["sha256:abc", "", "ftp://x/y", "http://", "s3://b/k"] {
            assert!(ModelRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn url_without_digest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = Artifacts::new(dir.path(), None);
        let err = a
            .resolve("http://127.0.0.1:9/m.gguf", None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::DigestRequired(_)), "{err}");
        let err = a
            .resolve(&format!("sha256:{}", "0".repeat(64)), None)
            .await
            .unwrap_err();
        assert!(matches!(err, ArtifactError::NoCatalog), "{err}");
    }
}
