//! `custody.json`: what an export holds and where it came from, and its check. It names the
//! store (its signing key's fingerprint), the signed head and every manifest version the
//! export read, the selection, who ran it and for which case, the audit entry that authorised
//! it, and per file its SHA-256, size and row count and per row the `record_hash` it carries.
//! It is written last, renamed into place once everything it names is synced; the audit
//! entry that closes the export records its SHA-256, so the trail and the export vouch for
//! each other.

use super::files::{self, Modes};
use super::write::DataFile;
use serde::{Deserialize, Serialize};
use std::io::{BufWriter, Read, Write};
use std::path::Path;

pub const FILE: &str = "custody.json";
pub const FORMAT: &str = "holdfast.custody";
pub const VERSION: &str = "1";

/// One committed manifest version the export read.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestRead {
    pub partition: String,
    pub sequence: u64,
    pub sha256: String,
}

/// A position in a chain (the store head, an audit entry).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Position {
    pub sequence: u64,
    pub sha256: String,
}

/// How the rows were chosen, as given and as run.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Selection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(rename = "where", skip_serializing_if = "Option::is_none")]
    pub predicate: Option<String>,
    /// A `--file` query (bound): the rows whose event ids it returns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    /// The statement that ran.
    pub statement: String,
}

/// Everything but the files (written first; the files follow it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub format: String,
    pub version: String,
    pub holdfast_version: String,
    pub export_id: String,
    pub target: String,
    pub decrypted: bool,
    /// The store's identity: its head-signing key's fingerprint.
    pub store_id: String,
    pub store_url: String,
    pub actor: String,
    pub os_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    pub started_at: String,
    pub completed_at: String,
    pub selection: Selection,
    /// The newest signed head when the export started (`None`: a store without one).
    pub store_head: Option<Position>,
    pub manifests: Vec<ManifestRead>,
    /// The audit entry written before any row was read (`export.started`).
    pub authorised_by: Position,
    pub totals: Totals,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub files: u64,
    pub rows: u64,
    pub bytes: u64,
}

/// A file the export holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    pub path: String,
    /// `data` (Parquet) or `script` (load scripts, schemas).
    pub kind: String,
    pub bytes: u64,
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_hashes: Option<Vec<String>>,
}

/// The whole record, as read back.
#[derive(Debug, Clone, Deserialize)]
pub struct Custody {
    #[serde(flatten)]
    pub header: Header,
    pub files: Vec<Entry>,
}

/// A script file already written (path relative to the export, hash, size).
#[derive(Debug, Clone)]
pub(super) struct Script {
    pub(super) path: String,
    pub(super) sha256: String,
    pub(super) bytes: u64,
}

