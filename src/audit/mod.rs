//! The audit trail: append-only, hash-chained entries in the store (`audit/v<20 digits>.json`),
//! each naming the SHA-256 of the one before, written with create-only puts so two writers
//! cannot fork it silently (the loser of a race re-reads the head and appends after it).
//! Every decryption, refusal, key unwrap, hold change and deletion goes through
//! [`Audit::record`]; key rotations will too.

use crate::clock::Clock;
use crate::lake::LakeError;
use crate::lake::layout::{self, AuditPath};
use crate::storage::{Put, Store};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::sync::Arc;

mod format;
pub use format::FORMAT;

pub const PREFIX: &str = layout::AUDIT;
/// Appends that may lose a race in a row before giving up.
const ATTEMPTS: u32 = 200;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error("audit trail is busy: {0} appends lost the race in a row")]
    Contended(u32),
}

/// An audit entry as read (stored as [`format::EntryFile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub sequence: u64,
    /// SHA-256 of the previous entry's bytes; `None` only for sequence 1.
    pub previous_sha256: Option<String>,
    pub at: DateTime<Utc>,
    /// The name the actor acted under (`--actor`, which the access policy maps to the OS
    /// user), or the OS user's own name.
    pub actor: String,
    /// The operating-system user whose command appended the entry (absent only in entries
    /// written before it was recorded).
    pub os_user: Option<String>,
    /// `decrypt`, `decrypt.refused`, `sweep.refused`, `blind_index`, `key.unwrap`, `quarantine.show`, …
    pub action: String,
    pub case: Option<String>,
    pub details: serde_json::Value,
}

impl Entry {
    /// The SHA-256 of the entry's stored bytes: what the next entry, and anything that cites
    /// this one, records.
    pub fn sha256(&self) -> String {
        crate::lake::manifest::sha256_hex(&format::encode(self))
    }
}

fn entry_path(sequence: u64) -> object_store::path::Path {
    AuditPath::new(sequence).to_path()
}

/// Something worth recording: its action name and details.
pub trait AuditEvent: Serialize {
    const ACTION: &'static str;
}

#[derive(Debug, Clone)]
pub struct Audit {
    store: Store,
    clock: Arc<dyn Clock>,
    /// Recorded in every entry beside the actor.
    os_user: String,
}

/// The head of the chain: what a third party records to check later that nothing before it
/// changed.
#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub sequence: u64,
    pub sha256: Option<String>,
}

impl std::fmt::Display for Head {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}",
            self.sequence,
            self.sha256.as_deref().unwrap_or("(empty)")
        )
    }
}

impl Audit {
    /// Appends entries under the operating-system user running this process.
    pub fn new(store: Store, clock: Arc<dyn Clock>) -> Self {
        let os_user = crate::access::identity::os_user();
        Audit::for_user(store, clock, &os_user)
    }

    /// Appends entries under `os_user` (an identity the caller authenticated).
    pub fn for_user(store: Store, clock: Arc<dyn Clock>, os_user: &str) -> Self {
        Audit {
            store,
            clock,
            os_user: os_user.to_string(),
        }
    }

    async fn sequences(&self) -> Result<Vec<u64>, LakeError> {
        self.store
            .versions(PREFIX, |p| AuditPath::parse(p).map(|a| a.sequence))
            .await
    }

    pub async fn head(&self) -> Result<Head, AuditError> {
        match self.sequences().await?.last() {
            None => Ok(Head {
                sequence: 0,
                sha256: None,
            }),
            Some(&seq) => {
                let bytes = self.store.get(&entry_path(seq)).await?;
                Ok(Head {
                    sequence: seq,
                    sha256: Some(crate::lake::manifest::sha256_hex(&bytes)),
                })
            }
        }
    }

