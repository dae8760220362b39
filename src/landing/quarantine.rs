//! Quarantine: one object per rejected line, `quarantine/<id>.json`. The id is derived from
//! (segment id, line number), and entries are written create-only, so a batch rerun after a
//! crash quarantines nothing twice. The error code, JSON path and provenance are plaintext;
//! the original bytes and the full error message (which may quote them) are sealed.
//!
//! A line over the limit of one event ([`crate::sources::MAX_LINE_BYTES`]) is never kept
//! whole: its entry seals the first [`crate::job::PREFIX_BYTES`] bytes and records the whole
//! line's length and SHA-256 (`truncated`); such an entry cannot be replayed.

use super::LandingError;
use crate::crypto::kms::{Kms, WrappedKey, b64};
use crate::crypto::{Cipher, DataKey, aad};
use crate::lake::layout;
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A quarantine entry as read (stored as `super::format::QuarantineFile`, which never changes).
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub source: String,
    /// The tenant configured for the source, kept so that a replay decodes alike.
    pub tenant: Option<String>,
    pub arrived_at: DateTime<Utc>,
    pub quarantined_at: DateTime<Utc>,
    pub batch_id: String,
    pub segment_id: String,
    pub line_no: u64,
    pub error_code: String,
    pub error_path: String,
    pub schema_version: String,
    pub attempts: u32,
    /// Length of the original line (all of it, also when only a prefix is kept).
    pub original_bytes: u64,
    /// Set when the line was too large to keep: only its first bytes are sealed.
    pub truncated: Option<TruncatedLine>,
    pub dek_id: String,
    pub wrapped_dek: WrappedKey,
    pub sealed: Vec<u8>,
}

/// What is known of a line too large to keep whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TruncatedLine {
    /// The whole line's length in bytes.
    pub length: u64,
    /// The whole line's SHA-256, hex.
    pub sha256: String,
}

impl Entry {
    /// Whether the sealed original is the whole line (and within the limit), so a replay
    /// can run it again.
    pub fn replayable(&self) -> bool {
        self.truncated.is_none() && self.original_bytes <= crate::sources::MAX_LINE_BYTES as u64
    }
}

/// What the sealed part holds.
#[derive(Serialize, Deserialize)]
pub struct Secret {
    pub message: String,
    #[serde(with = "b64")]
    pub original: Vec<u8>,
}

pub fn entry_id(segment_id: &str, line_no: u64) -> String {
    let h = crate::crypto::sha256(format!("{segment_id}\n{line_no}").as_bytes());
    format!("q-{}", &hex::encode(h)[..24])
}

fn entry_aad(id: &str, dek_id: &str) -> Vec<u8> {
    aad(&[b"holdfast.quarantine.v1", id.as_bytes(), dek_id.as_bytes()])
}

/// Provenance of a rejected line.
#[derive(Debug, Clone)]
pub struct Origin<'a> {
    pub source: &'a str,
    pub tenant: Option<&'a str>,
    /// Set for a replayed line: the entry it came from (its id is kept).
    pub entry_id: Option<&'a str>,
    pub arrived_at: DateTime<Utc>,
    pub segment_id: &'a str,
    pub line_no: u64,
}

/// Writes quarantine entries of one batch under one DEK (wrapped once).
pub struct Writer {
    cipher: Cipher,
    wrapped: WrappedKey,
    batch_id: String,
}

impl Writer {
    pub async fn new(kms: &dyn Kms, batch_id: &str) -> Result<Self, LandingError> {
        let dek = DataKey::generate();
        let wrapped = kms.wrap(&dek).await?;
        Ok(Writer {
            cipher: dek.cipher(),
            wrapped,
            batch_id: batch_id.to_string(),
        })
    }

    /// Seals a rejected line. A line over the limit of one event keeps only its first bytes
    /// (with its length and SHA-256), whatever the caller hands in.
    pub fn seal(
        &self,
        origin: &Origin<'_>,
        reject: &crate::schema::Reject,
        original: &[u8],
        now: DateTime<Utc>,
    ) -> Entry {
        if original.len() > crate::sources::MAX_LINE_BYTES {
            let t = TruncatedLine {
                length: original.len() as u64,
                sha256: hex::encode(crate::crypto::sha256(original)),
            };
            let prefix = &original[..crate::job::PREFIX_BYTES];
            return self.seal_truncated(origin, reject, prefix, t, now);
        }
        self.seal_whole(origin, reject, original, now)
    }

