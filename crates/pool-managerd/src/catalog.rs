//! The model catalog (SPEC §2, ORCH-3037, 3060–3073): content-addressed entries (id =
//! `sha256:<digest>`) with source, size, last verification and lifecycle state, kept in an
//! embedded SQLite database under the state directory so that it survives restarts.
//!
//! Every write is one SQL statement or one transaction, so a failed request changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use api_types::{
    CatalogEntry, ErrorCode, ModelSourceKind, ModelState, Verification, VerificationResult,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::artifacts::ModelRef;

/// File name of the catalog database inside the state directory.
pub const DB_FILE: &str = "catalog.sqlite3";

/// Why a catalog operation was refused. Each maps to one public error code ([`Self::code`]).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog entry {0} not found")]
    NotFound(String),
    #[error("invalid digest `{0}`: expected 64 hex characters, optionally prefixed `sha256:`")]
    InvalidDigest(String),
    #[error("invalid model_ref: {0}")]
    InvalidModelRef(String),
    #[error("illegal state transition {} -> {}", from.as_str(), to.as_str())]
    IllegalTransition { from: ModelState, to: ModelState },
    #[error(
        "UNTRUSTED_ARTIFACT: {id} cannot become {}: its artifact has not passed verification (POST /v1/catalog/models/{id}/verify)",
        to.as_str()
    )]
    NotVerified { id: String, to: ModelState },
    #[error("{id} is already registered with model_ref `{existing}`")]
    AlreadyRegistered { id: String, existing: String },
    #[error("catalog database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("catalog database holds an unknown value `{0}`")]
    Corrupt(String),
    #[error("catalog state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl CatalogError {
    pub fn code(&self) -> ErrorCode {
        match self {
            CatalogError::NotFound(_) => ErrorCode::NotFound,
            CatalogError::InvalidDigest(_)
            | CatalogError::InvalidModelRef(_)
            | CatalogError::IllegalTransition { .. }
            | CatalogError::AlreadyRegistered { .. } => ErrorCode::InvalidParams,
            CatalogError::NotVerified { .. } => ErrorCode::UntrustedArtifact,
            CatalogError::Db(_) | CatalogError::Corrupt(_) | CatalogError::Io { .. } => {
                ErrorCode::Internal
            }
        }
    }
}

/// `abc…` or `sha256:abc…` (64 hex) → lower-case hex.
pub fn normalize_digest(s: &str) -> Result<String, CatalogError> {
    let d = s.strip_prefix("sha256:").unwrap_or(s);
    if d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(d.to_ascii_lowercase())
    } else {
        Err(CatalogError::InvalidDigest(s.to_string()))
    }
}

/// Whether the lifecycle allows `from → to` (see [`ModelState`]). Staying put is allowed
/// (idempotent requests).
pub fn transition_allowed(from: ModelState, to: ModelState) -> bool {
    use ModelState::*;
    from == to
        || matches!(
            (from, to),
            (Draft, Active | Canary | Retired)
                | (Active, Canary | Deprecated)
                | (Canary, Active | Deprecated)
                | (Deprecated, Active | Retired)
        )
}

