//! `holdfast validate`: a dry run of the current adapters and schema registry over everything
//! waiting in the landing zone and the quarantine. Reads and decrypts; writes nothing.

use super::{Context, JobError};
use crate::lake::layout;
use crate::landing::{Segment, quarantine};
use crate::schema::{self, Reject};
use crate::sources::SourceKind;
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Default, serde::Serialize)]
pub struct Tally {
    pub lines: u64,
    pub events: u64,
    pub would_store_by_type: BTreeMap<String, u64>,
    pub duplicate_event_ids: u64,
    pub would_quarantine: u64,
    pub would_quarantine_by_code: BTreeMap<String, u64>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ValidateReport {
    pub schema_version: Option<String>,
    pub landing_segments: u64,
    pub landing: Tally,
    pub quarantine_entries: u64,
    /// Quarantined lines run again: those now accepted would leave quarantine on replay.
    pub quarantine: Tally,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stored: u64 = self.would_store_by_type.values().sum();
        write!(
            f,
            "{} line(s): {} event(s) would be stored",
            self.lines, stored
        )?;
        if !self.would_store_by_type.is_empty() {
            let t: Vec<String> = self
                .would_store_by_type
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            write!(f, " ({})", t.join(", "))?;
        }
        if self.duplicate_event_ids > 0 {
            write!(f, ", {} repeated event id(s)", self.duplicate_event_ids)?;
        }
        write!(
            f,
            "; {} line(s) would be quarantined",
            self.would_quarantine
        )?;
        if !self.would_quarantine_by_code.is_empty() {
            let c: Vec<String> = self
                .would_quarantine_by_code
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            write!(f, " ({})", c.join(", "))?;
        }
        Ok(())
    }
}

impl std::fmt::Display for ValidateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(v) = &self.schema_version {
            writeln!(f, "every event taken as schema version {v}")?;
        }
        writeln!(
            f,
            "landing ({} segment(s)): {}",
            self.landing_segments, self.landing
        )?;
        write!(
            f,
            "quarantine ({} entr(ies)): {}",
            self.quarantine_entries, self.quarantine
        )
    }
}

/// The batch's dedupe key: (tenant, event id).
type EventKey = (String, String);
/// Events already counted.
type Seen = HashSet<EventKey>;

fn tally_line(
    t: &mut Tally,
    seen: &mut Seen,
    source: SourceKind,
    tenant: Option<&str>,
    line: &[u8],
    version: Option<&str>,
) {
    t.lines += 1;
    let result: Result<Vec<(EventKey, String)>, Reject> =
        source.decode(line, tenant).and_then(|events| {
            events
                .iter()
                .map(|d| {
                    schema::validator().check_as(&d.event, version).map(|c| {
                        let f = c.fields;
                        ((f.tenant_id, f.event_id), f.interaction_type)
                    })
                })
                .collect()
        });
    match result {
        Ok(events) => {
            for (id, kind) in events {
                t.events += 1;
                if !seen.insert(id) {
                    t.duplicate_event_ids += 1;
                    continue;
                }
                *t.would_store_by_type.entry(kind).or_default() += 1;
            }
        }
        Err(r) => {
            t.would_quarantine += 1;
            *t.would_quarantine_by_code.entry(r.code).or_default() += 1;
        }
    }
}

pub async fn validate(ctx: &Context, version: Option<&str>) -> Result<ValidateReport, JobError> {
    if let Some(v) = version.filter(|v| !schema::upcast::VERSIONS.contains(v)) {
        return Err(JobError::UnknownVersion(v.to_string()));
    }
    let mut report = ValidateReport {
        schema_version: version.map(str::to_string),
        ..Default::default()
    };
    let mut seen = Seen::new();
    for meta in ctx.store.list(layout::LANDING).await? {
        if layout::parse_landing_segment(&meta.location).is_none() {
            continue;
        }
        let bytes = ctx.store.get(&meta.location).await?;
        for seg in Segment::parse_object(&meta.location, bytes)? {
            report.landing_segments += 1;
            tally_segment(ctx, &mut report, &mut seen, &seg, version).await?;
        }
    }
    for e in quarantine::list(&ctx.store).await? {
        report.quarantine_entries += 1;
        let mut secret = quarantine::open(ctx.kms.as_ref(), &e).await?;
        let source = SourceKind::from_name(&e.source).unwrap_or(SourceKind::Auto);
        tally_line(
            &mut report.quarantine,
            &mut seen,
            source,
            e.tenant.as_deref(),
            &secret.original,
            version,
        );
        zeroize::Zeroize::zeroize(&mut secret.original);
    }
    Ok(report)
}

/// Tallies the lines of one landing segment.
async fn tally_segment(
    ctx: &Context,
    report: &mut ValidateReport,
    seen: &mut Seen,
    seg: &Segment,
    version: Option<&str>,
) -> Result<(), JobError> {
    let cipher = seg.unwrap_key(ctx.kms.as_ref()).await?;
    let source = SourceKind::from_name(&seg.header.source).unwrap_or(SourceKind::Auto);
    for b in 0..seg.block_count() {
        let mut data = seg.open_block(&cipher, b)?;
        for line in data
            .split(|c| *c == b'\n')
            .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
        {
            tally_line(
                &mut report.landing,
                seen,
                source,
                seg.header.tenant.as_deref(),
                line,
                version,
            );
        }
        zeroize::Zeroize::zeroize(&mut data);
    }
    Ok(())
}

/// [`validate`] for a caller who passed the decryption gate (purpose `Validate`): it decrypts
/// the landing zone and the quarantine, so the pass is recorded through the gate (`validate`,
/// with what it read).
pub async fn validate_opened(
    gate: &crate::access::gate::Opened,
    ctx: &Context,
    version: Option<&str>,
) -> crate::Result<ValidateReport> {
    let report = validate(ctx, version).await?;
    let event = crate::access::gate::Validated {
        landing_segments: report.landing_segments,
        quarantine_entries: report.quarantine_entries,
        schema_version: version.map(str::to_string),
    };
    gate.record(&event).await?;
    Ok(report)
}