/// Writes the record to `custody.json.tmp` (synced) and returns its SHA-256; the caller
/// renames it into place once the audit trail holds that hash. The row hashes stream from
/// the spool files, a file's worth of JSON at a time.
pub(super) fn write_pending(
    out: &Path,
    header: &Header,
    data: &[DataFile],
    scripts: &[Script],
    modes: Modes,
) -> std::io::Result<String> {
    let path = out.join(format!("{FILE}.tmp"));
    let file = files::HashingFile::create(path, modes)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let head = serde_json::to_string_pretty(header).map_err(std::io::Error::other)?;
    // the header object, left open for the files
    let head = head
        .trim_end()
        .strip_suffix('}')
        .unwrap_or(&head)
        .trim_end();
    write!(w, "{head},\n  \"files\": [")?;
    let mut first = true;
    let mut sep = |w: &mut BufWriter<files::HashingFile>| -> std::io::Result<()> {
        let s = if first { "\n    " } else { ",\n    " };
        first = false;
        w.write_all(s.as_bytes())
    };
    for d in data {
        sep(&mut w)?;
        write!(
            w,
            "{{\"path\": {}, \"kind\": \"data\", \"bytes\": {}, \"sha256\": \"{}\", \"rows\": {}, \"record_hashes\": [",
            serde_json::to_string(&d.path).map_err(std::io::Error::other)?,
            d.bytes,
            d.sha256,
            d.rows
        )?;
        let mut spool = std::io::BufReader::new(files::open(&d.hashes)?);
        let mut hash = [0u8; 64];
        for i in 0..d.rows {
            spool.read_exact(&mut hash)?;
            w.write_all(if i == 0 { b"\"" } else { b",\"" })?;
            w.write_all(&hash)?;
            w.write_all(b"\"")?;
        }
        w.write_all(b"]}")?;
    }
    for s in scripts {
        sep(&mut w)?;
        write!(
            w,
            "{{\"path\": {}, \"kind\": \"script\", \"bytes\": {}, \"sha256\": \"{}\"}}",
            serde_json::to_string(&s.path).map_err(std::io::Error::other)?,
            s.bytes,
            s.sha256
        )?;
    }
    w.write_all(b"\n  ]\n}\n")?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    let (sha256, _) = file.finish()?;
    Ok(sha256)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the test edits an export directory by hand
mod tests {
    use super::super::{columns, verify, write};
    use super::*;
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use std::sync::Arc;

    fn header() -> Header {
        Header {
            format: FORMAT.into(),
            version: VERSION.into(),
            holdfast_version: "0".into(),
            export_id: "exp-1".into(),
            target: "parquet".into(),
            decrypted: false,
            store_id: "ed25519:00".into(),
            store_url: "/nowhere".into(),
            actor: "a".into(),
            os_user: "a".into(),
            case: None,
            started_at: String::new(),
            completed_at: String::new(),
            selection: Selection::default(),
            store_head: None,
            manifests: Vec::new(),
            authorised_by: Position {
                sequence: 1,
                sha256: String::new(),
            },
            totals: Totals::default(),
        }
    }

    /// A batch of one string column named record_hash (what the writer and the check read).
    fn batch(hashes: &[String]) -> RecordBatch {
        let a: ArrayRef = Arc::new(StringArray::from(hashes.to_vec()));
        RecordBatch::try_from_iter([("record_hash", a)]).unwrap()
    }

    #[test]
    fn files_roll_at_the_target_size_and_the_record_lists_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x");
        let modes = Modes::for_export(true);
        files::prepare(&out, modes).unwrap();
        let schema = batch(&[]).schema();
        // a 1-byte target: every batch closes its file
        let mut w = write::Rolling::new(&out, modes, schema, 1).unwrap();
        let rows: Vec<Vec<String>> = (0..3u8)
            .map(|f| (0..=f).map(|r| hex::encode([f * 10 + r; 32])).collect())
            .collect();
        for r in &rows {
            let b = batch(r);
            w.write(&b, columns::record_hashes(&b).unwrap()).unwrap();
        }
        let data = w.finish().unwrap();
        assert_eq!(data.len(), 3);
        assert_eq!(data.iter().map(|d| d.rows).collect::<Vec<_>>(), [1, 2, 3]);
        let mut h = header();
        h.totals = Totals {
            files: 3,
            rows: 6,
            bytes: data.iter().map(|d| d.bytes).sum(),
        };
        write_pending(&out, &h, &data, &[], modes).unwrap();
        // the spool goes once the record is in place (as the export does)
        files::rename(&out.join("custody.json.tmp"), &out.join(FILE)).unwrap();
        for d in &data {
            files::remove(&d.hashes).unwrap();
        }
        files::remove_dir(&out.join(write::SPOOL_DIR)).unwrap();
        let (report, custody) = verify::check(&out).unwrap();
        assert!(report.ok(), "{:?}", report.problems);
        let c = custody.unwrap();
        assert_eq!(c.header, h);
        assert_eq!(c.files[2].record_hashes.as_ref().unwrap(), &rows[2]);
        // a listed hash that is not the row's
        let text = std::fs::read_to_string(out.join(FILE)).unwrap();
        std::fs::write(out.join(FILE), text.replace(&rows[1][1], &rows[0][0])).unwrap();
        let (report, _) = verify::check(&out).unwrap();
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains("row 1 carries record_hash")),
            "{:?}",
            report.problems
        );
    }
}