/// Where pool-managerd keeps state: the configured directory, else systemd's
/// `$STATE_DIRECTORY` (first entry), else `$XDG_STATE_HOME/llama-orch`, else
/// `~/.local/state/llama-orch`.
pub fn state_dir(configured: Option<&str>) -> PathBuf {
    if let Some(c) = configured.filter(|c| !c.is_empty()) {
        return PathBuf::from(c);
    }
    if let Some(s) = std::env::var_os("STATE_DIRECTORY")
        && let Some(first) = s.to_str().and_then(|s| s.split(':').next())
        && !first.is_empty()
    {
        return PathBuf::from(first);
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"))
        .join("llama-orch")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Schema version in `PRAGMA user_version`; bump with a migration step in [`Catalog::open`].
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS models (
    digest          TEXT PRIMARY KEY NOT NULL,
    model_ref       TEXT NOT NULL,
    source          TEXT NOT NULL,
    size_bytes      INTEGER,
    state           TEXT NOT NULL,
    verify_result   TEXT,
    verify_at_ms    INTEGER,
    verify_actual   TEXT,
    verify_detail   TEXT,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);
";

pub struct Catalog {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Bumped after every successful write, so lifecycle watchers need not poll the file.
    writes: tokio::sync::watch::Sender<u64>,
}

impl Catalog {
    /// Opens (creating if needed) the catalog in `dir`. Idempotent: opening an existing
    /// catalog keeps its entries.
    pub fn open(dir: &Path) -> Result<Catalog, CatalogError> {
        std::fs::create_dir_all(dir).map_err(|source| CatalogError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let conn = Connection::open(&path)?;
        // WAL: readers do not block the writer; NORMAL sync is durable across process
        // crashes (a power loss may drop the last transaction, never corrupt the file).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v < SCHEMA_VERSION {
            conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        tracing::info!(path = %path.display(), "model catalog open");
        Ok(Catalog {
            conn: Mutex::new(conn),
            path,
            writes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wakes after every write through this handle.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.writes.subscribe()
    }

    fn wrote(&self) {
        self.writes.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `model_ref` under `sha256`; returns the entry and whether it is new.
    /// Registering the same (digest, model_ref) again returns the existing entry.
    pub fn register(
        &self,
        model_ref: &str,
        sha256: &str,
    ) -> Result<(CatalogEntry, bool), CatalogError> {
        let digest = normalize_digest(sha256)?;
        let model_ref = model_ref.trim();
        let (source, size) = match ModelRef::parse(model_ref) {
            Ok(ModelRef::Local(p)) => (
                ModelSourceKind::Local,
                std::fs::metadata(&p).ok().map(|m| m.len()),
            ),
            Ok(ModelRef::Url(_)) => (ModelSourceKind::Url, None),
            Ok(ModelRef::Catalog(_)) => {
                return Err(CatalogError::InvalidModelRef(
                    "a catalog entry must name a file or URL, not another entry".into(),
                ));
            }
            Err(e) => return Err(CatalogError::InvalidModelRef(e.to_string())),
        };
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        if let Some(existing) = get_in(&tx, &digest)? {
            if existing.model_ref == model_ref {
                return Ok((existing, false));
            }
            return Err(CatalogError::AlreadyRegistered {
                id: existing.id,
                existing: existing.model_ref,
            });
        }
        let now = now_ms() as i64;
        tx.execute(
            "INSERT INTO models (digest, model_ref, source, size_bytes, state, created_at_ms, updated_at_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
            params![
                digest,
                model_ref,
                source_str(source),
                size.map(|s| s as i64),
                ModelState::Draft.as_str(),
                now
            ],
        )?;
        let entry = get_in(&tx, &digest)?.ok_or_else(|| CatalogError::NotFound(digest.clone()))?;
        tx.commit()?;
        self.wrote();
        Ok((entry, true))
    }

    /// The entry with id `sha256:<digest>` (or the bare digest).
    pub fn get(&self, id: &str) -> Result<CatalogEntry, CatalogError> {
        let digest = normalize_digest(id)?;
        get_in(&self.conn(), &digest)?.ok_or(CatalogError::NotFound(format!("sha256:{digest}")))
    }

    pub fn list(&self) -> Result<Vec<CatalogEntry>, CatalogError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(&format!("{SELECT} ORDER BY created_at_ms, digest"))?;
        let rows = stmt.query_map([], row)?;
        rows.map(|r| r?.into_entry()).collect()
    }

    /// Moves an entry to `to` if the lifecycle allows it. Active and Canary need a passed
    /// verification: an unverified artifact is never promoted to serve.
    pub fn set_state(&self, id: &str, to: ModelState) -> Result<CatalogEntry, CatalogError> {
        let digest = normalize_digest(id)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let cur =
            get_in(&tx, &digest)?.ok_or(CatalogError::NotFound(format!("sha256:{digest}")))?;
        if !transition_allowed(cur.state, to) {
            return Err(CatalogError::IllegalTransition {
                from: cur.state,
                to,
            });
        }
        let verified = cur
            .verification
            .as_ref()
            .is_some_and(|v| v.result == VerificationResult::Passed);
        if matches!(to, ModelState::Active | ModelState::Canary) && cur.state != to && !verified {
            return Err(CatalogError::NotVerified { id: cur.id, to });
        }
        tx.execute(
            "UPDATE models SET state = ?2, updated_at_ms = ?3 WHERE digest = ?1",
            params![digest, to.as_str(), now_ms() as i64],
        )?;
        let entry = get_in(&tx, &digest)?.ok_or(CatalogError::NotFound(digest))?;
        tx.commit()?;
        self.wrote();
        tracing::info!(model = %entry.id, from = cur.state.as_str(), to = to.as_str(), "model state changed");
        Ok(entry)
    }

    /// Records the outcome of a verification (and the artifact's size when it was read).
    pub fn record_verification(
        &self,
        id: &str,
        v: &Verification,
        size_bytes: Option<u64>,
    ) -> Result<CatalogEntry, CatalogError> {
        let digest = normalize_digest(id)?;
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE models SET verify_result = ?2, verify_at_ms = ?3, verify_actual = ?4,
                 verify_detail = ?5, size_bytes = COALESCE(?6, size_bytes), updated_at_ms = ?7
             WHERE digest = ?1",
            params![
                digest,
                v.result.as_str(),
                v.at_ms as i64,
                v.actual_sha256,
                v.detail,
                size_bytes.map(|s| s as i64),
                now_ms() as i64
            ],
        )?;
        if n == 0 {
            return Err(CatalogError::NotFound(format!("sha256:{digest}")));
        }
        self.wrote();
        get_in(&conn, &digest)?.ok_or(CatalogError::NotFound(digest))
    }
}

const SELECT: &str = "SELECT digest, model_ref, source, size_bytes, state, verify_result,
    verify_at_ms, verify_actual, verify_detail, created_at_ms, updated_at_ms FROM models";

fn source_str(s: ModelSourceKind) -> &'static str {
    match s {
        ModelSourceKind::Local => "local",
        ModelSourceKind::Url => "url",
    }
}

/// A row as stored; converted to the wire type with validation of the enum columns.
struct Row {
    digest: String,
    model_ref: String,
    source: String,
    size_bytes: Option<i64>,
    state: String,
    verify_result: Option<String>,
    verify_at_ms: Option<i64>,
    verify_actual: Option<String>,
    verify_detail: Option<String>,
    created_at_ms: i64,
    updated_at_ms: i64,
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        digest: r.get(0)?,
        model_ref: r.get(1)?,
        source: r.get(2)?,
        size_bytes: r.get(3)?,
        state: r.get(4)?,
        verify_result: r.get(5)?,
        verify_at_ms: r.get(6)?,
        verify_actual: r.get(7)?,
        verify_detail: r.get(8)?,
        created_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
    })
}

impl Row {
    fn into_entry(self) -> Result<CatalogEntry, CatalogError> {
        let source = match self.source.as_str() {
            "local" => ModelSourceKind::Local,
            "url" => ModelSourceKind::Url,
            other => return Err(CatalogError::Corrupt(other.into())),
        };
        let state = ModelState::parse(&self.state)
            .ok_or_else(|| CatalogError::Corrupt(self.state.clone()))?;
        let verification = match self.verify_result {
            None => None,
            Some(r) => Some(Verification {
                result: VerificationResult::parse(&r).ok_or(CatalogError::Corrupt(r))?,
                at_ms: self.verify_at_ms.unwrap_or(0).max(0) as u64,
                actual_sha256: self.verify_actual,
                detail: self.verify_detail,
            }),
        };
        Ok(CatalogEntry {
            id: format!("sha256:{}", self.digest),
            digest: self.digest,
            model_ref: self.model_ref,
            source,
            size_bytes: self.size_bytes.map(|s| s.max(0) as u64),
            state,
            verification,
            created_at_ms: self.created_at_ms.max(0) as u64,
            updated_at_ms: self.updated_at_ms.max(0) as u64,
        })
    }
}

fn get_in(conn: &Connection, digest: &str) -> Result<Option<CatalogEntry>, CatalogError> {
    conn.query_row(&format!("{SELECT} WHERE digest = ?1"), [digest], row)
        .optional()?
        .map(Row::into_entry)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    fn passed() -> Verification {
        Verification {
            result: VerificationResult::Passed,
            at_ms: 1,
            actual_sha256: Some(D.into()),
            detail: None,
        }
    }

    #[test]
    fn survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let c = Catalog::open(dir.path()).unwrap();
            let (e, new) = c.register("/models/a.gguf", &D.to_uppercase()).unwrap();
            assert!(new);
            assert_eq!(e.id, format!("sha256:{D}"));
            assert_eq!(e.state, ModelState::Draft);
            c.record_verification(&e.id, &passed(), Some(5)).unwrap();
            c.set_state(D, ModelState::Active).unwrap();
        }
        // Reopen: schema creation is idempotent and the entry is still there.
        let c = Catalog::open(dir.path()).unwrap();
        let e = c.get(&format!("sha256:{D}")).unwrap();
        assert_eq!(e.state, ModelState::Active);
        assert_eq!(e.size_bytes, Some(5));
        assert_eq!(e.verification.unwrap().result, VerificationResult::Passed);
        assert_eq!(c.list().unwrap().len(), 1);
        assert!(dir.path().join(DB_FILE).is_file());
    }

    #[test]
    fn register_is_idempotent_but_not_rebindable() {
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        let (a, _) = c.register("https://h.example/m.gguf", D).unwrap();
        assert_eq!(a.source, ModelSourceKind::Url);
        let (b, new) = c.register("https://h.example/m.gguf", D).unwrap();
        assert!(!new);
        assert_eq!(a, b);
        let err = c.register("/other.gguf", D).unwrap_err();
        assert!(
            matches!(err, CatalogError::AlreadyRegistered { .. }),
            "{err}"
        );
        assert_eq!(c.get(D).unwrap().model_ref, "https://h.example/m.gguf");
        assert!(matches!(
            c.register("/x", "abc").unwrap_err(),
            CatalogError::InvalidDigest(_)
        ));
        assert!(matches!(
            c.register(&format!("sha256:{D}"), D).unwrap_err(),
            CatalogError::InvalidModelRef(_)
        ));
        assert!(matches!(
            c.get(&"f".repeat(64)).unwrap_err(),
            CatalogError::NotFound(_)
        ));
    }

    #[test]
    fn lifecycle_transitions_are_validated() {
        use ModelState::*;
        let dir = tempfile::tempdir().unwrap();
        let c = Catalog::open(dir.path()).unwrap();
        c.register("/m.gguf", D).unwrap();
        // Unverified artifacts are not promoted; nothing changes.
        let err = c.set_state(D, Active).unwrap_err();
        assert!(matches!(err, CatalogError::NotVerified { .. }), "{err}");
        assert_eq!(err.code(), ErrorCode::UntrustedArtifact);
        assert_eq!(c.get(D).unwrap().state, Draft);
        let err = c.set_state(D, Deprecated).unwrap_err();
        assert!(matches!(
            err,
            CatalogError::IllegalTransition {
                from: Draft,
                to: Deprecated
            }
        ));
        c.record_verification(D, &passed(), None).unwrap();
        for to in [Active, Canary, Active, Deprecated, Retired] {
            assert_eq!(c.set_state(D, to).unwrap().state, to);
        }
        for to in [Draft, Active, Canary, Deprecated] {
            let err = c.set_state(D, to).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidParams, "{err}");
        }
        assert_eq!(c.get(D).unwrap().state, Retired);
    }

    #[test]
    fn transition_table() {
        use ModelState::*;
        let allowed: Vec<_> = ModelState::ALL
            .iter()
            .flat_map(|a| ModelState::ALL.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a != b && transition_allowed(*a, *b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Draft, Active),
                (Draft, Canary),
                (Draft, Retired),
                (Active, Canary),
                (Active, Deprecated),
                (Canary, Active),
                (Canary, Deprecated),
                (Deprecated, Active),
                (Deprecated, Retired),
            ]
        );
        // Retired is final.
        assert!(
            ModelState::ALL
                .iter()
                .all(|s| *s == Retired || !transition_allowed(Retired, *s))
        );
    }

    #[test]
    fn state_dir_precedence() {
        assert_eq!(state_dir(Some("/srv/x")), PathBuf::from("/srv/x"));
        // The env-dependent branches are exercised by the daemon test ($STATE_DIRECTORY).
    }
}
