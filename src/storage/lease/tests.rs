//! The lease file format. The lease's behaviour on every backend is in the storage contract
//! (`src/storage/contract.rs`).

use super::*;

fn record() -> LeaseRecord {
    let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    LeaseRecord {
        token: 42,
        holder: "batch 20260101T000000Z-0000002a".into(),
        host: "pod-7".into(),
        pid: 4242,
        acquired_at: t("2026-01-01T00:00:00Z"),
        expires_at: t("2026-01-01T00:01:00Z"),
        released: false,
    }
}

#[test]
fn the_lease_format_is_frozen_and_checked_on_read() {
    let bytes = record().encode();
    crate::format::golden("lease-v1.json", &bytes);
    let back = LeaseRecord::decode(&bytes).unwrap();
    assert_eq!(
        (back.token, back.expires_at, back.released),
        (42, record().expires_at, false)
    );
    let text = String::from_utf8(bytes).unwrap();
    let newer = text.replace(r#""version": "1""#, r#""version": "2""#);
    assert!(matches!(
        LeaseRecord::decode(newer.as_bytes()),
        Err(crate::format::FormatError::UnknownVersion { .. })
    ));
    let other = text.replace(FORMAT, "holdfast.lock");
    assert!(matches!(
        LeaseRecord::decode(other.as_bytes()),
        Err(crate::format::FormatError::WrongFormat { .. })
    ));
    // the unversioned layout of before (a number, not a version tag) is refused
    let old = text.replace(r#""version": "1""#, r#""version": 1"#);
    assert!(LeaseRecord::decode(old.as_bytes()).is_err());
}

#[test]
fn an_unknown_version_is_held_until_one_expiry_after_it_was_written() {
    let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .unwrap()
        .to_utc();
    let l = Latest {
        token: 3,
        record: None,
        written: now,
    };
    assert!(matches!(l.standing(now), Standing::Held(_)));
    assert!(matches!(
        l.standing(now + chrono_expiry()),
        Standing::TakeOver
    ));
}
