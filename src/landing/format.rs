//! The landing zone's persisted formats. Frozen: a change is a new version with a conversion
//! into the runtime type; a reader refuses another format or a version it does not know.
//!
//! - Landing segment (`landing/<id>.seg`): the magic `HFSEG001`, a u32 big-endian header
//!   length, the header (compact JSON, format `holdfast.landing`, version 1), then the sealed
//!   blocks. Golden file of the bytes before the blocks: `fixtures/formats/landing-header-v1.bin`.
//! - Quarantine entry (`quarantine/<id>.json`): format `holdfast.quarantine`, version 1.
//!   Golden file: `fixtures/formats/quarantine-entry-v1.json`.

use super::SegmentHeader;
use super::quarantine::{Entry, TruncatedLine};
use crate::crypto::kms::{WrappedKeyV1, b64};
use crate::format::FormatError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub const SEGMENT_FORMAT: &str = "holdfast.landing";
pub const QUARANTINE_FORMAT: &str = "holdfast.quarantine";
const VERSIONS: &[&str] = &["1"];
/// The first bytes of every landing segment.
pub(super) const MAGIC: &[u8; 8] = b"HFSEG001";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum HeaderFile {
    #[serde(rename = "1")]
    V1(HeaderV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderV1 {
    format: String,
    segment_id: String,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    arrived_at: DateTime<Utc>,
    line_count: u64,
    raw_bytes: u64,
    block_count: u32,
    algorithm: String,
    compression: String,
    dek_id: String,
    wrapped_dek: WrappedKeyV1,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replay_of: Vec<String>,
}

/// `MAGIC | u32 BE length | header JSON`: everything before the first block.
pub(super) fn encode_header(h: &SegmentHeader) -> Vec<u8> {
    let json = serde_json::to_vec(&HeaderFile::V1(HeaderV1 {
        format: SEGMENT_FORMAT.into(),
        segment_id: h.segment_id.clone(),
        source: h.source.clone(),
        tenant: h.tenant.clone(),
        arrived_at: h.arrived_at,
        line_count: h.line_count,
        raw_bytes: h.raw_bytes,
        block_count: h.block_count,
        algorithm: h.algorithm.clone(),
        compression: h.compression.clone(),
        dek_id: h.dek_id.clone(),
        wrapped_dek: (&h.wrapped_dek).into(),
        replay_of: h.replay_of.clone(),
    }))
    .expect("header serializes");
    let mut out = Vec::with_capacity(12 + json.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(&json);
    out
}

/// The header JSON (the bytes after the length).
pub(super) fn decode_header(json: &[u8]) -> Result<SegmentHeader, FormatError> {
    let HeaderFile::V1(v) = crate::format::decode(json, SEGMENT_FORMAT, VERSIONS)?;
    Ok(SegmentHeader {
        segment_id: v.segment_id,
        source: v.source,
        tenant: v.tenant,
        arrived_at: v.arrived_at,
        line_count: v.line_count,
        raw_bytes: v.raw_bytes,
        block_count: v.block_count,
        algorithm: v.algorithm,
        compression: v.compression,
        dek_id: v.dek_id,
        wrapped_dek: v.wrapped_dek.into(),
        replay_of: v.replay_of,
    })
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "version")]
enum QuarantineFile {
    #[serde(rename = "1")]
    V1(QuarantineV1),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineV1 {
    format: String,
    id: String,
    source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tenant: Option<String>,
    arrived_at: DateTime<Utc>,
    quarantined_at: DateTime<Utc>,
    batch_id: String,
    segment_id: String,
    line_no: u64,
    error_code: String,
    error_path: String,
    schema_version: String,
    attempts: u32,
    original_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    truncated: Option<TruncatedV1>,
    dek_id: String,
    wrapped_dek: WrappedKeyV1,
    #[serde(with = "b64")]
    sealed: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TruncatedV1 {
    length: u64,
    sha256: String,
}

pub(super) fn encode_entry(e: &Entry) -> Vec<u8> {
    crate::format::encode(&QuarantineFile::V1(QuarantineV1 {
        format: QUARANTINE_FORMAT.into(),
        id: e.id.clone(),
        source: e.source.clone(),
        tenant: e.tenant.clone(),
        arrived_at: e.arrived_at,
        quarantined_at: e.quarantined_at,
        batch_id: e.batch_id.clone(),
        segment_id: e.segment_id.clone(),
        line_no: e.line_no,
        error_code: e.error_code.clone(),
        error_path: e.error_path.clone(),
        schema_version: e.schema_version.clone(),
        attempts: e.attempts,
        original_bytes: e.original_bytes,
        truncated: e.truncated.as_ref().map(|t| TruncatedV1 {
            length: t.length,
            sha256: t.sha256.clone(),
        }),
        dek_id: e.dek_id.clone(),
        wrapped_dek: (&e.wrapped_dek).into(),
        sealed: e.sealed.clone(),
    }))
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<Entry, FormatError> {
    let QuarantineFile::V1(v) = crate::format::decode(bytes, QUARANTINE_FORMAT, VERSIONS)?;
    Ok(Entry {
        id: v.id,
        source: v.source,
        tenant: v.tenant,
        arrived_at: v.arrived_at,
        quarantined_at: v.quarantined_at,
        batch_id: v.batch_id,
        segment_id: v.segment_id,
        line_no: v.line_no,
        error_code: v.error_code,
        error_path: v.error_path,
        schema_version: v.schema_version,
        attempts: v.attempts,
        original_bytes: v.original_bytes,
        truncated: v.truncated.map(|t| TruncatedLine {
            length: t.length,
            sha256: t.sha256,
        }),
        dek_id: v.dek_id,
        wrapped_dek: v.wrapped_dek.into(),
        sealed: v.sealed,
    })
}

#[cfg(test)]
mod tests;