    /// Appends one entry after the current head; returns it.
    pub async fn record<E: AuditEvent>(
        &self,
        actor: &str,
        case: Option<&str>,
        event: &E,
    ) -> Result<Entry, AuditError> {
        let details = serde_json::to_value(event).expect("audit events serialize");
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // lost a race: back off a little, with jitter, and append after the new head
                let ms = 1 + rand::RngCore::next_u32(&mut rand::rng()) % (2 + attempt.min(50));
                tokio::time::sleep(std::time::Duration::from_millis(ms as u64)).await;
            }
            let head = self.head().await?;
            let entry = Entry {
                sequence: head.sequence + 1,
                previous_sha256: head.sha256,
                at: self.clock.now(),
                actor: actor.to_string(),
                os_user: Some(self.os_user.clone()),
                action: E::ACTION.to_string(),
                case: case.map(str::to_string),
                details: details.clone(),
            };
            let bytes = format::encode(&entry);
            if self
                .store
                .put_new(&entry_path(entry.sequence), bytes)
                .await?
                == Put::Created
            {
                return Ok(entry);
            }
        }
        Err(AuditError::Contended(ATTEMPTS))
    }

    /// Every entry, in order, with the SHA-256 of its bytes.
    pub async fn entries(&self) -> Result<Vec<(Entry, String)>, AuditError> {
        let mut out = Vec::new();
        for seq in self.sequences().await? {
            let path = entry_path(seq);
            let bytes = self.store.get(&path).await?;
            let entry = format::decode(&bytes).map_err(|e| LakeError::Corrupt {
                object: path.to_string(),
                problem: format!("not an audit entry: {e}"),
            })?;
            out.push((entry, crate::lake::manifest::sha256_hex(&bytes)));
        }
        Ok(out)
    }

    /// Walks the chain; the first broken link, if any. An entry whose time lies more than
    /// `max_skew` before the latest time seen so far breaks the chain too: entries are
    /// appended in order, so time running backwards means a clock was set back or entries
    /// were forged.
    pub async fn verify(&self, max_skew: chrono::Duration) -> Result<VerifyReport, AuditError> {
        let mut latest_at: Option<DateTime<Utc>> = None;
        let mut report = VerifyReport {
            entries: 0,
            head: None,
            broken: None,
        };
        let mut prev: Option<String> = None;
        for (expected, seq) in (1u64..).zip(self.sequences().await?) {
            let path = entry_path(seq);
            let bytes = self.store.get(&path).await?;
            let sha = crate::lake::manifest::sha256_hex(&bytes);
            let problem = match format::decode(&bytes) {
                Err(e) => Some(format!("not an audit entry: {e}")),
                Ok(_) if seq != expected => {
                    Some(format!("sequence {expected} is missing (found {seq} next)"))
                }
                Ok(e) if e.sequence != seq => {
                    Some(format!("says sequence {}, stored as {seq}", e.sequence))
                }
                Ok(e) if e.previous_sha256 != prev => Some(format!(
                    "names previous hash {}, but entry {} hashes to {}",
                    e.previous_sha256.as_deref().unwrap_or("none"),
                    seq - 1,
                    prev.as_deref().unwrap_or("none")
                )),
                Ok(e) if latest_at.is_some_and(|l| e.at < l - max_skew) => Some(format!(
                    "recorded at {}, before an earlier entry's {} by more than the allowed skew of {} s",
                    crate::clock::fmt_ts(e.at),
                    crate::clock::fmt_ts(latest_at.unwrap_or_default()),
                    max_skew.num_seconds()
                )),
                Ok(e) => {
                    latest_at = Some(latest_at.map_or(e.at, |l| l.max(e.at)));
                    None
                }
            };
            if let Some(problem) = problem {
                report.broken = Some(crate::lake::verify::Problem {
                    object: path.to_string(),
                    problem,
                });
                return Ok(report);
            }
            report.entries += 1;
            prev = Some(sha);
        }
        report.head = prev;
        Ok(report)
    }
}

#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub entries: u64,
    pub head: Option<String>,
    pub broken: Option<crate::lake::verify::Problem>,
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.broken {
            Some(p) => write!(
                f,
                "BROKEN after {} good entr(ies): {}: {}",
                self.entries, p.object, p.problem
            ),
            None => write!(
                f,
                "audit trail intact: {} entr(ies), head {}",
                self.entries,
                self.head.as_deref().unwrap_or("(empty)")
            ),
        }
    }
}

// ---- events -------------------------------------------------------------------------------

/// Plaintext was produced from the lake for a query.
#[derive(Debug, Serialize)]
pub struct Decrypted<'a> {
    /// The statement as [`crate::query::redact::Redactor::statement`] records it.
    pub query: &'a str,
    pub records: u64,
    /// The event ids, or, past 1,000 of them, their count and the SHA-256 of the sorted list.
    pub event_ids: serde_json::Value,
    pub deks_unwrapped: Vec<String>,
    /// Blind indexes computed (addresses searched for); the addresses are not recorded.
    pub blind_indexes: u64,
    /// The statement failed after it started; what it opened before is listed all the same.
    pub failed: bool,
    /// The kind of failure (`cast`, `parse`, `outside_scope`, …), never its message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// Calls to the key service the statement made.
    pub kms: crate::crypto::kms::KmsCalls,
}
impl AuditEvent for Decrypted<'_> {
    const ACTION: &'static str = "decrypt";
}

