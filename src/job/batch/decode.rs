//! Stage 2, decode and validate: the worker threads open landing blocks, decode each line
//! with its source's adapter, validate it, give it its partition, policy and expiry, hash it,
//! and compute its blind indexes. Its record travels beside the row to the sink, whose file
//! writer seals it with its tenant's group (format 3); in the formats 1 and 2 that test builds
//! still write, a worker compresses and seals the record itself once its tenant's dictionary
//! of its file is known.

use super::keys::{FileKey, IdKey, KeyBook, PartKeys};
use super::read::{Block, OpenSegment};
use crate::clock::micros;
use crate::config::{Policies, RetentionFloor};
use crate::crypto::kms::Kms;
use crate::crypto::{IndexKeyCache, RecordCompressor, record_aad, seal_record, sha256};
use crate::job::JobError;
use crate::lake::datafile::Row;
use crate::lake::layout::Partition;
use crate::schema::{self, Reject};
use foldhash::HashMap;
use std::sync::Arc;

/// A decoded row: the file it goes to, its dedupe key, the row (its payload sealed, or empty
/// with the plaintext record in `plain` while its tenant's dictionary is still being learnt).
pub(super) struct DecodedRow {
    pub(super) file: FileKey,
    pub(super) key: IdKey,
    pub(super) row: Box<Row>,
    pub(super) plain: Option<Vec<u8>>,
}

/// A line that is not stored, with why and its original bytes (for quarantine).
pub(super) struct RejectedLine {
    /// Line number within its block, from 0.
    pub(super) line: u64,
    pub(super) reject: Reject,
    pub(super) original: Vec<u8>,
    /// The event id, when a valid event was refused because its retention had ended.
    pub(super) expired: Option<String>,
}

pub(super) enum Decoded {
    Row(DecodedRow),
    Rejected(RejectedLine),
    /// A valid event of a tenant whose own key is unavailable: it waits in landing.
    Waiting(String),
}

/// What a worker hands on for one block, in the block's line order.
pub(super) struct DecodedBlock {
    pub(super) seq: u64,
    pub(super) segment: Arc<OpenSegment>,
    pub(super) lines: u64,
    pub(super) blank: u64,
    pub(super) items: Vec<Decoded>,
}

/// Why a line is not stored; for an event whose retention had already ended, its id too
/// (the audit entry lists them).
struct Rejected {
    reject: Reject,
    expired: Option<String>,
}

impl From<Reject> for Rejected {
    fn from(reject: Reject) -> Self {
        Rejected {
            reject,
            expired: None,
        }
    }
}

/// One worker thread: what it shares (key book, policies, the batch's time) and what it
/// keeps (cached partition keys and index keys, a zstd context).
pub(super) struct Worker<'a> {
    pub(super) keys: &'a KeyBook,
    pub(super) policies: &'a Policies,
    pub(super) floor: RetentionFloor,
    pub(super) max_future: chrono::Duration,
    pub(super) now: chrono::DateTime<chrono::Utc>,
    pub(super) validator: &'static schema::Validator,
    pub(super) parts: HashMap<FileKey, Arc<PartKeys>>,
    pub(super) kms: &'a dyn Kms,
    pub(super) index_keys: IndexKeyCache,
    pub(super) z: RecordCompressor,
    pub(super) domains: &'a super::Domains,
    /// The key service failed (a blind-index key did not open): the block fails with it.
    pub(super) failure: Option<crate::crypto::kms::KmsError>,
}