    /// Seals what is kept of a line too large to keep whole: `prefix`, and in plaintext its
    /// length and SHA-256.
    pub fn seal_truncated(
        &self,
        origin: &Origin<'_>,
        reject: &crate::schema::Reject,
        prefix: &[u8],
        line: TruncatedLine,
        now: DateTime<Utc>,
    ) -> Entry {
        let mut e = self.seal_whole(origin, reject, prefix, now);
        e.original_bytes = line.length;
        e.truncated = Some(line);
        e
    }

    fn seal_whole(
        &self,
        origin: &Origin<'_>,
        reject: &crate::schema::Reject,
        original: &[u8],
        now: DateTime<Utc>,
    ) -> Entry {
        let id = origin.entry_id.map_or_else(
            || entry_id(origin.segment_id, origin.line_no),
            str::to_string,
        );
        let secret = Secret {
            message: reject.message.clone(),
            original: original.to_vec(),
        };
        let mut plain = serde_json::to_vec(&secret).expect("serializes");
        let sealed = self
            .cipher
            .seal(&plain, &entry_aad(&id, self.cipher.dek_id()));
        zeroize::Zeroize::zeroize(&mut plain);
        Entry {
            id,
            source: origin.source.to_string(),
            tenant: origin.tenant.map(str::to_string),
            arrived_at: origin.arrived_at,
            quarantined_at: now,
            batch_id: self.batch_id.clone(),
            segment_id: origin.segment_id.to_string(),
            line_no: origin.line_no,
            error_code: reject.code.clone(),
            error_path: reject.path.clone(),
            schema_version: reject.schema_version.clone(),
            attempts: 1,
            original_bytes: original.len() as u64,
            truncated: None,
            dek_id: self.cipher.dek_id().to_string(),
            wrapped_dek: self.wrapped.clone(),
            sealed,
        }
    }
}

/// Writes an entry; an entry already there (a rerun after a crash) is left as it is.
pub async fn put(store: &Store, e: &Entry) -> Result<bool, LandingError> {
    let bytes = super::format::encode_entry(e);
    Ok(store
        .put_new(&layout::quarantine_entry(&e.id), bytes)
        .await?
        == Put::Created)
}

pub async fn list(store: &Store) -> Result<Vec<Entry>, LandingError> {
    let mut out = Vec::new();
    for meta in store.list(layout::QUARANTINE).await? {
        if layout::parse_quarantine_entry(&meta.location).is_some() {
            let bytes = store.get(&meta.location).await?;
            out.push(parse(meta.location.as_ref(), &bytes)?);
        }
    }
    out.sort_by(|a, b| {
        (a.arrived_at, &a.segment_id, a.line_no).cmp(&(b.arrived_at, &b.segment_id, b.line_no))
    });
    Ok(out)
}

fn parse(object: &str, bytes: &[u8]) -> Result<Entry, LandingError> {
    super::format::decode_entry(bytes).map_err(|e| LandingError::Corrupt {
        object: object.to_string(),
        problem: format!("not a quarantine entry: {e}"),
    })
}

pub async fn get(store: &Store, id: &str) -> Result<Entry, LandingError> {
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(LandingError::NotFound(id.to_string()));
    }
    let path = layout::quarantine_entry(id);
    match store.get_opt(&path).await? {
        Some(bytes) => parse(path.as_ref(), &bytes),
        None => Err(LandingError::NotFound(id.to_string())),
    }
}

/// Decrypts an entry's original bytes and full message (for an operator).
pub async fn open(kms: &dyn Kms, e: &Entry) -> Result<Secret, LandingError> {
    let cipher = kms.unwrap_key(&e.dek_id, &e.wrapped_dek).await?.cipher();
    let mut plain = cipher.open(&e.sealed, &entry_aad(&e.id, &e.dek_id), &|| {
        format!("quarantine entry {}", e.id)
    })?;
    let secret = serde_json::from_slice(&plain).map_err(|_| LandingError::Corrupt {
        object: e.id.clone(),
        problem: "sealed part is not readable".into(),
    });
    zeroize::Zeroize::zeroize(&mut plain);
    secret
}
