use super::*;
use crate::crypto::kms::WrappedKey;
use crate::format::{altered, golden, ts};

fn wrapped() -> WrappedKey {
    WrappedKey {
        kek_id: "kek-0011223344556677".into(),
        kek_version: 1,
        ciphertext: vec![7; 8],
    }
}

fn header() -> SegmentHeader {
    SegmentHeader {
        segment_id: "20260102T030405.123456Z-000001-0a1b2c3d".into(),
        source: "genesys".into(),
        tenant: Some("tenant-1".into()),
        arrived_at: ts("2026-01-02T03:04:05.123456Z"),
        line_count: 3,
        raw_bytes: 999,
        block_count: 1,
        algorithm: "AES-256-GCM".into(),
        compression: "zstd".into(),
        dek_id: "dek-0123".into(),
        wrapped_dek: wrapped(),
        replay_of: vec!["q-0123456789abcdef01234567".into()],
    }
}

fn entry() -> Entry {
    Entry {
        id: "q-0123456789abcdef01234567".into(),
        source: "genesys".into(),
        tenant: None,
        arrived_at: ts("2026-01-02T03:04:05.123456Z"),
        quarantined_at: ts("2026-01-02T03:05:00Z"),
        batch_id: "20260102T030500Z-0a1b2c3d".into(),
        segment_id: "20260102T030405.123456Z-000001-0a1b2c3d".into(),
        line_no: 2,
        error_code: "schema.required".into(),
        error_path: "/eventId".into(),
        schema_version: "2.1.0".into(),
        attempts: 1,
        original_bytes: 70_000_000,
        truncated: Some(TruncatedLine {
            length: 70_000_000,
            sha256: "04".repeat(32),
        }),
        dek_id: "dek-0456".into(),
        wrapped_dek: wrapped(),
        sealed: vec![1, 2, 3],
    }
}

#[test]
fn landing_header_version_1_is_frozen_and_reads_back() {
    let bytes = encode_header(&header());
    golden("landing-header-v1.bin", &bytes);
    assert_eq!(&bytes[..8], MAGIC);
    let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    assert_eq!(bytes.len(), 12 + len);
    let back = decode_header(&bytes[12..]).unwrap();
    assert_eq!(format!("{back:?}"), format!("{:?}", header()));
}

#[test]
fn landing_headers_of_other_formats_and_versions_are_refused() {
    let bytes = encode_header(&header());
    let json = &bytes[12..];
    let e = decode_header(&altered(json, "version", "2")).unwrap_err();
    assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
    let e = decode_header(&altered(json, "format", "holdfast.quarantine")).unwrap_err();
    assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
}

#[test]
fn quarantine_entry_version_1_is_frozen_and_reads_back() {
    let bytes = encode_entry(&entry());
    golden("quarantine-entry-v1.json", &bytes);
    let back = decode_entry(&bytes).unwrap();
    assert_eq!(format!("{back:?}"), format!("{:?}", entry()));
    let e = decode_entry(&altered(&bytes, "version", "2")).unwrap_err();
    assert!(matches!(e, FormatError::UnknownVersion { .. }), "{e}");
    let e = decode_entry(&altered(&bytes, "format", "holdfast.landing")).unwrap_err();
    assert!(matches!(e, FormatError::WrongFormat { .. }), "{e}");
}