impl Worker<'_> {
    pub(super) fn work(&mut self, block: &Block) -> Result<DecodedBlock, JobError> {
        let seg = &block.segment;
        let mut data = seg.segment.open_block(&seg.cipher, block.block)?;
        let mut out = DecodedBlock {
            seq: block.seq,
            segment: seg.clone(),
            lines: 0,
            blank: 0,
            items: Vec::new(),
        };
        if !data.is_empty() {
            let body = data.strip_suffix(b"\n").unwrap_or(&data);
            let mut start = 0;
            let ends = memchr::memchr_iter(b'\n', body).chain(std::iter::once(body.len()));
            for end in ends {
                let line = &body[start..end];
                start = end + 1;
                let local = out.lines;
                out.lines += 1;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    out.blank += 1;
                    continue;
                }
                match self.decode_line(seg, line, &mut out.items) {
                    Ok(()) => {}
                    Err(Rejected { reject, expired }) => {
                        out.items.push(Decoded::Rejected(RejectedLine {
                            line: local,
                            reject,
                            original: line.to_vec(),
                            expired,
                        }))
                    }
                }
            }
        }
        zeroize::Zeroize::zeroize(&mut data);
        match self.failure.take() {
            Some(e) => Err(JobError::Kms(e)),
            None => Ok(out),
        }
    }

    /// Whether an event's time is one the store keeps: not later than its arrival plus
    /// `max_future`, its retention not ended (`now`), and not older than the store's floor
    /// allows. Anything else waits in quarantine for a person to decide.
    fn check_time(
        &self,
        arrived_at: chrono::DateTime<chrono::Utc>,
        f: &schema::IndexFields,
        expires: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<chrono::DateTime<chrono::Utc>, Rejected> {
        let at = crate::clock::fmt_ts(f.occurred_at);
        let arrived = crate::clock::fmt_ts(arrived_at);
        if arrived_at
            .checked_add_signed(self.max_future)
            .is_some_and(|latest| f.occurred_at > latest)
        {
            return Err(Reject::new(
                "event.occurred_at_future",
                "/occurredAt",
                format!(
                    "occurredAt {at} is more than {} hour(s) after the event arrived ({arrived})",
                    self.max_future.num_hours()
                ),
            )
            .into());
        }
        let Some(expires) = expires else {
            return Err(Reject::new(
                "retention.expiry",
                "/occurredAt",
                format!("occurredAt {at} plus the retention period is past the end of time"),
            )
            .into());
        };
        if expires <= self.now {
            return Err(Rejected {
                reject: Reject::new(
                    "retention.expired_on_arrival",
                    "/occurredAt",
                    format!(
                        "occurredAt {at}: its retention ended at {} before the batch at {}",
                        crate::clock::fmt_ts(expires),
                        crate::clock::fmt_ts(self.now)
                    ),
                ),
                expired: Some(f.event_id.clone()),
            });
        }
        if self.floor.passed(f.occurred_at, arrived_at) {
            return Err(Reject::new(
                "event.occurred_at_past",
                "/occurredAt",
                format!(
                    "occurredAt {at} is more than the store's retention floor ({} days) before the event arrived ({arrived})",
                    self.floor.days
                ),
            )
            .into());
        }
        Ok(expires)
    }

    /// Formats 1 and 2 (test builds): the record sealed under its file's DEK once its
    /// tenant's dictionary of the file is known. Otherwise (always in format 3) an empty
    /// payload and the plaintext beside it, for the sink.
    fn seal(
        &mut self,
        file: &FileKey,
        f: &schema::IndexFields,
        record: &[u8],
    ) -> (Vec<u8>, Option<Vec<u8>>) {
        // no clone of the file key for a file already met (nearly every row)
        if !self.parts.contains_key(file) {
            self.parts.insert(file.clone(), self.keys.part(file));
        }
        let pk = &self.parts[file];
        let Some(dict) = pk.dict.get(&f.tenant_id) else {
            return (Vec::new(), Some(record.to_vec()));
        };
        let aad = record_aad(
            &f.tenant_id,
            &f.event_id,
            &f.interaction_id,
            pk.cipher.dek_id(),
        );
        let mut payload = Vec::with_capacity(record.len() / 3 + 64);
        seal_record(
            &pk.cipher,
            &mut self.z,
            dict.as_deref(),
            record,
            &aad,
            &mut payload,
        );
        (payload, None)
    }

    /// Decodes, validates and seals one line's events into `out`: through the fast path when
    /// it takes the line (a valid canonical event of the current version), else through the
    /// source's adapter and the JSON Schema.
    fn decode_line(
        &mut self,
        seg: &OpenSegment,
        line: &[u8],
        out: &mut Vec<Decoded>,
    ) -> Result<(), Rejected> {
        if let Some(f) = seg.source.decode_fast(line) {
            out.push(self.row(seg, f, line)?);
            return Ok(());
        }
        let decoded = seg
            .source
            .decode(line, seg.segment.header.tenant.as_deref())?;
        let mut items = Vec::with_capacity(decoded.len());
        for d in decoded {
            let checked = self.validator.check(&d.event)?;
            // an upcast event is stored as its current-version serialization
            let record: std::borrow::Cow<'_, [u8]> = match &checked.upcast {
                Some(up) => std::borrow::Cow::Owned(
                    serde_json::to_vec(up).expect("a JSON value serializes"),
                ),
                None => d.record,
            };
            items.push(self.row(seg, checked.fields, &record)?);
        }
        out.extend(items);
        Ok(())
    }

    /// A valid event's row: its partition, policy and expiry, its hash, blind indexes and
    /// sealed record (`record`: the exact bytes stored).
    fn row(
        &mut self,
        seg: &OpenSegment,
        f: schema::IndexFields,
        record: &[u8],
    ) -> Result<Decoded, Rejected> {
        let partition = Partition::of(f.occurred_at, &f.interaction_type).ok_or_else(|| {
            Reject::new(
                "event.partition",
                "/occurredAt",
                "occurredAt or interactionType cannot name a partition",
            )
        })?;
        if self.domains.waiting.contains_key(&f.tenant_id) {
            return Ok(Decoded::Waiting(f.tenant_id));
        }
        let (policy_id, expires) =
            self.policies
                .apply(&f.tenant_id, &f.interaction_type, f.occurred_at);
        let expires = self.check_time(seg.segment.header.arrived_at, &f, expires)?;
        let file = FileKey {
            partition,
            policy: policy_id.clone(),
            domain: self.domains.bound.get(&f.tenant_id).cloned(),
        };
        let (payload, plain) = self.seal(&file, &f, record);
        let key = IdKey::of(&f.tenant_id, &f.event_id);
        let address_hmacs = match futures::executor::block_on(self.index_keys.blind_indexes(
            self.kms,
            &f.tenant_id,
            &f.addresses,
        )) {
            Ok(h) => h,
            Err(e) => {
                // the key service, not the event: the batch stops and commits nothing
                self.failure.get_or_insert(e);
                return Ok(Decoded::Waiting(f.tenant_id));
            }
        };
        let row = Row {
            record_hash: sha256(record),
            event_id: f.event_id,
            interaction_id: f.interaction_id,
            tenant_id: f.tenant_id,
            source_platform: f.source_platform,
            state: f.state,
            direction: f.direction,
            occurred_at: micros(f.occurred_at),
            ingested_at: seg.ingested_at,
            queue_id: f.queue_id,
            agent_ids: f.agent_ids,
            address_hmacs,
            wrap_up_code: f.wrap_up_code,
            disposition: f.disposition,
            schema_version: f.schema_version,
            policy_id,
            expires_at: micros(expires),
            record: Default::default(),
            payload,
        };
        Ok(Decoded::Row(DecodedRow {
            file,
            key,
            row: Box::new(row),
            plain,
        }))
    }
}
