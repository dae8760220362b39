use super::*;
use crate::crypto::kms::WrappedKey;
use crate::lake::manifest::FileEncryption;

fn entry() -> DataFileEntry {
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    DataFileEntry {
        path: "lake/x.parquet".into(),
        sha256: String::new(),
        size_bytes: 0,
        record_count: 2,
        min_occurred_at: t("2025-10-01T00:00:00Z"),
        max_occurred_at: t("2025-10-01T05:00:00Z"),
        earliest_expiry: t("2031-10-01T00:00:00Z"),
        latest_expiry: t("2031-10-01T05:00:00Z"),
        tenant_ids: vec!["bank".into(), "other".into()],
        policy_ids: vec!["FINRA_4511_6Y".into()],
        encryption: FileEncryption {
            algorithm: String::new(),
            compression: String::new(),
            aad: String::new(),
            dek_id: String::new(),
            wrapped_dek: WrappedKey {
                kek_id: String::new(),
                kek_version: 1,
                ciphertext: vec![],
            },
        },
        batch_id: "b".into(),
        added_at: t("2025-10-02T00:00:00Z"),
        interactions: None,
        object_version: None,
    }
}

fn summary(f: &DataFileEntry) -> ColumnSummary {
    ColumnSummary {
        records: f.record_count,
        tenant_ids: f.tenant_ids.iter().cloned().collect(),
        policy_ids: f.policy_ids.iter().cloned().collect(),
        min_occurred_at: Some(f.min_occurred_at),
        max_occurred_at: Some(f.max_occurred_at),
        earliest_expiry: Some(f.earliest_expiry),
        latest_expiry: Some(f.latest_expiry),
    }
}

/// A manifest whose metadata was rewritten (and re-hashed, and the head re-signed by the
/// keyring's holder) still disagrees with the file's own columns.
#[test]
fn manifest_metadata_is_checked_against_the_file() {
    let f = entry();
    assert!(metadata_problems(&f, &summary(&f)).is_empty());
    let mut rewritten = f.clone();
    rewritten.tenant_ids = vec!["other".into()];
    let p = metadata_problems(&rewritten, &summary(&f));
    assert!(p.len() == 1 && p[0].contains("tenant_ids"), "{p:?}");
    let mut later = f.clone();
    later.latest_expiry += chrono::Duration::days(1);
    later.min_occurred_at += chrono::Duration::hours(1);
    later.policy_ids = vec!["SEC_17A4_6Y".into()];
    later.record_count = 1;
    let p = metadata_problems(&later, &summary(&f)).join("\n");
    for what in [
        "latest_expiry",
        "min_occurred_at",
        "policy_ids",
        "holds 2 records",
    ] {
        assert!(p.contains(what), "{what}: {p}");
    }
}
