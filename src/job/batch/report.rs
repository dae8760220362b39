//! What a batch reports.

use std::collections::BTreeMap;

#[derive(Debug, Default, serde::Serialize)]
pub struct BatchReport {
    pub batch_id: String,
    pub segments: u64,
    pub segments_waiting: u64,
    pub lines: u64,
    pub blank_lines: u64,
    pub stored: u64,
    pub duplicates_in_batch: u64,
    pub already_stored: u64,
    pub quarantined: u64,
    /// Valid events whose retention had ended before they arrived: quarantined
    /// (`retention.expired_on_arrival`, also audited), for a person to decide.
    pub expired_on_arrival: u64,
    /// Quarantine entries replayed in this batch that are now stored (and left quarantine).
    pub replayed_out: u64,
    pub partitions: u64,
    pub files: u64,
    pub bytes_written: u64,
    /// Uncommitted data files of an interrupted batch or sweep (named by its intent record),
    /// removed and audited (`batch.leftover_removed`).
    pub leftovers_removed: u64,
    /// Such files kept because they have a lock record (only the audited sweep deletes those).
    pub leftovers_locked: u64,
    /// Committed files whose storage lock a killed batch had not set yet, set now.
    pub locks_repaired: u64,
    /// New files holding records an active legal hold covers (pinned at once).
    pub held_new_files: u64,
    pub staging_removed: u64,
    pub lease_taken_over: bool,
    /// Landing segments that do not parse or fail authentication: moved to `failed/` whole
    /// (audited), the rest of the landing zone went on.
    pub segments_isolated: u64,
    /// Where each went (`failed/<segment-id>.seg`).
    pub isolated: Vec<String>,
    /// Partitions whose latest manifest cannot be read (`verify` says why): nothing is written
    /// to them until repaired.
    pub damaged_partitions: Vec<String>,
    /// Events for those partitions, left in landing with their segments.
    pub events_blocked: u64,
    pub segments_kept: u64,
    pub stored_by_type: BTreeMap<String, u64>,
    pub stored_by_policy: BTreeMap<String, u64>,
    pub quarantined_by_code: BTreeMap<String, u64>,
    #[serde(skip)]
    pub expired_ids: serde_json::Value,
    /// Calls to the key service (wraps: one per data file and per quarantine batch).
    pub kms: crate::crypto::kms::KmsCalls,
    /// What the operator should act on (a KEK past its cryptoperiod).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Tenants whose own key (BYOK) was unavailable: their events and segments stay in
    /// landing, whole, until it is back.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tenants_waiting: BTreeMap<String, TenantWaiting>,
}

/// A tenant whose own key was unavailable to a batch.
#[derive(Debug, Default, serde::Serialize)]
pub struct TenantWaiting {
    /// What the key service answered.
    pub reason: String,
    /// Its events read in this batch (a segment sealed under its key is not read at all).
    pub events: u64,
    /// Landing segments kept for it (indexes into the batch's picked list).
    #[serde(serialize_with = "count")]
    pub segments: std::collections::BTreeSet<usize>,
}

fn count<S: serde::Serializer>(
    s: &std::collections::BTreeSet<usize>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    ser.serialize_u64(s.len() as u64)
}

impl std::fmt::Display for BatchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "batch {}: {} segment(s), {} line(s)",
            self.batch_id, self.segments, self.lines
        )?;
        for w in &self.warnings {
            writeln!(f, "  warning      {w}")?;
        }
        writeln!(
            f,
            "  stored       {} event(s) in {} file(s), {} partition(s), {} bytes",
            self.stored, self.files, self.partitions, self.bytes_written
        )?;
        for (t, n) in &self.stored_by_type {
            writeln!(f, "                 {t}: {n}")?;
        }
        if self.expired_on_arrival > 0 {
            writeln!(
                f,
                "  expired      {} event(s) arrived after their retention ended: quarantined (retention.expired_on_arrival, audited)",
                self.expired_on_arrival
            )?;
        }
        writeln!(
            f,
            "  duplicates   {} ({} within this batch, {} already stored)",
            self.duplicates_in_batch + self.already_stored,
            self.duplicates_in_batch,
            self.already_stored
        )?;
        if self.replayed_out > 0 {
            writeln!(
                f,
                "  replayed     {} quarantine entr(ies) now stored and removed from quarantine",
                self.replayed_out
            )?;
        }
        write!(f, "  quarantined  {}", self.quarantined)?;
        if self.quarantined > 0 {
            let codes: Vec<String> = self
                .quarantined_by_code
                .iter()
                .map(|(c, n)| format!("{c}: {n}"))
                .collect();
            write!(f, " ({}); see `holdfast quarantine list`", codes.join(", "))?;
        }
        if self.leftovers_removed + self.staging_removed > 0 || self.lease_taken_over {
            write!(
                f,
                "\n  recovered    {} leftover file(s) and {} staging file(s) of an interrupted batch removed",
                self.leftovers_removed, self.staging_removed
            )?;
        }
        self.fmt_held_back(f)
    }
}

impl BatchReport {
    /// What this batch left for later: isolated, blocked and waiting segments.
    fn fmt_held_back(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.segments_isolated > 0 {
            write!(
                f,
                "\n  isolated     {} damaged landing segment(s) moved aside, nothing read from them: {} (audited)",
                self.segments_isolated,
                self.isolated.join(", ")
            )?;
        }
        if self.events_blocked > 0 {
            write!(
                f,
                "\n  blocked      {} event(s) for partition(s) whose latest manifest is damaged ({}); {} segment(s) stay in landing; run `holdfast verify`",
                self.events_blocked,
                self.damaged_partitions.join(", "),
                self.segments_kept
            )?;
        }
        for (t, w) in &self.tenants_waiting {
            write!(
                f,
                "\n  key waiting  tenant {t}: {} event(s) in {} segment(s) stay in landing until its own key is back ({})",
                w.events,
                w.segments.len(),
                w.reason
            )?;
        }
        if self.segments_waiting > 0 {
            write!(
                f,
                "\n  waiting      {} segment(s) left for the next batch (batch.max_input_mb)",
                self.segments_waiting
            )?;
        }
        Ok(())
    }
}