/// A decryption (or blind index) was asked for and refused.
#[derive(Debug, Serialize)]
pub struct Refused<'a> {
    pub what: &'a str,
    /// Redacted as in [`Decrypted::query`].
    pub query: &'a str,
    pub reason: &'a str,
}
impl AuditEvent for Refused<'_> {
    const ACTION: &'static str = "decrypt.refused";
}

/// A retention sweep was asked for and refused (for want of the retention role).
#[derive(Debug, Serialize)]
pub struct SweepRefused<'a> {
    pub reason: &'a str,
    /// Whether the refused sweep was a dry run.
    pub dry_run: bool,
}
impl AuditEvent for SweepRefused<'_> {
    const ACTION: &'static str = "sweep.refused";
}

/// An operator decrypted a quarantine entry.
#[derive(Debug, Serialize)]
pub struct QuarantineShown<'a> {
    pub entry: &'a str,
    pub dek: &'a str,
}
impl AuditEvent for QuarantineShown<'_> {
    const ACTION: &'static str = "quarantine.show";
}

/// Every record of the lake was decrypted to check it (`verify --deep`).
#[derive(Debug, Serialize)]
pub struct DeepVerified {
    pub files: usize,
    pub records: u64,
    pub problems: usize,
    /// Calls to the key service the pass made.
    pub kms: crate::crypto::kms::KmsCalls,
}
impl AuditEvent for DeepVerified {
    const ACTION: &'static str = "verify.deep";
}

/// Quarantined lines were decrypted to run them again.
#[derive(Debug, Serialize)]
pub struct Replayed {
    pub entries: Vec<String>,
}
impl AuditEvent for Replayed {
    const ACTION: &'static str = "quarantine.replay";
}

/// A batch ran: it unwrapped the DEK of each landing segment it read (one per segment), and
/// committed these data files in these manifest versions (`verify` reconciles both with the
/// manifests). `recovered`: recorded by the next batch for a batch killed after its commit.
#[derive(Debug, Serialize)]
pub struct BatchCommitted<'a> {
    pub batch_id: &'a str,
    pub segments: Vec<String>,
    pub deks_unwrapped: u64,
    pub stored: u64,
    pub quarantined: u64,
    pub files: u64,
    pub committed_files: Vec<String>,
    /// Partition directory -> the manifest version the batch committed.
    pub partitions: std::collections::BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// Calls to the key service up to this entry (not known for a recovered batch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms: Option<crate::crypto::kms::KmsCalls>,
}
impl AuditEvent for BatchCommitted<'_> {
    const ACTION: &'static str = "batch";
}

/// Valid events arrived after their retention ended and were not stored.
#[derive(Debug, Serialize)]
pub struct ExpiredOnArrival<'a> {
    pub batch_id: &'a str,
    pub events: u64,
    pub event_ids: &'a serde_json::Value,
}
impl AuditEvent for ExpiredOnArrival<'_> {
    const ACTION: &'static str = "retention.expired_on_arrival";
}

/// A landing segment that does not parse or fails authentication was moved aside whole, so
/// the rest of the landing zone could go on; its bytes are kept at `moved_to`.
#[derive(Debug, Serialize)]
pub struct SegmentIsolated<'a> {
    pub batch_id: &'a str,
    pub segment: &'a str,
    pub moved_to: &'a str,
    pub reason: &'a str,
}
impl AuditEvent for SegmentIsolated<'_> {
    const ACTION: &'static str = "landing.isolated";
}

/// A legal hold changed state (placed, release requested, released) or was refused.
#[derive(Debug, Serialize)]
pub struct HoldChanged<'a> {
    pub hold: &'a str,
    pub change: &'a str,
    pub files: usize,
    pub detail: &'a str,
}
impl AuditEvent for HoldChanged<'_> {
    const ACTION: &'static str = "legal_hold";
}

/// The list itself, or its count and hash when long.
pub fn id_list(mut ids: Vec<String>) -> serde_json::Value {
    if ids.len() <= 1000 {
        return serde_json::json!(ids);
    }
    ids.sort();
    let joined = ids.join("\n");
    serde_json::json!({"count": ids.len(), "sha256_of_sorted_list": crate::lake::manifest::sha256_hex(joined.as_bytes())})
}

#[cfg(test)]
mod tests;
