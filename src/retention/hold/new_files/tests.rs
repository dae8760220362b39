use super::super::{DateRange, Scope, Status};
use super::*;
use crate::lake::datafile::Row;
use crate::lake::manifest::FileEncryption;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn hold(id: &str, placed: &str, tenant: Option<&str>, scope: Scope) -> Hold {
    Hold {
        hold_id: id.into(),
        tenant_id: tenant.map(str::to_string),
        scope,
        retention_override: None,
        placed_by: "a".into(),
        placed_at: at(placed),
        status: Status::Active,
        lapses_at: None,
        files: vec![],
        covered: Default::default(),
    }
}

fn queues(q: &[&str]) -> Scope {
    Scope {
        queue_ids: q.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn row(tenant: &str, interaction: &str, queue: &str, occurred: &str) -> Row {
    Row {
        event_id: format!("e-{interaction}"),
        interaction_id: interaction.into(),
        tenant_id: tenant.into(),
        source_platform: "genesys".into(),
        state: "COMPLETED".into(),
        direction: None,
        occurred_at: at(occurred).timestamp_micros(),
        ingested_at: 0,
        queue_id: Some(queue.into()),
        agent_ids: vec!["agent-1".into()],
        address_hmacs: vec![],
        wrap_up_code: None,
        disposition: None,
        schema_version: "1.0".into(),
        policy_id: "p".into(),
        expires_at: at("2040-01-01T00:00:00Z").timestamp_micros(),
        record_hash: [0; 32],
        record: Default::default(),
        payload: vec![],
    }
}

fn entry(path: &str, rows: &[Row]) -> DataFileEntry {
    let ts = crate::clock::from_micros;
    let mut tenants: Vec<String> = rows.iter().map(|r| r.tenant_id.clone()).collect();
    tenants.sort();
    tenants.dedup();
    DataFileEntry {
        path: path.into(),
        sha256: String::new(),
        size_bytes: 0,
        record_count: rows.len() as u64,
        min_occurred_at: ts(rows.iter().map(|r| r.occurred_at).min().unwrap()),
        max_occurred_at: ts(rows.iter().map(|r| r.occurred_at).max().unwrap()),
        earliest_expiry: ts(0),
        latest_expiry: ts(0),
        tenant_ids: tenants,
        policy_ids: vec!["p".into()],
        encryption: FileEncryption {
            algorithm: String::new(),
            compression: String::new(),
            aad: String::new(),
            dek_id: String::new(),
            wrapped_dek: crate::crypto::kms::WrappedKey {
                kek_id: String::new(),
                kek_version: 1,
                ciphertext: vec![],
            },
        },
        batch_id: String::new(),
        added_at: ts(0),
        interactions: None,
        object_version: None,
    }
}

fn coverage(rows: &[Row], snapshot: &HoldSnapshot) -> Coverage {
    let mut c = Coverage::default();
    for r in rows {
        c.add(&r.index(), snapshot);
    }
    c
}

const NOW: &str = "2026-01-01T00:00:00Z";

/// A hold known when the batch started is counted row by row: the new file is pinned with
/// the exact number of records it covers, from the rows alone.
#[test]
fn a_known_hold_pins_with_the_count_of_the_rows_it_covers() {
    let h = hold("H", "2025-01-01T00:00:00Z", Some("t1"), queues(&["q-3"]));
    let snapshot = HoldSnapshot::of(std::slice::from_ref(&h), at(NOW));
    let rows = [
        row("t1", "i1", "q-3", "2025-10-01T10:00:00Z"),
        row("t1", "i2", "q-1", "2025-10-01T11:00:00Z"),
        row("t1", "i3", "q-3", "2025-10-01T12:00:00Z"),
        row("t2", "i4", "q-3", "2025-10-01T12:00:00Z"),
    ];
    let (held, free) = (entry("f1", &rows), entry("f2", &rows[1..2]));
    let (c1, c2) = (coverage(&rows, &snapshot), coverage(&rows[1..2], &snapshot));
    let files = [
        NewFile {
            entry: &held,
            coverage: &c1,
        },
        NewFile {
            entry: &free,
            coverage: &c2,
        },
    ];
    let got = pins(std::slice::from_ref(&h), &snapshot, &files, at(NOW));
    assert_eq!(
        got,
        [Pin {
            hold: 0,
            path: "f1".into(),
            covered: Some(2)
        }]
    );
    // a file the hold already lists, or a hold no longer protecting, pins nothing
    let mut listed = h.clone();
    listed.files.push("f1".into());
    assert!(pins(&[listed], &snapshot, &files, at(NOW)).is_empty());
    let mut lapsed = h.clone();
    lapsed.status = Status::Lapsed { at: at(NOW) };
    assert!(pins(&[lapsed], &snapshot, &files, at(NOW)).is_empty());
}

/// A hold placed while the batch ran (not in the snapshot, or re-placed under the same id)
/// is judged from the file's tenants, time range and ids, with no count.
#[test]
fn a_hold_placed_meanwhile_is_judged_from_the_files_ids() {
    let empty = HoldSnapshot::default();
    let rows = [
        row("t1", "i1", "q-3", "2025-10-01T10:00:00Z"),
        row("t1", "i2", "q-1", "2025-10-01T11:00:00Z"),
    ];
    let e = entry("f1", &rows);
    let c = coverage(&rows, &empty);
    let files = [NewFile {
        entry: &e,
        coverage: &c,
    }];
    let judge = |h: Hold| pins(&[h], &empty, &files, at(NOW));
    let by_interaction = Scope {
        interaction_ids: vec!["i2".into()],
        ..Default::default()
    };
    assert_eq!(
        judge(hold("N", NOW, None, by_interaction)),
        [Pin {
            hold: 0,
            path: "f1".into(),
            covered: None
        }]
    );
    assert_eq!(judge(hold("N", NOW, None, queues(&["q-1"]))).len(), 1);
    assert_eq!(judge(hold("N", NOW, None, Scope::default())).len(), 1);
    assert!(judge(hold("N", NOW, None, queues(&["q-9"]))).is_empty());
    assert!(judge(hold("N", NOW, Some("t2"), Scope::default())).is_empty());
    let later = Scope {
        date_range: Some(DateRange {
            start: at("2025-11-01T00:00:00Z"),
            end: at("2025-11-30T00:00:00Z"),
        }),
        ..Default::default()
    };
    assert!(judge(hold("N", NOW, None, later)).is_empty());
    // the same id placed again after the snapshot is another hold: judged, not counted
    let old = hold("H", "2025-01-01T00:00:00Z", None, queues(&["q-9"]));
    let snapshot = HoldSnapshot::of(&[old], at(NOW));
    let c = coverage(&rows, &snapshot);
    let files = [NewFile {
        entry: &e,
        coverage: &c,
    }];
    let again = hold("H", "2025-12-01T00:00:00Z", None, queues(&["q-3"]));
    assert_eq!(pins(&[again], &snapshot, &files, at(NOW))[0].covered, None);
}
