//! `holdfast export verify DIR`: recomputes every hash and count of an export against its
//! custody record, and (given the store) finds the two audit entries that vouch for it.

use super::custody::{self, Custody, Entry};
use super::files;
use super::write::SPOOL_DIR;
use arrow::array::{Array, AsArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use std::collections::BTreeSet;
use std::path::Path;

/// What the check found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// Each mismatch, named (empty: the export is what its custody record says).
    pub problems: Vec<String>,
    /// No custody record: the export did not finish (or its record was removed).
    pub incomplete: bool,
    pub custody_sha256: Option<String>,
    pub export_id: Option<String>,
    pub files: u64,
    pub rows: u64,
    /// Whether the audit trail was checked, and what it said.
    pub audit: Option<Vec<String>>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && !self.incomplete
    }
}

/// Checks the directory against its custody record.
pub fn check(dir: &Path) -> Result<(Report, Option<Custody>), std::io::Error> {
    let mut r = Report::default();
    let path = dir.join(custody::FILE);
    if !path.exists() {
        r.incomplete = true;
        r.problems.push(format!(
            "incomplete: no {} (the export did not finish, or its custody record was removed)",
            custody::FILE
        ));
        return Ok((r, None));
    }
    let bytes = files::read(&path)?;
    r.custody_sha256 = Some(crate::lake::manifest::sha256_hex(&bytes));
    let c: Custody = match serde_json::from_slice(&bytes) {
        Ok(c) => c,
        Err(e) => {
            r.problems
                .push(format!("{} is not a custody record: {e}", custody::FILE));
            return Ok((r, None));
        }
    };
    if c.header.format != custody::FORMAT || c.header.version != custody::VERSION {
        r.problems.push(format!(
            "{}: format {} version {} is not {} version {}",
            custody::FILE,
            c.header.format,
            c.header.version,
            custody::FORMAT,
            custody::VERSION
        ));
    }
    r.export_id = Some(c.header.export_id.clone());
    let listed: BTreeSet<&str> = c.files.iter().map(|e| e.path.as_str()).collect();
    for name in files::list(dir)? {
        if name != custody::FILE && !listed.contains(name.as_str()) {
            r.problems
                .push(format!("{name}: not in the custody record (added)"));
        }
    }
    let (mut rows, mut bytes_total, mut data_files) = (0, 0, 0);
    for e in &c.files {
        check_file(dir, e, &mut r);
        if e.kind == "data" {
            data_files += 1;
            rows += e.rows.unwrap_or(0);
            bytes_total += e.bytes;
        }
    }
    let t = &c.header.totals;
    if (t.files, t.rows, t.bytes) != (data_files, rows, bytes_total) {
        r.problems.push(format!(
            "totals say {} files, {} rows, {} bytes; the files listed add up to {data_files}, {rows}, {bytes_total}",
            t.files, t.rows, t.bytes
        ));
    }
    Ok((r, Some(c)))
}

fn check_file(dir: &Path, e: &Entry, r: &mut Report) {
    let path = dir.join(&e.path);
    if e.path.split('/').any(|p| p == ".." || p.is_empty()) || e.path.starts_with(SPOOL_DIR) {
        r.problems
            .push(format!("{}: not a path an export writes", e.path));
        return;
    }
    let (sha256, bytes) = match files::hash_file(&path) {
        Ok(h) => h,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            r.problems.push(format!("{}: missing (removed)", e.path));
            return;
        }
        Err(err) => {
            r.problems
                .push(format!("{}: cannot be read: {err}", e.path));
            return;
        }
    };
    r.files += 1;
    if bytes != e.bytes {
        r.problems.push(format!(
            "{}: {bytes} bytes, the custody record says {}",
            e.path, e.bytes
        ));
    }
    if sha256 != e.sha256 {
        r.problems.push(format!(
            "{}: SHA-256 {sha256}, the custody record says {} (changed)",
            e.path, e.sha256
        ));
    }
    if e.kind == "data" {
        match rows_of(&path) {
            Ok((hashes, bad_records)) => compare_rows(e, &hashes, bad_records, r),
            Err(err) => r
                .problems
                .push(format!("{}: not readable as Parquet: {err}", e.path)),
        }
    }
}

fn compare_rows(e: &Entry, hashes: &[String], bad_records: u64, r: &mut Report) {
    r.rows += hashes.len() as u64;
    let n = hashes.len() as u64;
    if Some(n) != e.rows {
        r.problems.push(format!(
            "{}: {n} rows, the custody record says {}",
            e.path,
            e.rows.unwrap_or(0)
        ));
    }
    let listed = e.record_hashes.as_deref().unwrap_or_default();
    if let Some(i) = (0..hashes.len().min(listed.len())).find(|&i| hashes[i] != listed[i]) {
        r.problems.push(format!(
            "{}: row {i} carries record_hash {}, the custody record lists {}",
            e.path, hashes[i], listed[i]
        ));
    } else if listed.len() != hashes.len() {
        r.problems.push(format!(
            "{}: the custody record lists {} record hashes for {} rows",
            e.path,
            listed.len(),
            hashes.len()
        ));
    }
    if bad_records > 0 {
        r.problems.push(format!(
            "{}: {bad_records} row(s) whose record_json does not hash to their record_hash",
            e.path
        ));
    }
}

/// A data file's `record_hash` values in order, and how many rows carry a `record_json`
/// whose SHA-256 is not their `record_hash`.
fn rows_of(path: &Path) -> Result<(Vec<String>, u64), Box<dyn std::error::Error>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(files::open(path)?)?;
    let schema = builder.parquet_schema();
    let wanted: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| matches!(schema.column(i).name(), "record_hash" | "record_json"))
        .collect();
    let mask = ProjectionMask::leaves(schema, wanted);
    let reader = builder.with_projection(mask).build()?;
    let (mut hashes, mut bad) = (Vec::new(), 0);
    for b in reader {
        let b = b?;
        let h = b
            .column_by_name("record_hash")
            .ok_or("no record_hash column")?
            .as_string::<i32>();
        let json = b
            .column_by_name("record_json")
            .map(|j| j.as_string::<i32>());
        for i in 0..b.num_rows() {
            let hash = if h.is_null(i) { "" } else { h.value(i) };
            if let Some(j) = json
                && crate::lake::manifest::sha256_hex(j.value(i).as_bytes()) != hash
            {
                bad += 1;
            }
            hashes.push(hash.to_string());
        }
    }
    Ok((hashes, bad))
}
